"""The two-way bridge against a real Argilla server: push, annotate over REST, pull.

30 real PandaLM pairs go up with the two judges' votes as (pre-filled) suggestions; three
annotator users replay PandaLM's own three human votes with their own API keys, deciding
"Response A / B" from what the server shows them; the pull must give back exactly PandaLM's
labels (the random display order undone), and agreement on the pulled votes must equal
agreement on the original ones.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata import ids
from prefdata.annotate import bridge as pa
from prefdata.quality.agreement import agreement
from prefdata.quality.sample import audit_sample, mislabel_rate
from prefdata.schema import validate
from tests.annotate.conftest import PandaLM
from tests.annotate.helpers import Running, my_queue, pull_table, push_report, respond, rest

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("argilla")]

ANNOTATORS = {"ann1": "annotator1", "ann2": "annotator2", "ann3": "annotator3"}


@pytest.fixture(scope="module")
def annotators(argilla_server: Running) -> dict[str, dict[str, Any]]:
    return {
        name: pa.add_user(name, workspaces=["argilla"], **argilla_server.auth)
        for name in ANNOTATORS
    }


@pytest.fixture(scope="module")
def pushed(
    argilla_server: Running, pandalm30: PandaLM, annotators: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return push_report(
        pandalm30.pairs,
        dataset="pandalm-30",
        annotators_per_item=3,
        judge_votes=pandalm30.judges,
        suggestions="prefill",
        rating=True,
        **argilla_server.auth,
    )


@pytest.fixture(scope="module")
def annotated(
    argilla_server: Running,
    pandalm30: PandaLM,
    annotators: dict[str, dict[str, Any]],
    pushed: dict[str, Any],
) -> dict[str, Any]:
    """Each annotator works through their queue and submits PandaLM's vote for each record."""
    canonical = {
        row["pair_id"]: ids.canonical_sides(row["chosen"], row["rejected"])
        for row in pandalm30.pairs.iter_rows(named=True)
    }
    vote = {
        (row["item_id"], row["annotator"]): row["label"]
        for row in pandalm30.human.iter_rows(named=True)
    }
    shown_orders: dict[str, str] = {}
    for user, info in annotators.items():
        with rest(argilla_server, info["api_key"]) as client:
            queue = my_queue(client, pushed["dataset_id"])
            assert len(queue) == 30  # nobody has answered yet; 3 per item are needed
            for record in queue:
                pid = record["external_id"]
                a, _ = canonical[pid]
                # What the annotator sees decides the shown label, not our metadata.
                order = "ab" if record["fields"]["response_a"] == a else "ba"
                shown_orders[pid] = order
                label = vote[(pid, ANNOTATORS[user])]
                shown = label if order == "ab" else {"a": "b", "b": "a"}.get(label, label)
                respond(
                    client,
                    record["id"],
                    {"label": shown, "rationale": f"{user} on {pid}", "strength": 3},
                )
            assert my_queue(client, pushed["dataset_id"]) == []
    return {"orders": shown_orders}


def test_push_creates_records_with_random_order_and_judge_suggestions(
    argilla_server: Running, pandalm30: PandaLM, pushed: dict[str, Any]
) -> None:
    assert pushed["records"] == 30 and pushed["created"] == 30 and pushed["updated"] == 0
    assert pushed["workspace"] == "argilla" and pushed["kind"] == "pairs"
    assert pushed["annotators_in_workspace"] >= 3  # ann1-3 (and those of earlier tests)
    with rest(argilla_server) as client:
        ds = client.get(f"/api/v1/datasets/{pushed['dataset_id']}").json()
        assert ds["distribution"] == {"strategy": "overlap", "min_submitted": 3}
        # The panel opens with the annotator's task, not the curator's instructions.
        assert ds["guidelines"].startswith(pa.guidelines("pairs"))
        assert ds["guidelines"].startswith("# Which response is better?")
        assert "prefdata" not in ds["guidelines"]
        questions = client.get(f"/api/v1/datasets/{pushed['dataset_id']}/questions").json()
        names = {q["name"]: q for q in questions["items"]}
        assert set(names) == {"label", "strength", "rationale"}
        assert [o["value"] for o in names["label"]["settings"]["options"]] == ["a", "b", "tie"]
        records = client.get(
            f"/api/v1/datasets/{pushed['dataset_id']}/records",
            params={"include": "suggestions", "limit": 100},
        ).json()["items"]
    assert len(records) == 30
    by_id = {r["external_id"]: r for r in records}
    assert set(by_id) == set(pandalm30.pairs["pair_id"].to_list())

    # The shown order is the stored one, both orders occur, and a re-push agrees.
    orders = Counter(r["metadata"]["order"] for r in records)
    assert set(orders) == {"ab", "ba"}
    for row in pandalm30.pairs.iter_rows(named=True):
        rec = by_id[row["pair_id"]]
        a, b = ids.canonical_sides(row["chosen"], row["rejected"])
        first, second = (a, b) if rec["metadata"]["order"] == "ab" else (b, a)
        assert (rec["fields"]["response_a"], rec["fields"]["response_b"]) == (first, second)
        assert rec["metadata"]["order"] == pa.shown_order(row["pair_id"])

    # Suggestions: the judges' strict plurality, shown-order label, score and agent.
    judges = pandalm30.judges.filter(pl.col("error").is_null())
    n_suggested = 0
    for pid, rec in by_id.items():
        votes = judges.filter(pl.col("item_id") == pid)
        tally = Counter(votes["label"].to_list())
        top = tally.most_common()
        if len(top) > 1 and top[0][1] == top[1][1]:
            assert rec["suggestions"] == [], pid  # judges split: no suggestion
            continue
        label = top[0][0]
        shown = (
            label if rec["metadata"]["order"] == "ab" else {"a": "b", "b": "a"}.get(label, label)
        )
        (sugg,) = rec["suggestions"]
        backers = sorted(set(votes.filter(pl.col("label") == label)["annotator"].to_list()))
        assert sugg["value"] == shown
        assert sugg["agent"] == " / ".join(backers)
        assert sugg["score"] == pytest.approx(top[0][1] / votes.height)
        assert sugg["type"] == "model"
        n_suggested += 1
    assert n_suggested == pushed["verdicts"] and n_suggested >= 15


def test_second_push_updates_instead_of_duplicating(
    argilla_server: Running, pandalm30: PandaLM, pushed: dict[str, Any]
) -> None:
    again = push_report(
        pandalm30.pairs,
        dataset="pandalm-30",
        annotators_per_item=3,
        judge_votes=pandalm30.judges,
        suggestions="prefill",
        rating=True,
        **argilla_server.auth,
    )
    assert again["dataset_id"] == pushed["dataset_id"]
    assert (again["created"], again["updated"]) == (0, 30)
    with rest(argilla_server) as client:
        page = client.get(
            f"/api/v1/datasets/{pushed['dataset_id']}/records", params={"limit": 1000}
        ).json()
    assert page["total"] == 30
    assert len({r["external_id"] for r in page["items"]}) == 30


def test_pull_returns_what_annotators_submitted_in_canonical_terms(
    argilla_server: Running, pandalm30: PandaLM, annotated: dict[str, Any]
) -> None:
    pulled, report = pull_table("pandalm-30", **argilla_server.auth)
    validate(pulled, "annotations")
    assert (report["submitted"], report["discarded"], report["records"]) == (90, 0, 30)
    assert pulled.height == 90 and report["annotators"] == 3
    assert set(pulled["annotator_kind"].to_list()) == {"human"}
    assert set(pulled["status"].to_list()) == {"submitted"}

    # Exactly PandaLM's human labels, annotatorN -> annN.
    expected = {
        (row["item_id"], f"ann{row['annotator'][-1]}"): row["label"]
        for row in pandalm30.human.iter_rows(named=True)
    }
    got = {(r["item_id"], r["annotator"]): r["label"] for r in pulled.iter_rows(named=True)}
    assert got == expected
    assert Counter(got.values()) == Counter(expected.values())

    # `order` records what was shown; rationale and rating come back too.
    for row in pulled.iter_rows(named=True):
        assert row["order"] == annotated["orders"][row["item_id"]]
        assert row["rationale"] == f"{row['annotator']} on {row['item_id']}"
        assert row["strength"] == 3
        assert row["record_id"] == row["item_id"]
        assert row["error"] is None


def test_agreement_on_pulled_labels_equals_agreement_on_the_source(
    argilla_server: Running, pandalm30: PandaLM, annotated: dict[str, Any]
) -> None:
    pulled, _ = pull_table("pandalm-30", **argilla_server.auth)
    ours = agreement(pulled, bootstrap=0).report
    source = pandalm30.human.with_columns(
        ("ann" + pl.col("annotator").str.slice(-1)).alias("annotator")
    )
    theirs = agreement(source, bootstrap=0).report
    for key in ("percent_agreement", "fleiss_kappa", "krippendorff_alpha"):
        assert _value(ours[key]) == pytest.approx(_value(theirs[key])), key
    assert _value(ours["percent_agreement"]) > 0.5


def _value(stat: Any) -> float:
    if isinstance(stat, dict):
        for key in ("value", "estimate", "nominal"):
            if key in stat:
                return _value(stat[key])
    return float(stat)


def test_records_complete_after_k_submissions(
    argilla_server: Running, pushed: dict[str, Any], annotated: dict[str, Any]
) -> None:
    with rest(argilla_server) as client:
        progress = client.get(f"/api/v1/datasets/{pushed['dataset_id']}/progress").json()
    assert progress["total"] == 30 and progress["completed"] == 30 and progress["pending"] == 0


def test_discarded_kept_drafts_skipped_and_incremental_pull(
    argilla_server: Running,
    pandalm30: PandaLM,
    annotators: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    push_report(pandalm30.pairs.head(3), dataset="small", **argilla_server.auth)
    with pa.connection(**argilla_server.auth) as conn:
        ds = pa.find_dataset(conn, "small")
    assert ds is not None
    with rest(argilla_server, annotators["ann1"]["api_key"]) as client:
        first, second, third = my_queue(client, ds["id"])
        respond(client, first["id"], {"label": "a"})
        respond(client, second["id"], {}, status="discarded")
        respond(client, third["id"], {"label": "tie"}, status="draft")

    pulled, report = pull_table("small", **argilla_server.auth)
    assert (report["submitted"], report["discarded"], report["drafts_skipped"]) == (1, 1, 1)
    # Each annotator's own progress, as the curator reads it.
    assert report["by_annotator"] == {"ann1": {"submitted": 1, "discarded": 1}}
    validate(pulled, "annotations")
    kept = {r["item_id"]: r for r in pulled.iter_rows(named=True)}
    assert set(kept) == {first["external_id"], second["external_id"]}
    order = first["metadata"].get("order") or pa.shown_order(first["external_id"])
    assert kept[first["external_id"]]["label"] == ("a" if order == "ab" else "b")
    gone = kept[second["external_id"]]
    assert gone["label"] is None and gone["error"] == pa.DISCARDED
    assert gone["status"] == "discarded"
    # Agreement skips the discarded row instead of counting it as a vote.
    stats = agreement(pulled, bootstrap=0).report
    assert stats["skipped_error"] == 1

    # Incremental: nothing new since `latest`; then only the new response.
    newer, rep = pull_table("small", since=report["latest"], **argilla_server.auth)
    assert newer.height == 0 and rep["older_than_since"] == 2
    with rest(argilla_server, annotators["ann2"]["api_key"]) as client:
        target = next(r for r in my_queue(client, ds["id"]) if r["id"] == third["id"])
        respond(client, target["id"], {"label": "tie"})
    newer, rep = pull_table("small", since=report["latest"], **argilla_server.auth)
    assert newer.height == 1
    assert newer.row(0, named=True)["annotator"] == "ann2"
    assert newer.row(0, named=True)["label"] == "tie"
    assert rep["latest"] > report["latest"]

    # A re-push brings the distribution and the guidelines up to date, once.
    own = tmp_path / "guidelines.md"
    own.write_text("Read both twice.")
    again = push_report(
        pandalm30.pairs.head(3),
        dataset="small",
        annotators_per_item=2,
        guidelines=own,
        **argilla_server.auth,
    )
    assert again["settings_updated"] == ["distribution", "guidelines"]
    assert (again["created"], again["updated"]) == (0, 3)
    with rest(argilla_server) as client:
        info = client.get(f"/api/v1/datasets/{ds['id']}").json()
    # The curator's text first, then what the page's verdict and progress figures mean.
    assert info["guidelines"].startswith("Read both twice.\n\n## The judges' verdict")
    assert "3 records; each needs 2 answers from different annotators" in info["guidelines"]
    assert info["distribution"]["min_submitted"] == 2
    same = push_report(
        pandalm30.pairs.head(3),
        dataset="small",
        annotators_per_item=2,
        guidelines=own,
        **argilla_server.auth,
    )
    assert same["settings_updated"] == []


def test_candidates_with_more_than_two_per_prompt_become_a_ranking(
    argilla_server: Running, pandalm30: PandaLM, annotators: dict[str, dict[str, Any]]
) -> None:
    # Three real PandaLM responses per prompt: the two of a pair plus one from another pair.
    distinct = pandalm30.pairs.unique("prompt_id", keep="first", maintain_order=True)
    assert distinct.height >= 6
    rows = distinct.head(4).iter_rows(named=True)
    extra = distinct.tail(4)["chosen"].to_list()
    candidates = []
    for i, row in enumerate(rows):
        for text in (row["chosen"], row["rejected"], extra[i]):
            candidates.append({"prompt": row["prompt"], "completion": text})
    # One prompt with only two candidates: not pushed to a 3-way ranking, and counted.
    last = distinct.row(4, named=True)
    candidates += [
        {"prompt": last["prompt"], "completion": last["chosen"]},
        {"prompt": last["prompt"], "completion": last["rejected"]},
    ]
    table = pl.DataFrame(candidates)
    report = push_report(table, dataset="ranked", **argilla_server.auth)
    assert report["kind"] == "ranking" and report["records"] == 4
    assert report["rejected_prompts"] == {"2_candidates_not_3": 1}

    with pa.connection(**argilla_server.auth) as conn:
        ds = pa.find_dataset(conn, "ranked")
    assert ds is not None
    with rest(argilla_server, annotators["ann3"]["api_key"]) as client:
        record = my_queue(client, ds["id"])[0]
        shown = [record["fields"][f"response_{i}"] for i in (1, 2, 3)]
        ranking = [{"value": f"response_{i}", "rank": i} for i in (1, 2, 3)]
        respond(client, record["id"], {"ranking": ranking})

    pulled, rep = pull_table("ranked", **argilla_server.auth)
    assert rep["kind"] == "ranking" and pulled.height == 3
    validate(pulled, "annotations")
    prompt_id = record["external_id"]
    expected = {
        ids.completion_id(prompt_id, text): str(rank) for rank, text in enumerate(shown, start=1)
    }
    assert dict(zip(pulled["item_id"], pulled["label"], strict=True)) == expected
    assert set(pulled["record_id"].to_list()) == {prompt_id}


def test_audit_sample_review_round_trip_into_the_mislabel_rate(
    argilla_server: Running, pandalm30: PandaLM, annotators: dict[str, dict[str, Any]]
) -> None:
    sample = audit_sample(pandalm30.pairs, n=6, seed=3)
    report = push_report(
        sample, dataset="audit-review", review=True, annotators_per_item=2, **argilla_server.auth
    )
    assert report["kind"] == "review" and report["records"] == 6
    with pa.connection(**argilla_server.auth) as conn:
        ds = pa.find_dataset(conn, "audit-review")
    assert ds is not None
    # Two reviewers: the first two items mislabeled by both, the third split, rest right.
    answers: dict[str, list[str]] = {}
    for user in ("ann1", "ann2"):
        with rest(argilla_server, annotators[user]["api_key"]) as client:
            for record in sorted(my_queue(client, ds["id"]), key=lambda r: r["external_id"]):
                pid = record["external_id"]
                rank = sorted(sample["pair_id"].to_list()).index(pid)
                answer = (
                    "no"
                    if rank < 2
                    else ("no" if user == "ann1" else "yes")
                    if rank == 2
                    else "yes"
                )
                answers.setdefault(pid, []).append(answer)
                assert record["fields"]["chosen"] in sample["chosen"].to_list()
                respond(client, record["id"], {"label_right": answer})
    assert sorted(len(v) for v in answers.values()) == [2] * 6
    reviewed, rep = pull_table("audit-review", review_of=sample, **argilla_server.auth)
    assert rep["reviewed_items"] == 5 and rep["mislabeled_items"] == 2
    verdict = dict(zip(reviewed["pair_id"], reviewed["mislabeled"], strict=True))
    for pid, votes in answers.items():
        if votes.count("no") > votes.count("yes"):
            assert verdict[pid] is True
        elif votes.count("yes") > votes.count("no"):
            assert verdict[pid] is False
        else:
            assert verdict[pid] is None
    rate = mislabel_rate(reviewed).report
    assert rate["reviewed"] == 5 and rate["mislabeled"] == 2
    assert rate["rate"] == pytest.approx(0.4)


def test_users_and_workspaces(argilla_server: Running) -> None:
    try:
        made = pa.add_user("lead", role="admin", workspaces=["round-2"], **argilla_server.auth)
        assert made["created"] and made["role"] == "admin" and made["password"]
        again = pa.add_user("lead", workspaces=["round-2", "round-3"], **argilla_server.auth)
        assert not again["created"] and again["password"] is None
        assert again["api_key"] == made["api_key"]
        assert {"argilla", "round-2", "round-3"} <= set(pa.list_workspaces(**argilla_server.auth))
        users = {u["username"]: u for u in pa.list_users(**argilla_server.auth)}
        assert users["lead"]["workspaces"] == ["round-2", "round-3"]
        assert users["lead"]["role"] == "admin"
        with pytest.raises(pa.ArgillaError, match="unknown role"):
            pa.add_user("x", role="boss", **argilla_server.auth)  # type: ignore[arg-type]
        # With several workspaces, nothing is guessed: push and add_user ask for one.
        with pytest.raises(pa.ArgillaError, match="several workspaces"):
            pa.add_user("y", **argilla_server.auth)
    finally:
        # Other tests rely on the server having one workspace (the default one).
        with rest(argilla_server) as client:
            for user in client.get("/api/v1/users").json()["items"]:
                if user["username"] == "lead":
                    client.delete(f"/api/v1/users/{user['id']}").raise_for_status()
            for ws in client.get("/api/v1/me/workspaces").json()["items"]:
                if ws["name"] in ("round-2", "round-3"):
                    client.delete(f"/api/v1/workspaces/{ws['id']}").raise_for_status()
    assert pa.list_workspaces(**argilla_server.auth) == ["argilla"]


def _judge_majority(judges: pl.DataFrame, pid: str) -> tuple[str | None, list[str], int]:
    """(the judges' strict plurality label or None, the judges behind it, their vote count)."""
    votes = judges.filter(pl.col("item_id") == pid)
    top = Counter(votes["label"].to_list()).most_common()
    if not top or (len(top) > 1 and top[0][1] == top[1][1]):
        return None, [], votes.height
    backers = sorted(set(votes.filter(pl.col("label") == top[0][0])["annotator"].to_list()))
    return top[0][0], backers, votes.height


def test_hint_shows_the_verdict_as_text_and_selects_nothing(
    argilla_server: Running, pandalm30: PandaLM
) -> None:
    pairs = pandalm30.pairs.slice(5, 12)
    report = push_report(
        pairs, dataset="hinted", judge_votes=pandalm30.judges, **argilla_server.auth
    )
    assert report["suggestions"] == "hint"
    with rest(argilla_server) as client:
        fields = client.get(f"/api/v1/datasets/{report['dataset_id']}/fields").json()["items"]
        records = client.get(
            f"/api/v1/datasets/{report['dataset_id']}/records",
            params={"include": "suggestions", "limit": 100},
        ).json()["items"]
    judge = next(f for f in fields if f["name"] == "judge")
    assert judge["required"] is False and "hint" in judge["title"]
    judges = pandalm30.judges.filter(pl.col("error").is_null())
    with_verdict = 0
    for rec in records:
        assert rec["suggestions"] == []  # nothing for the web app to pre-select
        label, backers, n = _judge_majority(judges, rec["external_id"])
        text = rec["fields"].get("judge")
        if n == 0:
            assert text is None
            continue
        if label is None:
            assert text is not None and text.startswith("The judges split")
            continue
        shown = label if rec["metadata"]["order"] == "ab" else {"a": "b", "b": "a"}.get(label)
        backing = sum(
            1 for v in judges.filter(pl.col("item_id") == rec["external_id"])["label"] if v == label
        )
        assert text == (
            f"{pa.SHOWN_LABELS[str(shown)]}; judges: {' / '.join(backers)}; "
            f"score {backing / n:.2f}, {backing} of {n} judge votes."
        )
        with_verdict += 1
    assert with_verdict == report["verdicts"] and with_verdict >= 5
    # The way a dataset shows verdicts is fixed when it is made.
    with pytest.raises(pa.ArgillaError, match="--suggestions hint"):
        pa.push(
            pairs,
            dataset="hinted",
            judge_votes=pandalm30.judges,
            suggestions="prefill",
            **argilla_server.auth,
        )


def test_repush_with_another_seed_is_refused_and_submitted_labels_stay(
    argilla_server: Running, pandalm30: PandaLM, annotators: dict[str, dict[str, Any]]
) -> None:
    pairs = pandalm30.pairs.slice(10, 8)
    report = push_report(pairs, dataset="seeded", **argilla_server.auth)
    with rest(argilla_server, annotators["ann1"]["api_key"]) as client:
        queue = my_queue(client, report["dataset_id"])
        assert len(queue) == 8
        for record in queue:
            respond(client, record["id"], {"label": "a"})  # "Response A is better", as shown
    before, _ = pull_table("seeded", **argilla_server.auth)
    # What the annotator clicked, in canonical terms: side a when a was shown first (the
    # shown order is metadata annotators do not see; the owner reads it).
    with rest(argilla_server) as owner:
        stored = owner.get(
            f"/api/v1/datasets/{report['dataset_id']}/records", params={"limit": 100}
        ).json()["items"]
    expected = {r["external_id"]: ("a" if r["metadata"]["order"] == "ab" else "b") for r in stored}
    assert dict(zip(before["item_id"], before["label"], strict=True)) == expected
    flipped = sum(pa.shown_order(pid, 1) != pa.shown_order(pid, 0) for pid in expected)
    assert flipped > 0  # seed 1 would show some of these records the other way round

    with pytest.raises(pa.ArgillaError, match=f"{flipped} record.*another order"):
        pa.push(pairs, dataset="seeded", seed=1, **argilla_server.auth)
    after, _ = pull_table("seeded", **argilla_server.auth)
    assert after.to_dicts() == before.to_dicts()
    # The same seed is an update as before.
    again = push_report(pairs, dataset="seeded", **argilla_server.auth)
    assert (again["created"], again["updated"]) == (0, 8)

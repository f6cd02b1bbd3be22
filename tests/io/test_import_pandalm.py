from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata import ids
from prefdata.errors import InputError
from prefdata.io.importers.common import Imported
from prefdata.io.importers.pandalm import import_pandalm, vote_confidence, winner
from prefdata.schema import validate

Loaded = tuple[list[dict[str, Any]], Imported]


def fleiss_kappa(ratings: list[list[str]]) -> float:
    """Textbook Fleiss' kappa: every item rated by the same number of raters."""
    n = len(ratings[0])
    assert all(len(r) == n for r in ratings)
    categories = sorted({c for r in ratings for c in r})
    counts = [[r.count(c) for c in categories] for r in ratings]
    total = len(ratings) * n
    p_j = [sum(row[j] for row in counts) / total for j in range(len(categories))]
    p_i = [(sum(x * x for x in row) - n) / (n * (n - 1)) for row in counts]
    p_bar = sum(p_i) / len(p_i)
    p_e = sum(p * p for p in p_j)
    return (p_bar - p_e) / (1 - p_e)


@pytest.fixture(scope="module")
def pandalm(shared_data: Path) -> Loaded:
    folder = shared_data / "pandalm_testset"
    raw = json.loads((folder / "testset-v1.json").read_text())
    result = import_pandalm(
        folder / "testset-v1.json",
        judges=[folder / "gpt-3.5-turbo-testset-v1.json", folder / "pandalm-7b-testset-v1.json"],
    )
    return raw, result


def test_real_file_counts(pandalm: Loaded) -> None:
    raw, result = pandalm
    annotations = result.tables["annotations"]
    report = result.report
    human = annotations.filter(pl.col("annotator_kind") == "human")
    # MANIFEST: 999 items x 3 annotators; unanimous 879.
    assert len(raw) == 999
    assert human.height == 2997 == report["human_votes"]
    assert human["record_id"].n_unique() == 999
    assert sorted(human["annotator"].unique()) == ["annotator1", "annotator2", "annotator3"]
    assert report["records_unanimous"] == 879
    unanimous = human.group_by("record_id").agg(pl.col("label").n_unique().alias("k"))
    assert unanimous.filter(pl.col("k") == 1).height == 879
    pairs = result.tables["pairs"]
    validate(pairs, "pairs")
    validate(annotations, "annotations")
    # Repeated (prompt, two responses) records pool into one item; nothing is double counted.
    assert report["items"] + report["records_pooled_with_earlier"] == 999
    assert pairs["pair_id"].n_unique() == pairs.height
    assert (
        pairs.height
        + report["items_tie_majority"]
        + report["items_no_majority"]
        + (result.rejected.filter(pl.col("reason").str.contains("not text|empty text")).height)
        == report["items"]
    )
    # Every pair has a real winner: more votes for chosen than for rejected or for tie.
    for prov in pairs["provenance"].to_list()[:200]:
        p = json.loads(prov)
        side, other = p["chosen_side"], "b" if p["chosen_side"] == "a" else "a"
        assert p["votes"][side] > p["votes"][other] and p["votes"][side] > p["votes"]["tie"]


def test_fleiss_kappa_from_annotations_matches_manifest(
    pandalm: Loaded,
) -> None:
    raw, result = pandalm
    from_raw = fleiss_kappa([[str(r[f"annotator{k}"]) for k in (1, 2, 3)] for r in raw])
    human = result.tables["annotations"].filter(pl.col("annotator_kind") == "human")
    # Back to what the annotators saw (1 = response1) through `order`; kappa depends on
    # category labels, so this also checks that order and label agree.
    shown = human.with_columns(
        pl.when(pl.col("label") == "tie")
        .then(pl.lit("0"))
        .when((pl.col("label") == "a") == (pl.col("order") == "ab"))
        .then(pl.lit("1"))
        .otherwise(pl.lit("2"))
        .alias("shown")
    )
    assert (shown["shown"] == shown["raw"]).all()
    per_item = (
        shown.sort("record_id", "annotator").group_by("record_id", maintain_order=True).agg("shown")
    )
    from_table = fleiss_kappa(per_item["shown"].to_list())
    assert from_raw == pytest.approx(0.864, abs=0.001)
    assert from_table == pytest.approx(from_raw, abs=1e-12)


def test_chosen_is_what_the_majority_voted_for(
    pandalm: Loaded,
) -> None:
    raw, result = pandalm
    pairs = result.tables["pairs"]
    by_idx = {
        rec["idx"]: row
        for row in pairs.iter_rows(named=True)
        for rec in json.loads(row["provenance"])["records"]
    }
    checked = Counter[str]()
    for r in raw:
        votes = Counter(r[f"annotator{k}"] for k in (1, 2, 3))
        top, n = votes.most_common(1)[0]
        if r["idx"] not in by_idx:
            continue
        prov = json.loads(by_idx[r["idx"]]["provenance"])
        if len(prov["records"]) > 1 or top == 0:
            continue  # pooled items are decided by all their records together
        winner_text = r["response1"] if top == 1 else r["response2"]
        loser_text = r["response2"] if top == 1 else r["response1"]
        assert by_idx[r["idx"]]["chosen"] == winner_text
        assert by_idx[r["idx"]]["rejected"] == loser_text
        assert by_idx[r["idx"]]["agreement"] == pytest.approx(n / 3)
        checked["response1" if top == 1 else "response2"] += 1
    # Both directions of the mapping are exercised, many times.
    assert checked["response1"] > 200 and checked["response2"] > 200
    first = raw[0]  # 2, 2, 2: response2 wins
    row = by_idx[first["idx"]]
    assert row["chosen"] == first["response2"]


def test_judges_become_llm_annotations(pandalm: Loaded) -> None:
    raw, result = pandalm
    ann = result.tables["annotations"]
    llm = ann.filter(pl.col("annotator_kind") == "llm")
    counts = dict(llm.group_by("annotator").len().iter_rows())
    # gpt-3.5-turbo: 999 verdicts of which 25 are "garbage": rows with `error`, no label.
    assert counts == {"gpt-3.5-turbo": 999, "pandalm-7b": 999}
    unread = llm.filter(pl.col("error").is_not_null())
    assert unread.height == 25 and unread["label"].null_count() == 25
    assert set(unread["annotator"]) == {"gpt-3.5-turbo"}
    assert llm["rationale"].null_count() == 0
    # idx 0: gpt says "1" (response1), pandalm-7b says 2; response1 is side b there.
    first = llm.filter(pl.col("record_id") == "0")
    r1, r2 = raw[0]["response1"], raw[0]["response2"]
    a, _ = ids.canonical_sides(str(r1), str(r2))
    side1 = "a" if a == r1 else "b"
    side2 = "b" if side1 == "a" else "a"
    labels = dict(first.select("annotator", "label").iter_rows())
    assert labels == {"gpt-3.5-turbo": side1, "pandalm-7b": side2}


def test_non_text_responses_reject_the_pair_keep_the_votes(
    pandalm: Loaded,
) -> None:
    _, result = pandalm
    rejected = result.rejected
    non_text = rejected.filter(pl.col("reason").str.contains("not text"))
    # idx 157, 158, 159, 161, 162, 164 hold a JSON `true`; they pool into 2 items.
    idxs = sorted(r["idx"] for rec in non_text["record"] for r in json.loads(rec)["records"])
    assert idxs == [157, 158, 159, 161, 162, 164]
    ann = result.tables["annotations"]
    assert ann.filter(pl.col("record_id") == "157").height == 3 + 2


def test_tie_and_split_votes_make_no_pair(tmp_path: Path) -> None:
    rows = [
        {
            "idx": 0,
            "instruction": "Say hi",
            "input": "",
            "response1": "hi",
            "response2": "yo",
            "annotator1": 0,
            "annotator2": 0,
            "annotator3": 1,
        },
        {
            "idx": 1,
            "instruction": "Say hi",
            "input": "twice",
            "response1": "hi hi",
            "response2": "yo",
            "annotator1": 0,
            "annotator2": 1,
            "annotator3": 2,
        },
        {
            "idx": 2,
            "instruction": "Count",
            "input": "",
            "response1": "1 2",
            "response2": "1 2 3",
            "annotator1": 2,
            "annotator2": 0,
            "annotator3": 2,
        },
        {
            "idx": 3,
            "instruction": "Count",
            "input": "",
            "response1": "1 2",
            "response2": "1 2 3",
            "annotator1": 1,
            "annotator2": None,
            "annotator3": 7,
        },
    ]
    src = tmp_path / "pl.json"
    src.write_text(json.dumps(rows))
    result = import_pandalm(src)
    pairs = result.tables["pairs"]
    assert result.report["items_tie_majority"] == 1
    assert result.report["items_no_majority"] == 1
    # idx 2 and 3 share their texts: pooled votes 2, 0, 2, 1 -> response2 wins 2 to 1.
    assert pairs.height == 1
    row = pairs.row(0, named=True)
    assert row["chosen"] == "1 2 3" and row["rejected"] == "1 2"
    assert row["prompt"] == [{"role": "user", "content": "Count"}]
    assert row["n_votes"] == 4
    assert row["agreement"] == pytest.approx(0.5)
    assert row["confidence"] == pytest.approx(vote_confidence(2, 1)) == pytest.approx(0.6875)
    assert row["margin"] is None
    # The vote 7 is rejected with its reason; the null vote is simply absent.
    assert result.rejected.filter(pl.col("reason").str.contains("vote 7")).height == 1
    ann = result.tables["annotations"]
    assert ann.height == 3 + 3 + 3 + 1
    split_prompt = ann.filter(pl.col("record_id") == "1")
    assert sorted(split_prompt["label"].to_list()) == ["a", "b", "tie"]


def test_winner_rule() -> None:
    assert winner({"a": 2, "b": 1, "tie": 0}) == ("a", "")
    assert winner({"a": 1, "b": 1, "tie": 1}) == (None, "no_majority")
    assert winner({"a": 0, "b": 0, "tie": 0}) == (None, "no_votes")
    assert winner({"tie": 2, "b": 1}) == ("tie", "")
    assert vote_confidence(3, 0) == pytest.approx(1 - 0.5**4)


def test_missing_idx_names_file_row_column(tmp_path: Path) -> None:
    src = tmp_path / "bad.json"
    src.write_text(
        json.dumps([{"instruction": "x", "response1": "a", "response2": "b", "annotator1": 1}])
    )
    with pytest.raises(InputError) as err:
        import_pandalm(src)
    assert "bad.json" in str(err.value) and "row 1" in str(err.value) and "'idx'" in str(err.value)

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata.errors import InputError
from prefdata.io.importers.oasst import import_oasst
from prefdata.schema import validate


def walk(
    message: dict[str, Any], parent: dict[str, Any] | None = None
) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    yield message, parent
    for reply in message.get("replies", []):
        yield from walk(reply, message)


@pytest.fixture(scope="module")
def trees(shared_data: Path) -> list[dict[str, Any]]:
    lines = (shared_data / "oasst_en_100" / "en_100_tree.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def oasst_file(shared_data: Path) -> Path:
    return shared_data / "oasst_en_100" / "en_100_tree.jsonl"


def ranked_groups(trees: list[dict[str, Any]]) -> list[list[int]]:
    groups = []
    for tree in trees:
        for message, _ in walk(tree["prompt"]):
            ranks = [
                r["rank"]
                for r in message.get("replies", [])
                if r.get("rank") is not None and r["role"] == "assistant"
            ]
            if ranks:
                groups.append(ranks)
    return groups


def test_counts_match_manifest_and_raw(oasst_file: Path, trees: list[dict[str, Any]]) -> None:
    result = import_oasst(oasst_file)
    report = result.report
    # MANIFEST: 100 trees, 1,167 messages, 687 assistant, 212 ranked sibling groups.
    assert (report["trees"], report["messages"], report["assistant_messages"]) == (100, 1167, 687)
    assert report["ranked_groups"] == 212
    groups = ranked_groups(trees)
    assert len(groups) == 212
    expected = sum(1 for ranks in groups for x, y in combinations(ranks, 2) if x != y)
    assert result.tables["pairs"].height == expected == 754
    assert result.rejected.height == 0
    validate(result.tables["pairs"], "pairs")
    validate(result.tables["kto"], "kto")


def test_best_vs_worst_one_pair_per_group(oasst_file: Path, trees: list[dict[str, Any]]) -> None:
    pairs = import_oasst(oasst_file, mode="best-vs-worst").tables["pairs"]
    groups = ranked_groups(trees)
    assert pairs.height == sum(1 for ranks in groups if len(set(ranks)) >= 2)
    provenance = [json.loads(p) for p in pairs["provenance"]]
    assert len({p["parent_id"] for p in provenance}) == pairs.height
    for p in provenance:
        assert p["rank_chosen"] == 0 and p["rank_rejected"] > 0


def test_pairs_point_at_the_right_messages(oasst_file: Path, trees: list[dict[str, Any]]) -> None:
    by_id = {m["message_id"]: (m, parent) for t in trees for m, parent in walk(t["prompt"])}
    pairs = import_oasst(oasst_file).tables["pairs"]
    for row in pairs.iter_rows(named=True):
        prov = json.loads(row["provenance"])
        chosen, parent = by_id[prov["message_id_chosen"]]
        rejected, parent2 = by_id[prov["message_id_rejected"]]
        assert parent is parent2 and parent is not None
        assert parent["message_id"] == prov["parent_id"]
        assert row["chosen"] == chosen["text"] and row["rejected"] == rejected["text"]
        assert chosen["rank"] < rejected["rank"]
        assert row["margin"] == rejected["rank"] - chosen["rank"]
        # The prompt ends with the parent turn, as a user message.
        assert row["prompt"][-1] == {"role": "user", "content": parent["text"]}
    # A deeper group: the prompt is the whole path from the root, roles alternating.
    deep = pairs.filter(pl.col("prompt").list.len() >= 3).row(0, named=True)
    roles = [m["role"] for m in deep["prompt"]]
    assert roles[0] == "user" and all(a != b for a, b in pairwise(roles))


def test_kto_labels_follow_thumbs(oasst_file: Path, trees: list[dict[str, Any]]) -> None:
    by_id = {m["message_id"]: m for t in trees for m, _ in walk(t["prompt"])}
    result = import_oasst(oasst_file)
    kto = result.tables["kto"]
    with_votes = [
        m
        for m in by_id.values()
        if m["role"] == "assistant"
        and m.get("emojis")
        and (m["emojis"].get("+1", 0) or m["emojis"].get("-1", 0))
    ]
    assert len(with_votes) == 455  # MANIFEST
    tied = sum(1 for m in with_votes if m["emojis"].get("+1", 0) == m["emojis"].get("-1", 0))
    assert kto.height == 455 - tied
    assert result.report["thumbs_tied_votes"] == tied
    assert result.report["thumbs_no_votes"] == 687 - 455
    for row in kto.iter_rows(named=True):
        m = by_id[json.loads(row["provenance"])["message_id"]]
        up, down = m["emojis"].get("+1", 0), m["emojis"].get("-1", 0)
        assert row["completion"] == m["text"]
        assert row["label"] == (up > down)
        assert 0.5 < row["confidence"] < 1
    assert kto["label"].sum() == 334 and (~kto["label"]).sum() == 96


def _msg(mid: str, role: str, text: str, **kw: Any) -> dict[str, Any]:
    return {"message_id": mid, "role": role, "text": text, "deleted": False, **kw}


def test_deleted_ranked_prompters_and_equal_ranks(tmp_path: Path) -> None:
    tree = _msg(
        "p0",
        "prompter",
        "Q?",
        replies=[
            _msg(
                "a1",
                "assistant",
                "good",
                rank=0,
                emojis={"+1": 3},
                replies=[
                    _msg("u1", "prompter", "more?", rank=0),
                    _msg(
                        "u2",
                        "prompter",
                        "why?",
                        rank=1,
                        replies=[_msg("a3", "assistant", "because", emojis={"-1": 2})],
                    ),
                ],
            ),
            _msg("a2", "assistant", "bad", rank=1, emojis={"+1": 1, "-1": 1}),
            {
                **_msg("a4", "assistant", "gone", rank=2, emojis={"-1": 5}),
                "deleted": True,
                "replies": [_msg("u3", "prompter", "hm")],
            },
            _msg("a5", "assistant", "also bad", rank=1),
        ],
    )
    src = tmp_path / "t.jsonl"
    src.write_text(json.dumps({"message_tree_id": "p0", "prompt": tree}) + "\n")

    result = import_oasst(src)
    pairs = result.tables["pairs"]
    # a1 beats a2 and a5; a2 and a5 share rank 1 (no pair); a4 is deleted.
    assert sorted(zip(pairs["chosen"], pairs["rejected"], strict=True)) == [
        ("good", "also bad"),
        ("good", "bad"),
    ]
    assert result.report["deleted_messages"] == 1
    assert result.report["messages_below_deleted"] == 1
    assert result.report["ranked_prompter_groups_ignored"] == 1
    kto = result.tables["kto"]
    # a1 up, a3 down (its prompt is Q?, good, why?); a2 tied 1-1; a5 no votes.
    assert dict(zip(kto["completion"], kto["label"], strict=True)) == {
        "good": True,
        "because": False,
    }
    because = kto.filter(pl.col("completion") == "because").row(0, named=True)
    assert [m["content"] for m in because["prompt"]] == ["Q?", "good", "why?"]
    assert result.report["thumbs_tied_votes"] == 1 and result.report["thumbs_no_votes"] == 1

    with_deleted = import_oasst(src, include_deleted=True)
    assert with_deleted.tables["pairs"].height == 2 + 3  # gone loses to a1, a2, a5
    assert "gone" in with_deleted.tables["kto"]["completion"].to_list()


def test_bad_role_names_line_and_place(tmp_path: Path) -> None:
    good = {"message_tree_id": "t", "prompt": _msg("p", "prompter", "hi")}
    bad = {
        "message_tree_id": "t2",
        "prompt": _msg("p2", "prompter", "hi", replies=[_msg("x", "robot", "beep")]),
    }
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputError) as err:
        import_oasst(src)
    message = str(err.value)
    assert "bad.jsonl" in message and "row 2" in message and "prompt.replies[0].role" in message

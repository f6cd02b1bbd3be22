from __future__ import annotations

import json
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata.errors import InputError
from prefdata.io.importers.rated import import_rated, parse_score
from prefdata.schema import validate

INSTRUCTION = "###The instruction to evaluate:\n"
RESPONSE = "\n\n###Response to evaluate:\n"


def raw_groups(records: list[dict[str, Any]]) -> dict[Any, dict[str, list[float]]]:
    """idx -> response text -> all its scores (the same text twice is one completion)."""
    groups: dict[Any, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        text = r["instruction"]
        start = text.index(RESPONSE) + len(RESPONSE)
        response = text[start : text.index("\n\n###Reference Answer", start)]
        groups[r["idx"]][response].extend(float(s) for s in r["gpt4_score"])
    return groups


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


@pytest.fixture(scope="module")
def mt_bench(shared_data: Path) -> tuple[Path, list[dict[str, Any]]]:
    path = shared_data / "mt_bench_ratings" / "mt_bench_eval.json"
    return path, json.loads(path.read_text())


@pytest.mark.parametrize("min_margin", [0.0, 0.5, 1.0])
def test_mt_bench_pair_counts_match_raw_scores(
    mt_bench: tuple[Path, list[dict[str, Any]]], min_margin: float
) -> None:
    path, records = mt_bench
    assert len(records) == 320  # MANIFEST
    groups = raw_groups(records)
    assert len(groups) == 80
    expected = sum(
        1
        for texts in groups.values()
        for x, y in combinations(texts.values(), 2)
        if abs(mean(x) - mean(y)) > min_margin
    )
    result = import_rated(path, min_margin=min_margin)
    pairs = result.tables["pairs"]
    assert result.report["completions"] == 320 and result.report["groups"] == 80
    assert pairs.height == expected
    assert (pairs["margin"] > min_margin).all()
    assert result.rejected.height == 0
    validate(pairs, "pairs")


def test_mt_bench_best_vs_worst_and_ties(mt_bench: tuple[Path, list[dict[str, Any]]]) -> None:
    path, records = mt_bench
    groups = raw_groups(records)
    all_tied = sum(1 for t in groups.values() if len({mean(s) for s in t.values()}) == 1)
    result = import_rated(path, mode="best-vs-worst")
    pairs = result.tables["pairs"]
    assert pairs.height == 80 - all_tied <= 80
    assert result.report["groups_all_tied"] == all_tied == 2
    assert (pairs["chosen"] != pairs["rejected"]).all()
    for prov in pairs["provenance"]:
        p = json.loads(prov)
        assert mean(p["scores_chosen"]) > mean(p["scores_rejected"])
    # The one response text two models share (idx 138) is one completion, scores pooled.
    assert result.report["completions_merged_identical"] == 1


def test_mt_bench_extraction_and_provenance(mt_bench: tuple[Path, list[dict[str, Any]]]) -> None:
    path, records = mt_bench
    pairs = import_rated(path).tables["pairs"]
    for row in pairs.head(40).iter_rows(named=True):
        prov = json.loads(row["provenance"])
        rec = records[prov["row_chosen"][0] - 1]
        text = rec["instruction"]
        prompt = row["prompt"][0]["content"]
        # The prompt and the response are the exact sections of the scoring prompt.
        assert INSTRUCTION + prompt + RESPONSE + row["chosen"] + "\n\n###Reference" in text
        assert prov["group"] == str(rec["idx"])
        assert prov["generator_chosen"] == rec["response_source"]
        assert [float(s) for s in rec["gpt4_score"]] == prov["scores_chosen"][:3]
        # MT-Bench turn 2 embeds each model's own first answer: contexts differ per model.
        assert prov["prompt_differs"] is True
    assert not any("###" in c for c in pairs["chosen"])


def test_vicuna_prompts_are_shared(shared_data: Path) -> None:
    result = import_rated(shared_data / "mt_bench_ratings" / "vicuna_eval.json")
    assert result.report["groups"] == 80
    assert result.report["groups_with_differing_prompts"] == 0
    assert result.tables["pairs"]["prompt_id"].n_unique() <= 80
    assert result.report["groups_all_tied"] == 6


def test_grouping_by_exact_prompt_pairs_only_shared_contexts(
    mt_bench: tuple[Path, list[dict[str, Any]]],
) -> None:
    path, records = mt_bench
    by_prompt: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        text = r["instruction"]
        start = text.index(INSTRUCTION) + len(INSTRUCTION)
        prompt = text[start : text.index(RESPONSE)]
        response = text[text.index(RESPONSE) + len(RESPONSE) : text.index("\n\n###Reference")]
        by_prompt[prompt][response].extend(float(s) for s in r["gpt4_score"])
    expected = sum(
        1 for t in by_prompt.values() for x, y in combinations(t.values(), 2) if mean(x) != mean(y)
    )
    result = import_rated(path, group_field="")
    # 318 distinct contexts for 320 responses: only two models ever share a context.
    assert result.report["groups"] == len(by_prompt) == 318
    assert result.tables["pairs"].height == expected == 2
    assert result.report["pairs_with_differing_prompts"] == 0


def test_nested_all_tied_prompt_gives_no_pair(tmp_path: Path) -> None:
    rows = [
        {
            "instruction": "tied",
            "completions": [
                {"model": "m1", "response": "x", "ratings": ["4", "4"]},
                {"model": "m2", "response": "y", "ratings": [4, 4]},
            ],
        },
        {
            "instruction": "ordered",
            "completions": [
                {"model": "m1", "response": "good", "ratings": [5, 4]},
                {"model": "m2", "response": "ok", "ratings": ["3", "N/A"]},
                {"model": "m3", "response": "bad", "ratings": [1, 2]},
            ],
        },
    ]
    src = tmp_path / "uf.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    result = import_rated(src)
    assert result.report["format"] == "nested"
    assert result.report["groups_all_tied"] == 1
    pairs = result.tables["pairs"]
    assert sorted(zip(pairs["chosen"], pairs["rejected"], strict=True)) == [
        ("good", "bad"),
        ("good", "ok"),
        ("ok", "bad"),
    ]
    good_bad = pairs.filter((pl.col("chosen") == "good") & (pl.col("rejected") == "bad"))
    assert good_bad["margin"][0] == pytest.approx(3.0)
    assert good_bad["confidence"][0] == pytest.approx(1.0)
    assert json.loads(good_bad["provenance"][0])["generator_rejected"] == "m3"
    best = import_rated(src, mode="best-vs-worst").tables["pairs"]
    assert best.select("chosen", "rejected").rows() == [("good", "bad")]
    # Means 4.5, 3, 1.5: only good-bad differs by more than 1.5 (strictly).
    assert import_rated(src, min_margin=1.5).tables["pairs"].height == 1
    assert import_rated(src, min_margin=1.0).tables["pairs"].height == 3


def test_flat_rows_bad_scores_rejected_dotted_fields(tmp_path: Path) -> None:
    rows = [
        {"prompt": "p", "completion": "a", "meta": {"score": 9}},
        {"prompt": "p", "completion": "b", "meta": {"score": "7.5"}},
        {"prompt": "p", "completion": "c", "meta": {"score": "great"}},
        {"prompt": "q", "completion": "d", "meta": {"score": 1}},
    ]
    src = tmp_path / "flat.json"
    src.write_text(json.dumps(rows))
    result = import_rated(src, score_field="meta.score")
    assert result.report["format"] == "flat"
    assert result.tables["pairs"].select("chosen", "rejected").rows() == [("a", "b")]
    assert result.rejected["row"].to_list() == [3]
    assert "'great' is not a number" in result.rejected["reason"][0]
    assert result.report["groups_one_completion"] == 1


def test_rubric_that_does_not_parse_is_rejected(tmp_path: Path) -> None:
    good = f"###Task\n{INSTRUCTION}Add 1+1{RESPONSE}2\n\n###Reference Answer (Score 5):\n2"
    rows = [
        {"idx": 1, "response_source": "m1", "instruction": good, "gpt4_score": [5, 5, 4]},
        {
            "idx": 1,
            "response_source": "m2",
            "instruction": good.replace("\n2\n", "\n3\n"),
            "gpt4_score": [1, 1, 2],
        },
        {
            "idx": 1,
            "response_source": "m3",
            "instruction": "###Response to evaluate: ?",
            "gpt4_score": [3, 3, 3],
        },
    ]
    src = tmp_path / "rubric.json"
    src.write_text(json.dumps(rows))
    result = import_rated(src)
    assert result.report["format"] == "rubric"
    assert result.tables["pairs"].select("chosen", "rejected").rows() == [("2", "3")]
    assert result.tables["pairs"]["prompt"][0].to_list() == [{"role": "user", "content": "Add 1+1"}]
    assert result.rejected["row"].to_list() == [3]


def test_missing_field_names_row_and_column(tmp_path: Path) -> None:
    src = tmp_path / "flat.jsonl"
    src.write_text('{"prompt": "p", "completion": "a", "score": 1}\n{"prompt": "p", "score": 2}\n')
    with pytest.raises(InputError) as err:
        import_rated(src)
    message = str(err.value)
    assert "flat.jsonl" in message and "row 2" in message and "'completion'" in message


def test_parse_score() -> None:
    assert parse_score("4") == 4.0
    assert parse_score(["1", None, "N/A", 3]) == [1.0, 3.0]
    assert parse_score("N/A") is None
    with pytest.raises(ValueError):
        parse_score(True)
    with pytest.raises(ValueError):
        parse_score("nan")

"""The programmatic labeller on real answers (MT-Bench's four model answers per question):
scores, pairs and flips recomputed independently here with vaderSentiment and itertools."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from prefdata import ids
from prefdata.cli import app
from prefdata.errors import InputError
from prefdata.io.tables import read_table, write_table
from prefdata.label.programmatic import flip_labels, resolve_scorer, rule_label
from prefdata.schema import validate

INSTRUCTION = "###The instruction to evaluate:\n"
RESPONSE = "\n\n###Response to evaluate:\n"


@pytest.fixture(scope="module")
def candidates(shared_data: Path) -> pl.DataFrame:
    """MT-Bench questions with the four models' answers as candidates (the same text twice
    kept once, as the labeller does)."""
    records = json.loads((shared_data / "mt_bench_ratings" / "mt_bench_eval.json").read_text())
    rows = []
    seen: set[tuple[str, str]] = set()
    question_of: dict[Any, str] = {}  # one question text per MT-Bench idx
    for r in records:
        text = r["instruction"]
        question = text[text.index(INSTRUCTION) + len(INSTRUCTION) : text.index(RESPONSE)]
        question = question_of.setdefault(r["idx"], question)
        start = text.index(RESPONSE) + len(RESPONSE)
        answer = text[start : text.index("\n\n###Reference Answer", start)]
        if (question, answer) in seen:
            continue
        seen.add((question, answer))
        rows.append({"prompt": question, "completion": answer, "generator": r["response_source"]})
    table = ids.with_prompt_ids(
        pl.DataFrame(rows).with_columns(
            pl.col("prompt").map_elements(
                lambda q: [{"role": "user", "content": q}],
                return_dtype=pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
            )
        )
    )
    table = ids.with_completion_ids(table).with_columns(pl.lit("{}").alias("params"))
    return validate(table, "candidates")


def _vader_by_prompt(candidates: pl.DataFrame) -> dict[str, dict[str, float]]:
    """prompt_id -> completion -> VADER compound, straight from vaderSentiment."""
    analyzer = SentimentIntensityAnalyzer()
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for pid, text in zip(candidates["prompt_id"], candidates["completion"], strict=True):
        out[pid][text] = analyzer.polarity_scores(text)["compound"]
    return out


def _expected_all(candidates: pl.DataFrame, min_margin: float) -> set[tuple[str, str]]:
    """Every (chosen, rejected) of a prompt whose scores differ by more than min_margin."""
    out: set[tuple[str, str]] = set()
    for scores in _vader_by_prompt(candidates).values():
        for a, b in combinations(scores, 2):
            hi, lo = (a, b) if scores[a] > scores[b] else (b, a)
            if scores[hi] - scores[lo] > min_margin:
                out.add((hi, lo))
    return out


@pytest.mark.parametrize(("mode", "min_margin"), [("best-vs-worst", 0.0), ("all", 0.3)])
def test_vader_pairs_match_an_independent_recomputation(
    candidates: pl.DataFrame, mode: str, min_margin: float
) -> None:
    result = rule_label(candidates, scorer="vader", pairing=mode, min_margin=min_margin)
    pairs, annotations, flips = (result.tables[k] for k in ("pairs", "ratings", "flips"))
    report = result.report
    validate(pairs, "pairs")
    validate(annotations, "annotations")
    by_prompt = _vader_by_prompt(candidates)
    if mode == "all":
        expected = _expected_all(candidates, min_margin)
        assert set(zip(pairs["chosen"], pairs["rejected"], strict=True)) == expected
    else:
        # one pair per prompt whose candidates do not all tie: a top one against a bottom one
        # (which of several tied at the top is taken is not part of the contract)
        expected = {p for p, s in by_prompt.items() if len(set(s.values())) > 1}
        assert set(pairs["prompt_id"]) == expected and pairs.height == len(expected)
        for row in pairs.iter_rows(named=True):
            scores = by_prompt[row["prompt_id"]]
            assert scores[row["chosen"]] == max(scores.values())
            assert scores[row["rejected"]] == min(scores.values())
    assert len(expected) > 40  # real answers differ in sentiment often enough to matter
    assert report["pairs"] == len(expected) and report["flipped"] == 0
    assert not flips["flipped"].any() and flips["pair_id"].to_list() == pairs["pair_id"].to_list()
    analyzer = SentimentIntensityAnalyzer()
    for row in pairs.iter_rows(named=True):
        gap = (
            analyzer.polarity_scores(row["chosen"])["compound"]
            - analyzer.polarity_scores(row["rejected"])["compound"]
        )
        assert row["margin"] == pytest.approx(gap, abs=1e-9)
        assert row["confidence"] is None and row["n_votes"] == 1
        assert json.loads(row["provenance"])["scorer"] == "vader"
    # one rating per candidate, the score as text, annotator_kind rule
    assert annotations.height == candidates.height
    assert set(annotations["annotator_kind"]) == {"rule"}
    by_id = dict(zip(annotations["item_id"], annotations["label"], strict=True))
    for cid, text in zip(candidates["completion_id"], candidates["completion"], strict=True):
        assert float(by_id[cid]) == pytest.approx(analyzer.polarity_scores(text)["compound"])


def test_confidence_scale_is_bradley_terry_on_the_gap(candidates: pl.DataFrame) -> None:
    pairs = rule_label(candidates, scorer="length", confidence_scale=200.0).tables["pairs"]
    for row in pairs.iter_rows(named=True):
        assert row["margin"] == len(row["chosen"]) - len(row["rejected"]) > 0
        assert row["confidence"] == pytest.approx(1 / (1 + math.exp(-row["margin"] / 200.0)))


def test_flips_are_seeded_exact_and_hidden_from_the_pairs(candidates: pl.DataFrame) -> None:
    clean = rule_label(candidates, scorer="vader", pairing="all").tables["pairs"]
    result = rule_label(candidates, scorer="vader", pairing="all", flip_rate=0.2, seed=7)
    noisy, flips, report = result.tables["pairs"], result.tables["flips"], result.report
    n = clean.height
    mask = flips["flipped"].to_numpy()
    assert int(mask.sum()) == round(0.2 * n) == report["flipped"]
    assert noisy["pair_id"].to_list() == clean["pair_id"].to_list()
    swapped = (noisy["chosen"] == clean["rejected"]) & (noisy["rejected"] == clean["chosen"])
    same = (noisy["chosen"] == clean["chosen"]) & (noisy["rejected"] == clean["rejected"])
    assert swapped.to_numpy().tolist() == mask.tolist()
    assert same.to_numpy().tolist() == (~mask).tolist()
    # the same seed flips the same pairs; another seed others
    again = flip_labels(clean, rate=0.2, seed=7)[1]
    other = flip_labels(clean, rate=0.2, seed=8)[1]
    assert again["flipped"].to_list() == mask.tolist()
    assert other["flipped"].to_list() != mask.tolist()
    # nothing in a pair's columns tells a flipped one apart: no scores in provenance
    for p in noisy["provenance"]:
        record: dict[str, Any] = json.loads(p)
        assert "scores_chosen" not in record and record["flip_seed"] == 7
    assert (noisy["margin"] > 0).all()


def test_scorer_by_import_path_and_file(candidates: pl.DataFrame, tmp_path: Path) -> None:
    module = tmp_path / "my_scorer.py"
    module.write_text(
        "def words(prompt, completion):\n"
        "    assert prompt[0]['role'] == 'user'\n"
        "    return float(len(completion.split()))\n"
    )
    result = rule_label(candidates.head(40), scorer=f"{module}:words")
    pairs, report = result.tables["pairs"], result.report
    assert report["scorer"] == f"{module}:words"
    for row in pairs.iter_rows(named=True):
        assert row["margin"] == len(row["chosen"].split()) - len(row["rejected"].split())
    scorer, name = resolve_scorer("prefdata.label.programmatic:length_chars")
    assert scorer([], "abc") == 3.0 and name.endswith(":length_chars")
    with pytest.raises(InputError, match="unknown scorer"):
        resolve_scorer("sentiment")
    with pytest.raises(InputError, match="has no 'nope'"):
        resolve_scorer("prefdata.label.programmatic:nope")


def test_cli_writes_pairs_ratings_and_flips(candidates: pl.DataFrame, tmp_path: Path) -> None:
    source = write_table(candidates, tmp_path / "candidates.parquet")
    out = tmp_path / "pairs.parquet"
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["rule-label", str(source), "-o", str(out), "--pairing", "all", "--flip-rate", "0.25"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    pairs = read_table(out)
    flips = read_table(tmp_path / "pairs.flips.parquet")
    ratings = read_table(tmp_path / "pairs.ratings.parquet")
    assert pairs.height == report["pairs"] == flips.height
    assert int(flips["flipped"].sum()) == round(0.25 * pairs.height)
    assert ratings.height == candidates.height
    bad = runner.invoke(app, ["rule-label", str(source), "-o", str(out), "--scorer", "nope"])
    assert bad.exit_code == 2 and "unknown scorer" in bad.output and "Traceback" not in bad.output

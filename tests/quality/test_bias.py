"""Bias statistics against counts taken straight from the raw files, and Wilson intervals
against statsmodels."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from scipy.stats import binomtest
from statsmodels.stats.proportion import proportion_confint

from prefdata.io.importers.hh_rlhf import import_hh_rlhf
from prefdata.io.importers.pandalm import import_pandalm
from prefdata.quality.bias import bias_stats


def test_length_preference_on_hh_rlhf(shared_data: Path) -> None:
    pairs = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    half = pairs.height // 2
    pairs = pairs.with_columns(
        pl.when(pl.int_range(pl.len()) < half)
        .then(pl.lit("first"))
        .otherwise(pl.lit("second"))
        .alias("source")
    )
    report = bias_stats(pairs).report["length"]
    chosen, rejected = pairs["chosen"].to_list(), pairs["rejected"].to_list()
    longer = sum(len(c) > len(r) for c, r in zip(chosen, rejected, strict=True))
    shorter = sum(len(c) < len(r) for c, r in zip(chosen, rejected, strict=True))
    overall = report["overall"]
    assert (overall["chosen_longer"], overall["rejected_longer"]) == (longer, shorter)
    assert (longer, shorter) == (1021, 1271)  # harmless-base: the chosen reply is shorter
    assert overall["p_chosen_longer"] == longer / (longer + shorter)
    lo, hi = proportion_confint(longer, longer + shorter, method="wilson")
    assert overall["low"] == pytest.approx(lo, abs=1e-12)
    assert overall["high"] == pytest.approx(hi, abs=1e-12)
    assert overall["high"] < 0.5
    first = report["by_source"]["first"]
    k = sum(len(c) > len(r) for c, r in zip(chosen[:half], rejected[:half], strict=True))
    assert first["chosen_longer"] == k and first["pairs"] == half
    assert first["chosen_longer"] + report["by_source"]["second"]["chosen_longer"] == longer

    words = bias_stats(pairs, unit="words").report["length"]["overall"]
    w_longer = sum(len(c.split()) > len(r.split()) for c, r in zip(chosen, rejected, strict=True))
    assert words["chosen_longer"] == w_longer


def test_position_and_label_balance_on_pandalm(shared_data: Path) -> None:
    folder = shared_data / "pandalm_testset"
    imported = import_pandalm(
        folder / "testset-v1.json",
        judges=[folder / "gpt-3.5-turbo-testset-v1.json", folder / "pandalm-7b-testset-v1.json"],
    )
    report = bias_stats(imported.tables["pairs"], annotations=imported.tables["annotations"]).report
    raw = json.loads((folder / "testset-v1.json").read_text())
    # PandaLM showed response1 first: "first shown wins" is a vote of 1 among votes of 1 or 2
    for name in ("annotator1", "annotator2", "annotator3"):
        votes = [r[name] for r in raw]
        k, n = votes.count(1), votes.count(1) + votes.count(2)
        got = report["position"]["by_annotator"][name]
        assert (got["first_shown_wins"], got["votes"], got["ties"]) == (k, n, votes.count(0))
        lo, hi = proportion_confint(k, n, method="wilson")
        assert (got["low"], got["high"]) == pytest.approx((lo, hi), abs=1e-12)
        assert got["p_value"] == pytest.approx(binomtest(k, n).pvalue, abs=1e-15)
        labels = report["labels"]["by_annotator"][name]
        assert labels["votes"] == 999 and labels["counts"]["tie"] == votes.count(0)
    assert report["position"]["by_annotator"]["annotator1"]["first_shown_wins"] == 427
    gpt = json.loads((folder / "gpt-3.5-turbo-testset-v1.json").read_text())
    gpt_votes = [str(r["gpt_result"]).strip() for r in gpt]
    got = report["position"]["by_annotator"]["gpt-3.5-turbo"]
    assert got["first_shown_wins"] == gpt_votes.count("1")
    assert got["votes"] == gpt_votes.count("1") + gpt_votes.count("2")
    # Judge replies that are not a verdict are counted, not guessed.
    gpt_labels = report["labels"]["by_annotator"]["gpt-3.5-turbo"]["counts"]
    assert sum(gpt_labels.values()) == 999 and gpt_labels.get("(missing)", 0) == 25
    assert (
        report["labels"]["by_source"]["pandalm"]["votes"] + report["labels"]["votes_without_pair"]
        == imported.tables["annotations"].height
    )


def test_without_annotations_or_order() -> None:
    pairs = pl.DataFrame({"chosen": ["aaa", "b", "cc"], "rejected": ["a", "bbbb", "dd"]})
    report = bias_stats(pairs).report
    assert set(report) == {"unit", "confidence", "length"}
    assert report["length"]["overall"]["equal_length"] == 1
    assert report["length"]["by_source"]["(none)"]["chosen_longer"] == 1
    votes = pl.DataFrame({"item_id": ["x", "x"], "annotator": ["h", "h"], "label": ["a", "tie"]})
    report = bias_stats(pairs, annotations=votes).report
    assert "position" not in report
    assert report["labels"]["by_annotator"]["h"]["shares"] == {"a": 0.5, "tie": 0.5}

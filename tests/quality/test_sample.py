"""Audit sample and mislabel rate: Wilson intervals against statsmodels, reproducible draws,
weights that add up to the table, and the warning rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from statsmodels.stats.proportion import proportion_confint

from prefdata.io.importers.hh_rlhf import import_hh_rlhf
from prefdata.quality.sample import audit_sample, mislabel_rate, wilson_interval


def test_wilson_equals_statsmodels() -> None:
    for confidence in (0.8, 0.9, 0.95, 0.99):
        for n in (1, 7, 50, 333, 10_000):
            for k in sorted({0, 1, n // 10, n // 2, n - 1, n}):
                lo, hi = wilson_interval(k, n, confidence=confidence)
                ref = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
                assert float(lo) == pytest.approx(ref[0], abs=1e-12)
                assert float(hi) == pytest.approx(ref[1], abs=1e-12)
    # vectorised over arrays, and n = 0 says "anything is possible"
    lo, hi = wilson_interval(np.array([0, 3]), np.array([0, 10]))
    assert lo[0] == 0.0 and hi[0] == 1.0
    assert hi[1] == pytest.approx(proportion_confint(3, 10, method="wilson")[1], abs=1e-12)


@pytest.fixture(scope="module")
def hh(shared_data: Path) -> pl.DataFrame:
    return import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]


def test_sample_is_reproducible_and_uniform(hh: pl.DataFrame) -> None:
    a = audit_sample(hh, n=50, seed=1)
    b = audit_sample(hh, n=50, seed=1)
    c = audit_sample(hh, n=50, seed=2)
    assert a["pair_id"].to_list() == b["pair_id"].to_list()
    assert a["pair_id"].to_list() != c["pair_id"].to_list()
    assert a.height == 50 and a["pair_id"].n_unique() == 50
    assert a["sample_index"].to_list() == list(range(50))
    assert a["weight"].sum() == pytest.approx(hh.height)
    assert a["mislabeled"].null_count() == 50
    # the draw is numpy's choice without replacement from the seed, nothing else
    rows = np.random.default_rng(1).choice(hh.height, size=50, replace=False)
    assert a["pair_id"].to_list() == hh["pair_id"].gather(rows).to_list()
    # more than the table: every row once
    assert audit_sample(hh.head(10), n=50)["pair_id"].sort().to_list() == sorted(
        hh.head(10)["pair_id"].to_list()
    )


def test_stratified_allocation(hh: pl.DataFrame) -> None:
    table = hh.with_columns((pl.int_range(pl.len()) % 10 == 0).alias("flagged"))
    prop = audit_sample(table, n=50, stratify_by="flagged")
    counts = dict(prop.group_by("flagged").len().iter_rows())
    n_flag = int(table["flagged"].sum())
    assert counts[True] == round(50 * n_flag / table.height)  # 231 of 2303 -> 5
    equal = audit_sample(table, n=50, stratify_by="flagged", allocation="equal")
    assert dict(equal.group_by("flagged").len().iter_rows()) == {True: 25, False: 25}
    weights = dict(equal.group_by("flagged").agg(pl.col("weight").first()).iter_rows())
    assert weights[True] == pytest.approx(n_flag / 25)
    for sample in (prop, equal):
        assert sample["weight"].sum() == pytest.approx(table.height)


def _reviewed(k: int, n: int, extra_unreviewed: int = 0) -> pl.DataFrame:
    verdicts = [True] * k + [False] * (n - k) + [None] * extra_unreviewed
    return pl.DataFrame({"mislabeled": verdicts}, schema={"mislabeled": pl.Boolean})


def test_mislabel_rate_and_warning_rule() -> None:
    rep = mislabel_rate(_reviewed(6, 50, extra_unreviewed=3)).report
    ref = proportion_confint(6, 50, method="wilson")
    assert rep["reviewed"] == 50 and rep["not_reviewed"] == 3 and rep["mislabeled"] == 6
    assert rep["rate"] == 0.12 and rep["method"] == "wilson"
    assert rep["low"] == pytest.approx(ref[0], abs=1e-12)
    assert rep["high"] == pytest.approx(ref[1], abs=1e-12)
    assert rep["warn"] and not rep["above_confidently"]  # the point estimate rule
    assert not mislabel_rate(_reviewed(5, 50)).report["warn"]  # exactly 10% is not above 10%
    assert not mislabel_rate(_reviewed(9, 50)).report["above_confidently"]  # low = 0.0977
    assert mislabel_rate(_reviewed(10, 50)).report["above_confidently"]  # low = 0.1124
    assert mislabel_rate(_reviewed(0, 50)).report["below_confidently"]  # high = 0.0714
    assert not mislabel_rate(_reviewed(1, 50)).report["below_confidently"]  # high = 0.105


def test_weighted_estimate_uses_kish_effective_n() -> None:
    # 25 flagged items (weight 2) with 10 mislabeled, 25 others (weight 40) with 1
    verdicts = [True] * 10 + [False] * 15 + [True] * 1 + [False] * 24
    weights = [2.0] * 25 + [40.0] * 25
    rep = mislabel_rate(pl.DataFrame({"mislabeled": verdicts, "weight": weights})).report
    w = np.array(weights)
    rate = (w * np.array(verdicts)).sum() / w.sum()
    n_eff = w.sum() ** 2 / (w**2).sum()
    ref = proportion_confint(rate * n_eff, n_eff, method="wilson")
    assert rep["method"] == "wilson_kish_effective_n"
    assert rep["rate"] == pytest.approx(rate, abs=1e-15)
    assert rep["n_effective"] == pytest.approx(n_eff)
    assert (rep["low"], rep["high"]) == pytest.approx(ref, abs=1e-12)


def test_interval_covers_a_known_rate(hh: pl.DataFrame) -> None:
    """Seeded simulation: 20% of HH pairs marked mislabeled; 300 audits of 50 each."""
    rng = np.random.default_rng(11)
    truth = hh.with_columns(pl.Series("truth", rng.random(hh.height) < 0.2))
    true_rate = float(truth["truth"].mean())  # type: ignore[arg-type]
    covered = warned = 0
    for seed in range(300):
        s = audit_sample(truth, n=50, seed=seed).with_columns(pl.col("truth").alias("mislabeled"))
        rep = mislabel_rate(s).report
        covered += rep["low"] <= true_rate <= rep["high"]
        warned += rep["warn"]
    assert 0.92 <= covered / 300 <= 0.98
    assert warned / 300 > 0.9  # at a true 20%, the point-estimate rule nearly always warns

"""Audit sample: draw items for human review, and estimate the mislabel rate from the review.

`audit_sample` draws a reproducible uniform random sample (numpy's PCG64 from `seed`), or a
stratified one. Every sampled row carries `weight` = (rows in its stratum) / (rows drawn
from it): the number of table rows it stands for. With a uniform or proportional sample the
weights are (nearly) equal and the plain Wilson interval applies; with
`allocation="equal"` (for example to over-sample flagged items: stratify by an
`is_flagged` column) small strata are over-represented and `mislabel_rate` reweights.

`mislabel_rate` reads the reviewer's verdicts in `mislabeled` (bool; null = not reviewed,
left out and counted) and returns the share with a Wilson score interval. With unequal
weights the estimate is the weighted share (the stratified estimator) and the interval is
Wilson's with Kish's effective sample size n_eff = (sum w)^2 / sum w^2 (an approximation;
the report says which was used).

Warning rule (decision): `warn` is True when the point estimate exceeds `warn_above`
(default 0.10, the "more than 10% mislabeled" rule of thumb). The point estimate, not the
lower bound, because with the default 50 reviews the lower bound passes 10% only from 10
mislabeled of 50 (a 20% sample rate: 10/50 gives 0.112, 9/50 gives 0.098), so a lower-bound
rule would stay silent on most data sets that do break the rule of thumb. The report also says
whether the whole interval lies above (`above_confidently`) or below
(`below_confidently`) the threshold, so a caller can apply the stricter rule.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import polars as pl
from scipy.stats import norm

from prefdata.errors import ContractError, OptionError
from prefdata.stage import StageResult, Table, stage

REVIEW_COLUMN = "mislabeled"


def wilson_interval(
    successes: np.ndarray | float, n: np.ndarray | float, *, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion (vectorised; n = 0 gives (0, 1)).

    Same formula as statsmodels' proportion_confint(method="wilson"); `successes` may be
    fractional (a weighted count with an effective n).
    """
    k = np.asarray(successes, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    z = norm.isf((1 - confidence) / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / m
        denom = 1 + z**2 / m
        center = (p + z**2 / (2 * m)) / denom
        half = z / denom * np.sqrt(p * (1 - p) / m + z**2 / (4 * m**2))
        lo = np.where(m > 0, center - half, 0.0)
        hi = np.where(m > 0, center + half, 1.0)
    return lo, hi


def _largest_remainder(sizes: np.ndarray, n: int, equal: bool) -> np.ndarray:
    """How many to draw from each stratum: proportional (or equal) shares summing to n."""
    target = np.full(len(sizes), n / len(sizes)) if equal else n * sizes / sizes.sum()
    take = np.minimum(np.floor(target).astype(np.int64), sizes)
    # hand out what is left by largest remainder, never more than a stratum holds
    while take.sum() < n:
        room = take < sizes
        if not room.any():
            break
        remainder = np.where(room, target - take, -np.inf)
        take[int(np.argmax(remainder))] += 1
    return take


def audit_sample(
    table: pl.DataFrame,
    *,
    n: int = 50,
    seed: int = 0,
    stratify_by: str | None = None,
    allocation: Literal["proportional", "equal"] = "proportional",
) -> pl.DataFrame:
    """A random sample of rows for human review.

    Input: any table (usually pairs). Output: the sampled rows (all input columns), in draw
    order, plus `sample_index` (0..), `weight` (rows of the table each stands for), and an
    empty `mislabeled` (Boolean) column for the reviewer; with `stratify_by`, strata are
    that column's values and `allocation` splits n across them ("proportional" to their
    size, or "equal"). n larger than the table takes every row. The same seed and table
    give the same sample on every machine.
    """
    if n < 0:
        raise OptionError("must be >= 0", option="n")
    if REVIEW_COLUMN in table.columns:
        raise ContractError(
            f"the table already has a '{REVIEW_COLUMN}' column", column=REVIEW_COLUMN
        )
    rng = np.random.default_rng(seed)
    height = table.height
    if stratify_by is None:
        take = min(n, height)
        rows = rng.choice(height, size=take, replace=False) if take else np.zeros(0, np.int64)
        weights = np.full(take, height / take if take else 0.0)
    else:
        if stratify_by not in table.columns:
            raise ContractError(f"no column '{stratify_by}' to stratify by", column=stratify_by)
        # strata in order of first appearance, so the draw does not depend on sort order
        groups = (
            table.select(pl.col(stratify_by))
            .with_row_index("__row")
            .group_by(stratify_by, maintain_order=True)
            .agg(pl.col("__row"))["__row"]
            .to_list()
        )
        sizes = np.array([len(g) for g in groups], dtype=np.int64)
        take_per = _largest_remainder(sizes, min(n, height), allocation == "equal")
        picked: list[np.ndarray] = []
        wts: list[np.ndarray] = []
        for members, k in zip(groups, take_per.tolist(), strict=True):
            if k:
                picked.append(
                    rng.choice(np.asarray(members, dtype=np.int64), size=k, replace=False)
                )
                wts.append(np.full(k, len(members) / k))
        rows = np.concatenate(picked) if picked else np.zeros(0, np.int64)
        weights = np.concatenate(wts) if wts else np.zeros(0)
        # interleave strata in a random review order, so reviewers see a mix
        order = rng.permutation(len(rows))
        rows, weights = rows[order], weights[order]
    return table[rows].with_columns(
        pl.Series("sample_index", np.arange(len(rows)), dtype=pl.Int64),
        pl.Series("weight", weights, dtype=pl.Float64),
        pl.lit(None, pl.Boolean).alias(REVIEW_COLUMN),
    )


@stage("audit-rate")
def mislabel_rate(
    reviewed: Annotated[pl.DataFrame, Table()],
    *,
    confidence: float = 0.95,
    warn_above: float = 0.10,
) -> StageResult:
    """The mislabel rate of a reviewed audit sample, with a Wilson interval; warns above
    `warn_above`.

    Input columns: `mislabeled` (bool; null = not reviewed), optional `weight` (from
    audit_sample). Output: `reviewed`, `not_reviewed`, `mislabeled`, `rate`, `low`, `high`,
    `confidence`, `method` ("wilson" or "wilson_kish_effective_n"), `n_effective`,
    (with nothing reviewed: rate None, interval 0-1, no flag set),
    `warn_above`, `warn` (rate > warn_above), `above_confidently` (low > warn_above),
    `below_confidently` (high < warn_above); a warning line when `warn`. See the module doc
    for the warning rule.

    Example: prefdata audit-rate issues.sample.parquet

    Args:
        reviewed: the review sample from `prefdata audit`, with `mislabeled` filled in
        confidence: the level of the interval
        warn_above: warn when the estimated rate is above this
    """
    if REVIEW_COLUMN not in reviewed.columns:
        raise ContractError(
            f"no '{REVIEW_COLUMN}' column with the review verdicts", column=REVIEW_COLUMN
        )
    verdicts = reviewed[REVIEW_COLUMN].cast(pl.Boolean)
    done = verdicts.is_not_null().to_numpy()
    bad = verdicts.fill_null(False).to_numpy()[done]
    if "weight" in reviewed.columns:
        w = reviewed["weight"].cast(pl.Float64).fill_null(1.0).to_numpy()[done]
    else:
        w = np.ones(int(done.sum()))
    n = int(done.sum())
    equal = n == 0 or bool(np.allclose(w, w[0], rtol=1e-9, atol=0))
    if equal:
        n_eff = float(n)
        k = float(bad.sum())
        rate = k / n if n else None
        method = "wilson"
    else:
        n_eff = float(w.sum() ** 2 / (w**2).sum())
        rate = float((w * bad).sum() / w.sum())
        k = rate * n_eff
        method = "wilson_kish_effective_n"
    lo, hi = wilson_interval(k, n_eff, confidence=confidence)
    low, high = float(lo), float(hi)
    warn = rate is not None and rate > warn_above
    report = {
        "reviewed": n,
        "not_reviewed": int((~done).sum()),
        "mislabeled": int(bad.sum()),
        "rate": rate,
        "low": low,
        "high": high,
        "confidence": confidence,
        "method": method,
        "n_effective": n_eff,
        "warn_above": warn_above,
        "warn": warn,
        "above_confidently": bool(n and low > warn_above),
        "below_confidently": bool(n and high < warn_above),
    }
    warnings = [f"estimated mislabel rate is above {warn_above:.0%}"] if warn else []
    return StageResult(report=report, warnings=warnings)

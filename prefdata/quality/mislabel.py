"""One mislabel probability per pair from every signal at hand, and a calibrated noise rate.

`mislabel_audit(pairs, ...)` reads the signals it is given as blocks
(prefdata.quality.signals), fits the latent flip model (prefdata.quality.flip_model) and
returns issue rows (issue = "mislabeled") and a report.

- The noise rate: rho of the flip model fitted on all pairs. With two or more informative
  blocks it comes from EM (identified by their agreement; see flip_model); when that fit is
  loose (bootstrap SE above `max_se`) or only one block is informative, from the anchor
  bound (`identification` says which). `noise_rate_se` and a 90% interval come from
  `bootstrap` refits on resampled pairs.
- P(flipped) per pair: out of fold. The pairs are dealt into `folds` folds
  (crossfit_reward.fold_of); each fold's probabilities come from a flip model fitted on the
  other folds, so a pair's own readings never shape the histograms that score it. The
  content readings themselves are out of fold already (the embedding classifier and the
  reward model are cross-fitted).
- Flags: the pairs with the highest P(flipped), as many as maximise the expected F1 under
  those probabilities, and never more than `flag_cap` x the estimated rate x n (so a loose
  signal cannot flag half the data, as confident learning did: 38% flagged for 15% flips);
  when the rate is only an anchor bound, never more than the rate x n.

Issue rows: item_id (pair_id), issue, score = 1 - P(flipped) (lower = worse), is_issue,
reason (the probability and each signal's reading), and the extra columns `p_flipped` and
`signals` (the blocks that had a reading for the pair, comma-separated).

Report (`report["mislabel"]` in prefdata audit): noise_rate, noise_rate_se, noise_rate_90,
identification, blocks (those that identified rho), anchor_block (anchor fits), em_rate and
em_se (the EM figures when the anchor replaced them), signals (pairs with a reading, per
block), flagged, flag_rate, max_flag_rate, threshold (the smallest flagged P(flipped)),
expected_precision, expected_recall, mean_p_flipped, folds, seed. `label_noise_rate(report)`
reads the rate back for training (the robust DPO loss's flip rate).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefdata.errors import InputError
from prefdata.quality import flip_model as fm
from prefdata.quality.crossfit_reward import fold_of
from prefdata.quality.signals import describe_reading
from prefdata.schema import conform

ISSUE = "mislabeled"
MAX_SE = 0.04  # an EM rate looser than this is not trusted over the anchor bound
# Blocks whose readings are evidence about the label itself. Only these estimate the noise
# rate: on HH-RLHF, EM over the content model and the rule checks (which find broken pairs,
# and whose direction differs from data set to data set) drifted to a rate near 0 on some
# seeds; rule checks still enter every pair's probability.
LABEL_BLOCKS = ("content", "judges", "humans", "answers", "consistency")


def mislabel_audit(
    pairs: pl.DataFrame,
    blocks: Sequence[fm.Block],
    *,
    folds: int = 5,
    seed: int = 0,
    flag_cap: float = 1.5,
    bootstrap: int = 50,
    max_se: float = MAX_SE,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Issue rows and report of the combined mislabel audit (see the module doc).

    Args:
        pairs: the pairs the blocks were read from (pair_id; same rows, same order).
        blocks: the signals as flip-model blocks (prefdata.quality.signals builds them).
        folds: folds of the out-of-fold flip model.
        seed: fold assignment and bootstrap draws.
        flag_cap: at most flag_cap x the estimated noise rate of the pairs are flagged.
        bootstrap: refits on resampled pairs for the rate's standard error (0: none).
        max_se: an EM rate with a larger bootstrap SE gives way to the anchor bound.
    """
    if not any(b.name in LABEL_BLOCKS and b.present.any() for b in blocks):
        raise InputError(
            "the mislabel audit needs a signal about the labels: a content model, judge or "
            "human votes, or reference answers"
        )
    n = pairs.height
    if any(b.level.shape[0] != n for b in blocks):
        raise InputError("every signal needs one reading slot per pair")
    rate = LABEL_BLOCKS
    fit = fm.fit_flip_model(blocks, rate_blocks=rate)
    if fit.identification == "none":
        empty = _issue_rows(
            pairs.head(0),
            [b.subset(np.zeros(0, dtype=np.int64)) for b in blocks],
            np.zeros(0),
            np.zeros(0, dtype=bool),
        )
        return empty, {
            "noise_rate": None,
            "identification": "none",
            "skipped": "no signal about the labels has enough decisive readings",
            "pairs": n,
        }
    mode = "anchor" if fit.identification == "anchor" else "auto"

    def spread(mode: str, start: float) -> np.ndarray | None:
        if not bootstrap:
            return None
        return fm.bootstrap_rho(
            blocks, draws=bootstrap, seed=seed, mode=mode, start=start, rate_blocks=rate
        )

    boot = spread(mode, fit.rho)
    extra: dict[str, Any] = {}
    if fit.identification == "em" and boot is not None and boot.size > 1:
        se = float(np.std(boot, ddof=1))
        if se > max_se:
            extra = {"em_rate": fit.rho, "em_se": se}
            fit = fm.fit_flip_model(blocks, mode="anchor", rate_blocks=rate)
            mode = "anchor"
            boot = spread(mode, fit.rho)
    fold = fold_of(pairs["pair_id"], folds, seed)
    q = fm.crossfit_posterior(blocks, fold, mode=mode, rate_blocks=rate)
    # An anchor rate is an upper bound already: flag at most that many, not flag_cap x it.
    cap = (min(flag_cap, 1.0) if mode == "anchor" else flag_cap) * fit.rho
    flags = fm.expected_f1_flags(q, max_share=cap)
    issues = _issue_rows(pairs, blocks, q, flags)
    report = {**fm.summary(fit, boot), **extra}
    k = int(flags.sum())
    report.update(
        pairs=n,
        signals={b.name: int(b.present.sum()) for b in blocks},
        flagged=k,
        flag_rate=k / n if n else 0.0,
        max_flag_rate=cap,
        threshold=float(q[flags].min()) if k else None,
        expected_precision=float(q[flags].mean()) if k else None,
        expected_recall=float(q[flags].sum() / q.sum()) if k and q.sum() > 0 else None,
        mean_p_flipped=float(q.mean()) if n else None,
        folds=folds,
        seed=seed,
    )
    return issues, report


def _issue_rows(
    pairs: pl.DataFrame, blocks: Sequence[fm.Block], q: np.ndarray, flags: np.ndarray
) -> pl.DataFrame:
    reasons, which = [], []
    for i in range(pairs.height):
        readings = [r for b in blocks if (r := describe_reading(b, i)) is not None]
        which.append(",".join(b.name for b in blocks if b.level[i] >= 0))
        reasons.append(
            f"P(chosen and rejected swapped) = {q[i]:.3f} from "
            + ("; ".join(readings) if readings else "no signal (the noise rate)")
            + ("; flagged" if flags[i] else "")
        )
    table = pl.DataFrame(
        {
            "item_id": pairs["pair_id"].cast(pl.String),
            "issue": [ISSUE] * pairs.height,
            "score": np.clip(1.0 - q, 0.0, 1.0),
            "is_issue": flags,
            "reason": reasons,
            "p_flipped": q,
            "signals": which,
        },
        schema_overrides={"score": pl.Float64, "p_flipped": pl.Float64},
    )
    return conform(table, "issues").sort("score", maintain_order=True)


def label_noise_rate(report: dict[str, Any] | str | Path) -> float:
    """The estimated label-noise rate from an audit report (the dict `prefdata.quality.audit`
    returns, its JSON file, or the `mislabel` part alone): what `label_noise` of the robust
    DPO loss should be. A report without the combined audit is an InputError."""
    source = None
    if not isinstance(report, dict):
        source = str(report)
        try:
            report = json.loads(Path(report).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read the audit report: {exc}", source=source) from None
    assert isinstance(report, dict)
    part = report.get("mislabel", report)
    rate = part.get("noise_rate") if isinstance(part, dict) else None
    if rate is None:
        raise InputError(
            "the report has no estimated noise rate (the combined mislabel audit ran on no "
            "signal about the labels)",
            source=source,
            column="mislabel.noise_rate",
        )
    return float(rate)

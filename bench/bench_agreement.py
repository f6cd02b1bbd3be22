"""Benchmark: Krippendorff's alpha on 1,000,000 items x 5 annotators with 20% of the votes
missing, prefdata against the `krippendorff` package, in the same run, on the same matrix.

    .venv/bin/python bench/bench_agreement.py              # 1,000,000 items
    .venv/bin/python bench/bench_agreement.py --quick      # 100,000 items (smoke run)
    .venv/bin/python bench/bench_agreement.py --full       # also agreement() end to end

Data: ratings 1-5; each item has a true rating; each annotator gives it with probability
0.8 and otherwise a uniform random rating; then each vote is missing with probability 0.2
(seeded). Both libraries get the same annotators x items float matrix (NaN = missing).

Timing: each call once to warm up, then the best of `--repeat` runs (time.perf_counter).
Target (from the issue): prefdata time / krippendorff time <= 1 and the same value
(|difference| <= 1e-9) for nominal and interval alpha (ordinal is reported too).

`--full` also times prefdata.quality.agreement.agreement() on the same votes as a long
annotations table (one row per vote: item_id, annotator, annotator_kind, label), with the
default 1000 bootstrap resamples: every statistic, not just alpha; it has no baseline.
Figures are printed and written as JSON to bench/out/.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import krippendorff

from prefdata.quality.agreement import krippendorff_alpha

OUT_DIR = Path(__file__).resolve().parent / "out"
RATIO_TARGET = 1.0
VALUE_TOL = 1e-9


def _matrix(items: int, annotators: int, missing: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 6, items)
    noise = rng.integers(1, 6, (annotators, items))
    m = np.where(rng.random((annotators, items)) < 0.8, truth, noise).astype(np.float64)
    m[rng.random((annotators, items)) < missing] = np.nan
    return m


def _best(fn: Callable[[], float], repeat: int) -> tuple[float, float]:
    """(value, best wall seconds) after one warm-up call."""
    value = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return value, min(times)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _full(m: np.ndarray, repeat: int) -> dict[str, Any]:
    import polars as pl

    from prefdata.quality.agreement import agreement

    ann, item = np.nonzero(~np.isnan(m))
    votes = pl.DataFrame(
        {
            "item_id": pl.Series(item).cast(pl.String),
            "annotator": pl.Series(ann).cast(pl.String),
            "annotator_kind": pl.repeat("human", len(ann), eager=True),
            "label": pl.Series(m[ann, item].astype(np.int64)).cast(pl.String),
        }
    )
    result: dict[str, Any] = {}

    def run() -> float:
        report = agreement(votes, level="interval", bootstrap=1000, seed=0).report
        result["report"] = report
        return float(report["krippendorff_alpha"]["interval"]["value"])

    value, seconds = _best(run, repeat)
    report = result["report"]
    return {
        "votes": len(ann),
        "seconds": seconds,
        "alpha_interval": value,
        "alpha_interval_ci": report["krippendorff_alpha"]["interval"]["ci"],
        "fleiss_kappa": report["fleiss_kappa"]["value"],
        "cohen_pairs": len(report["cohen_kappa"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--annotators", type=int, default=5)
    parser.add_argument("--missing", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="100,000 items")
    parser.add_argument("--full", action="store_true", help="also time agreement() end to end")
    args = parser.parse_args()
    items = 100_000 if args.quick else args.items

    m = _matrix(items, args.annotators, args.missing, args.seed)
    print(
        f"{items:,} items x {args.annotators} annotators, {np.isnan(m).mean():.1%} missing, "
        f"ratings 1-5; best of {args.repeat} after a warm-up"
    )
    rows = []
    ok = True
    for level in ("nominal", "interval", "ordinal"):
        ours, t_ours = _best(lambda lv=level: krippendorff_alpha(m, lv), args.repeat)  # type: ignore[misc]
        ref, t_ref = _best(
            lambda lv=level: float(krippendorff.alpha(m, level_of_measurement=lv)),  # type: ignore[misc]
            args.repeat,
        )
        ratio = t_ours / t_ref
        diff = abs(ours - ref)
        meets = ratio <= RATIO_TARGET and diff <= VALUE_TOL
        ok &= meets or level == "ordinal"
        rows.append(
            {
                "level": level,
                "prefdata_s": t_ours,
                "krippendorff_s": t_ref,
                "ratio": ratio,
                "alpha": ours,
                "alpha_krippendorff": ref,
                "abs_diff": diff,
                "meets_target": meets,
            }
        )
        print(
            f"  {level:8s}  prefdata {t_ours:7.3f} s   krippendorff {t_ref:7.3f} s   "
            f"ratio {ratio:5.2f} (target <= {RATIO_TARGET})   alpha {ours:.12f}   "
            f"|diff| {diff:.1e}   {'ok' if meets else 'MISSED'}"
        )
    result: dict[str, Any] = {
        "benchmark": "krippendorff_alpha",
        "items": items,
        "annotators": args.annotators,
        "missing": args.missing,
        "seed": args.seed,
        "repeat": args.repeat,
        "levels": rows,
        "krippendorff_version": getattr(krippendorff, "__version__", None),
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
    }
    if args.full:
        full = _full(m, 1)
        result["agreement_end_to_end"] = full
        print(
            f"  agreement() end to end on {full['votes']:,} vote rows (all statistics, 1000 "
            f"bootstrap resamples): {full['seconds']:.2f} s"
        )
    result["peak_rss_bytes"] = _peak_rss()
    print(f"  peak resident memory {result['peak_rss_bytes'] / 2**20:,.0f} MiB")
    OUT_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = OUT_DIR / f"bench_agreement-{items}-{stamp}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"  written to {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

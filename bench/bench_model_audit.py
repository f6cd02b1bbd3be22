"""Benchmark: the model-based mislabel audit finding flips injected into HH-RLHF.

    .venv/bin/python bench/bench_model_audit.py                    # seeds 0 1 2
    .venv/bin/python bench/bench_model_audit.py --cache-dir /tmp/x # cold: embed everything

Data: Anthropic HH-RLHF harmless-base test (../shared/data/hh_rlhf, 2,303 pairs after the
importer's checks), with 15% of the pairs' chosen / rejected swapped (seeded). The flips
are the positives; a detector ranks pairs and flags some.

Compared on the flips:
- ours: prefdata.quality.model_audit(method="embeddings"): all-MiniLM-L6-v2 embeddings of
  prompt (last user turn), chosen and rejected, embedded separately; out-of-fold logistic
  regression on [eA - eB, (eA - eB) * eP] (unit-RMS features, C chosen by out-of-fold log
  loss); score = P(given label right); flags from our confident learning.
- cleanlab, same probabilities: cleanlab.rank.get_label_quality_scores (ranking) and
  cleanlab.filter.find_label_issues (flags, default prune_by_noise_rate) on the very same
  out-of-fold probabilities.
- cleanlab, its usual recipe: sklearn's LogisticRegression() with its defaults (C=1,
  intercept, unscaled features) through cross_val_predict(cv=5, method="predict_proba") on
  the same pair features, then the same two cleanlab calls: what a user gets without our
  classifier choices.

Figures: AUROC (flip vs not, from the ranking), precision@k with k = number of flips, and
precision / recall / F1 of the flag set; embedding wall time, texts and pairs per second
(only meaningful when texts were not cached: the run prints how many were). Printed and
written as JSON to bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from prefdata.io.importers.hh_rlhf import import_hh_rlhf
from prefdata.quality import model_audit as ma
from prefdata.quality.embeddings import cache_hits, embed_pairs, prompt_text

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"
DATA = (
    Path(os.environ.get("PREFDATA_SHARED_DATA", REPO.parent / "shared" / "data"))
    / "hh_rlhf"
    / "harmless-base_test.jsonl.gz"
)


def _flip(pairs: pl.DataFrame, rate: float, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    flip = np.zeros(pairs.height, dtype=bool)
    flip[rng.choice(pairs.height, round(rate * pairs.height), replace=False)] = True
    mask = pl.Series(flip)
    return (
        pairs.with_columns(
            chosen=pl.when(mask).then(pl.col("rejected")).otherwise(pl.col("chosen")),
            rejected=pl.when(mask).then(pl.col("chosen")).otherwise(pl.col("rejected")),
        ),
        flip,
    )


def _figures(score: np.ndarray, flags: np.ndarray, flip: np.ndarray) -> dict[str, float]:
    """score: lower = more likely flipped; flags: the detector's flag set."""
    k = int(flip.sum())
    tp = int((flags & flip).sum())
    precision = tp / max(int(flags.sum()), 1)
    recall = tp / k
    return {
        "auroc": float(roc_auc_score(flip, -score)),
        "precision_at_k": float(flip[np.argsort(score, kind="stable")[:k]].mean()),
        "flagged": int(flags.sum()),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if tp else 0.0,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    pairs = import_hh_rlhf(DATA).tables["pairs"]
    n = pairs.height
    texts = (
        [prompt_text(m) for m in pairs["prompt"].to_list()]
        + pairs["chosen"].to_list()
        + pairs["rejected"].to_list()
    )
    distinct = len(set(texts))
    cached = cache_hits(texts, cache_dir=args.cache_dir)
    start = time.perf_counter()
    ep, ec, er = embed_pairs(pairs, cache_dir=args.cache_dir, progress=not args.quiet)
    embed_s = time.perf_counter() - start
    new = distinct - cached
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "pairs": n,
        "flip_rate": args.flip_rate,
        "embedding": {
            "distinct_texts": distinct,
            "cached_before": cached,
            "embedded_now": new,
            "seconds": embed_s,
            # includes loading the model (about 5 s) when anything had to be embedded
            "texts_per_s": new / embed_s if new else None,
            "pairs_per_s": n / embed_s if new == distinct else None,
        },
        "runs": [],
    }
    print(
        f"HH-RLHF harmless-base test: {n} pairs, {distinct} distinct texts; "
        f"{cached} cached, {new} embedded in {embed_s:.1f} s"
        + (f" ({new / embed_s:.1f} texts/s)" if new else "")
    )
    for seed in args.seeds:
        flipped, flip = _flip(pairs, args.flip_rate, seed)
        start = time.perf_counter()
        issues, report = ma.model_audit(
            flipped, cache_dir=args.cache_dir, seed=seed, progress=False
        )
        audit_s = time.perf_counter() - start
        by_id = issues.select("item_id", "score", "is_issue")
        aligned = flipped.select("pair_id").join(
            by_id, left_on="pair_id", right_on="item_id", maintain_order="left"
        )
        p = aligned["score"].to_numpy()
        ours = _figures(p, aligned["is_issue"].to_numpy(), flip)

        labels, probs = ma.oriented(p, seed)
        same = _figures(
            get_label_quality_scores(labels, probs), find_label_issues(labels, probs), flip
        )

        # cleanlab's usual recipe on the same features and the same shown orientation
        c2 = np.where(flip[:, None], er, ec)
        r2 = np.where(flip[:, None], ec, er)
        swap = ma.side_swap(n, seed)
        a = np.where(swap[:, None], r2, c2)
        b = np.where(swap[:, None], c2, r2)
        x = ma.pair_features(ep, a, b)
        cv = StratifiedKFold(5, shuffle=True, random_state=seed)
        start = time.perf_counter()
        probs_default = cross_val_predict(
            LogisticRegression(max_iter=2000), x, labels, cv=cv, method="predict_proba"
        )
        default_s = time.perf_counter() - start
        recipe = _figures(
            get_label_quality_scores(labels, probs_default),
            find_label_issues(labels, probs_default),
            flip,
        )
        row = {
            "seed": seed,
            "flips": int(flip.sum()),
            "ours": ours,
            "cleanlab_same_probs": same,
            "cleanlab_default_recipe": recipe,
            "ours_C": report["C"],
            "ours_audit_seconds": audit_s,
            "cleanlab_recipe_fit_seconds": default_s,
            "estimated_noise_rate": report["estimated_noise_rate"],
            "agree_rate": report["agree_rate"],
        }
        result["runs"].append(row)
        print(
            f"\nseed {seed}: {row['flips']} flips; our C={report['C']:.3g}, audit "
            f"{audit_s:.1f} s (embeddings cached), estimated noise rate "
            f"{report['estimated_noise_rate']:.3f}"
        )
        print(
            f"  {'detector':34} {'AUROC':>6} {'P@k':>6} {'flagged':>8} {'prec':>6} "
            f"{'recall':>6} {'F1':>6}"
        )
        for name, fig in (
            ("ours", ours),
            ("cleanlab, same probabilities", same),
            ("cleanlab, LogisticRegression()", recipe),
        ):
            print(
                f"  {name:34} {fig['auroc']:6.3f} {fig['precision_at_k']:6.3f} "
                f"{fig['flagged']:8d} {fig['precision']:6.3f} {fig['recall']:6.3f} "
                f"{fig['f1']:6.3f}"
            )
    mean = {
        who: {
            key: float(np.mean([r[who][key] for r in result["runs"]]))
            for key in ("auroc", "precision_at_k", "f1")
        }
        for who in ("ours", "cleanlab_same_probs", "cleanlab_default_recipe")
    }
    result["mean"] = mean
    print("\nmean over seeds:")
    for who, fig in mean.items():
        print(
            f"  {who:26} AUROC {fig['auroc']:.3f}  P@k {fig['precision_at_k']:.3f}  "
            f"F1 {fig['f1']:.3f}"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--flip-rate", type=float, default=0.15)
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "embeddings")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args()
    result = run(args)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / "model_audit.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    print(f"\nwritten {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()

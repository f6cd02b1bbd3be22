"""Benchmark: mislabel detection and the noise-rate estimate on four kinds of data, against
cleanlab, a length heuristic and random flags, with seeded flips at 10, 20 and 30%.

    .venv/bin/python bench/bench_mislabel.py --quick --seed 11       # all kinds, small
    .venv/bin/python bench/bench_mislabel.py --seeds 10 11 12 13 14  # CPU sizes, five seeds
    .venv/bin/python bench/bench_mislabel.py --full                  # GPU sizes + cross-fit reward

Kinds (the flips are the positives; a detector ranks pairs and flags some):
- verifiable: GSM8K correct-vs-incorrect model solutions (../shared/data/gsm8k), reference
  answers from the GSM8K test file. Clean base labels (GSM8K's own grading).
- consensus: PandaLM items whose three human annotators agree (clean base labels), audited
  without those votes; the judges are the GPT-3.5 and PandaLM-7B verdicts shipped with the
  test set. A content-only variant (no judges) is reported beside it.
- controlled: short answers of the embedded SmolLM2 to the shipped sentiment prompts
  (prefdata/examples/sentiment_prompts.jsonl), labelled by the true reward, VADER sentiment
  (prefdata.label.programmatic.rule_label, pairing "all"); clean by construction. The
  candidates are generated once through the default call cache (the cold run costs ~20 min
  on 2 busy cores). bench/curation_effect.py labels the same way (best-vs-worst, 4 shorter
  candidates per prompt); `controlled()` is the one place to swap in its pairs.
- natural: HH-RLHF harmless-base test, naturally noisy: the estimated rate includes the base
  noise, so the injected rate is a lower bound of the truth there.

Detectors, all on the same flipped pairs:
- ours: prefdata.quality.audit.audit (combine=True): the embedding classifier's out-of-fold
  probabilities passed in as scores (so the baselines see exactly the same numbers), plus
  every signal the kind has (answers, judges, consistency, rules); flags = is_issue of
  "mislabeled" rows; ranking by p_flipped; the estimated rate = report["mislabel"]["noise_rate"].
- cleanlab, same probabilities: cleanlab.filter.find_label_issues (flags) and
  cleanlab.rank.get_label_quality_scores (ranking) on the embedding classifier's probabilities
  (folds grouped by prompt, exactly the audit's content reading).
- cleanlab, pair folds: the same on the classifier with folds by pair (as `model_audit` and
  confident learning alone use it): on data whose prompts have several pairs sharing
  responses it is the stronger classifier, since it learns a response's worth from sibling
  pairs. The headline's `cleanlab_f1` is the first (the brief's "same out-of-fold
  probabilities"); `cleanlab_pair_folds_f1` is this stronger one.
- cleanlab, LogisticRegression(): sklearn's defaults via cross_val_predict on the same pair
  features, then the same cleanlab calls (what a user gets without our classifier choices).
- length: flags the pairs whose chosen side is shorter, if most chosen sides are longer (or
  the reverse); ranks by the log-length difference.
- random: random scores, flags a random share equal to the injected rate.

Metrics: AUROC, average precision, F1 / precision / recall at each detector's default flags,
share flagged, the estimated vs injected noise rate. Seeds choose the flips and every
detector's folds. The printed table has one row per kind, rate and detector (mean over seeds,
with the SE when there are several); JSON in bench/out/. The LAST line printed is one JSON
object {kind: {"f1", "cleanlab_f1", "auroc", "noise_rate", "true_rate"}}, each the mean over
the three rates and the seeds (plus "cleanlab_pair_folds_f1" and "max_rate_error": the
largest |estimated - injected| over the runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from prefdata.quality import model_audit as ma
from prefdata.quality.audit import audit
from prefdata.quality.embeddings import embed_pairs

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"
DATA = Path(os.environ.get("PREFDATA_SHARED_DATA", REPO.parent / "shared" / "data"))
KINDS = ("verifiable", "consensus", "controlled", "natural")
RATES = (0.1, 0.2, 0.3)
# Sizes: quick (--quick), cpu (default) and full (--full, GPU). None = everything.
SIZES: dict[str, dict[str, int | None]] = {
    "quick": {"verifiable": 250, "consensus": None, "controlled": 120, "natural": 800},
    "cpu": {"verifiable": None, "consensus": None, "controlled": None, "natural": None},
    "full": {"verifiable": None, "consensus": None, "controlled": None, "natural": None},
}


@dataclass
class KindData:
    """One kind's clean pairs and what the audit may read besides them."""

    name: str
    pairs: pl.DataFrame
    clean_base: bool
    answers: pl.DataFrame | None = None
    annotations: pl.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


# --- the four kinds -----------------------------------------------------------------------


def verifiable(size: int | None) -> KindData:
    from prefdata.io.importers.math import import_gsm8k, import_gsm8k_solutions

    pairs = import_gsm8k_solutions(DATA / "gsm8k" / "example_model_solutions.jsonl").tables["pairs"]
    if size is not None:  # the first `size` questions, all their pairs
        first = pairs["prompt_id"].unique(maintain_order=True).head(size)
        pairs = pairs.filter(pl.col("prompt_id").is_in(first.implode()))
    answers = import_gsm8k(DATA / "gsm8k" / "test.jsonl").tables["prompts"]
    return KindData("verifiable", pairs, True, answers=answers)


def consensus(size: int | None) -> KindData:
    from prefdata.io.importers.pandalm import import_pandalm

    folder = DATA / "pandalm_testset"
    imported = import_pandalm(
        folder / "testset-v1.json",
        judges=[folder / "gpt-3.5-turbo-testset-v1.json", folder / "pandalm-7b-testset-v1.json"],
    )
    pairs = imported.tables["pairs"].filter(pl.col("agreement") == 1.0)
    if size is not None:
        pairs = pairs.head(size)
    judges = imported.tables["annotations"].filter(pl.col("annotator_kind") == "llm")
    return KindData("consensus", pairs, True, annotations=judges)


def controlled(size: int | None) -> KindData:
    """SmolLM2 answers to the sentiment prompts, labelled by VADER (the true reward): n=8,
    temperature 1.0, top_p 1.0, 32 new tokens, seed 0, through the default call cache; every
    pair of a prompt's candidates whose VADER scores differ by more than 0.3."""
    from prefdata.label.programmatic import rule_label
    from prefdata.llm.base import Params
    from prefdata.llm.cache import CallCache, default_cache_path
    from prefdata.llm.generate import generate
    from prefdata.llm.local import LocalClient

    prompts = pl.read_ndjson(REPO / "prefdata" / "examples" / "sentiment_prompts.jsonl")
    if size is not None:
        prompts = prompts.head(size)
    start = time.perf_counter()
    cache = CallCache(default_cache_path())
    try:
        generated = generate(
            prompts.select("prompt"),
            models=[LocalClient("smollm2", batch_size=32)],
            n=8,
            params=Params(temperature=1.0, top_p=1.0, max_new_tokens=32, seed=0),
            cache=cache,
            progress=False,
            chunk_size=16,
        )
        candidates, report = generated.tables["candidates"], generated.report
    finally:
        cache.close()
    seconds = time.perf_counter() - start
    labelled = rule_label(candidates, scorer="vader", pairing="all", min_margin=0.3)
    pairs = labelled.tables["pairs"]
    note = (
        f"{prompts.height} prompts x 8 candidates generated in {seconds:.0f} s "
        f"({report.get('cache', report)}); {pairs.height} pairs with a VADER gap above 0.3"
    )
    return KindData("controlled", pairs, True, notes=[note])


def natural(size: int | None) -> KindData:
    from prefdata.io.importers.hh_rlhf import import_hh_rlhf

    pairs = import_hh_rlhf(DATA / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    if size is not None:
        pairs = pairs.head(size)
    return KindData("natural", pairs, False)


LOADERS = {
    "verifiable": verifiable,
    "consensus": consensus,
    "controlled": controlled,
    "natural": natural,
}


# --- detectors ----------------------------------------------------------------------------


def flip_pairs(pairs: pl.DataFrame, rate: float, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    """Swap chosen and rejected of exactly round(rate x n) pairs, chosen with `seed`."""
    rng = np.random.default_rng([seed, round(rate * 1000)])
    flip = np.zeros(pairs.height, dtype=bool)
    flip[rng.choice(pairs.height, round(rate * pairs.height), replace=False)] = True
    m = pl.Series(flip)
    return (
        pairs.with_columns(
            chosen=pl.when(m).then(pl.col("rejected")).otherwise(pl.col("chosen")),
            rejected=pl.when(m).then(pl.col("chosen")).otherwise(pl.col("rejected")),
        ),
        flip,
    )


def figures(rank: np.ndarray, flags: np.ndarray, flip: np.ndarray) -> dict[str, float]:
    """rank: higher = more likely flipped; flags: the detector's default flag set."""
    tp = int((flags & flip).sum())
    precision = tp / max(int(flags.sum()), 1)
    recall = tp / max(int(flip.sum()), 1)
    return {
        "auroc": float(roc_auc_score(flip, rank)),
        "ap": float(average_precision_score(flip, rank)),
        "f1": 2 * precision * recall / (precision + recall) if tp else 0.0,
        "precision": precision,
        "recall": recall,
        "flagged": float(flags.mean()),
    }


def run_one(
    data: KindData,
    emb: tuple[np.ndarray, np.ndarray, np.ndarray],
    rate: float,
    seed: int,
    *,
    cache_dir: Path,
    reward: bool,
    reward_opts: dict[str, Any],
) -> dict[str, Any]:
    flipped, flip = flip_pairs(data.pairs, rate, seed)
    ep, ec, er = emb
    c2 = np.where(flip[:, None], er, ec)
    r2 = np.where(flip[:, None], ec, er)
    start = time.perf_counter()
    # the audit's content reading: folds grouped by prompt (prefdata.quality.model_audit)
    lengths = (
        flipped["chosen"].str.len_chars().to_numpy(),
        flipped["rejected"].str.len_chars().to_numpy(),
    )
    p, fit = ma.fit_out_of_fold(
        ep, c2, r2, seed=seed, groups=flipped["prompt_id"].to_numpy(), lengths=lengths
    )
    p = np.clip(p, 1e-9, 1 - 1e-9)
    # the classifier as confident learning alone uses it: folds by pair, so it also learns a
    # response's worth from the other pairs of its prompt (stronger on data with siblings)
    p_pair, _ = ma.fit_out_of_fold(ep, c2, r2, seed=seed)
    scores = pl.DataFrame(
        {
            "pair_id": flipped["pair_id"],
            "score_chosen": np.log(p / (1 - p)),
            "score_rejected": np.zeros(flipped.height),
        }
    )
    model = "embeddings+scores" if reward else "scores"
    if reward:
        # the cross-fitted reward model once per flip set (both audit variants read it)
        from prefdata.quality.crossfit_reward import crossfit_reward_scores

        scores, reward_report = crossfit_reward_scores(
            flipped,
            seed=seed,
            max_pairs_per_fold=reward_opts.get("max_pairs"),
            overrides=reward_opts.get("overrides", ()),
            progress=False,
        )
    row: dict[str, Any] = {
        "rate": rate,
        "seed": seed,
        "flips": int(flip.sum()),
        "true_rate": float(flip.mean()),
        "pairs": flipped.height,
    }
    variants = {"ours": data.annotations}
    if data.annotations is not None:
        variants["ours_content_only"] = None
    for name, votes in variants.items():
        t0 = time.perf_counter()
        audited = audit(
            flipped,
            annotations=votes,
            answers=data.answers,
            model=model,  # type: ignore[arg-type]
            scores=scores,
            sample=0,
            seed=seed,
            cache_dir=str(cache_dir),
        )
        issues, report = audited.tables["issues"], audited.report
        rows = flipped.select("pair_id").join(
            issues.filter(pl.col("issue") == "mislabeled"),
            left_on="pair_id",
            right_on="item_id",
            how="left",
            maintain_order="left",
        )
        part = report["mislabel"]
        q = rows["p_flipped"].fill_null(0.0).to_numpy()
        flags = rows["is_issue"].fill_null(False).to_numpy()
        row[name] = {
            **figures(q, flags, flip),
            "noise_rate": part.get("noise_rate"),
            "noise_rate_se": part.get("noise_rate_se"),
            "identification": part.get("identification"),
            "blocks": part.get("blocks"),
            "seconds": time.perf_counter() - t0,
        }
    labels, probs = ma.oriented(p, seed)
    row["cleanlab_same_probs"] = figures(
        -get_label_quality_scores(labels, probs), find_label_issues(labels, probs), flip
    )
    _, probs_pair = ma.oriented(p_pair, seed)
    row["cleanlab_pair_folds"] = figures(
        -get_label_quality_scores(labels, probs_pair), find_label_issues(labels, probs_pair), flip
    )
    swap = ma.side_swap(flipped.height, seed)
    x = ma.pair_features(ep, np.where(swap[:, None], r2, c2), np.where(swap[:, None], c2, r2))
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    probs_default = cross_val_predict(
        LogisticRegression(max_iter=2000), x, labels, cv=cv, method="predict_proba"
    )
    row["cleanlab_default_lr"] = figures(
        -get_label_quality_scores(labels, probs_default),
        find_label_issues(labels, probs_default),
        flip,
    )
    gap = np.log1p(flipped["chosen"].str.len_chars().to_numpy().astype(float)) - np.log1p(
        flipped["rejected"].str.len_chars().to_numpy().astype(float)
    )
    direction = 1.0 if (gap > 0).mean() >= 0.5 else -1.0
    row["length"] = figures(-direction * gap, direction * gap < 0, flip)
    rng = np.random.default_rng([seed, 7])
    random_flags = np.zeros(flip.size, dtype=bool)
    random_flags[rng.choice(flip.size, int(flip.sum()), replace=False)] = True
    row["random"] = figures(rng.random(flip.size), random_flags, flip)
    row["classifier_C"] = fit["C"]
    if reward:
        row["reward_held_out_accuracy"] = reward_report["held_out_accuracy"]
    row["seconds"] = time.perf_counter() - start
    return row


DETECTORS = (
    "ours",
    "ours_content_only",
    "cleanlab_same_probs",
    "cleanlab_pair_folds",
    "cleanlab_default_lr",
    "length",
    "random",
)


def _mean_se(values: list[float]) -> tuple[float, float]:
    a = np.asarray([v for v in values if v is not None], dtype=float)
    if a.size == 0:
        return float("nan"), float("nan")
    se = float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else float("nan")
    return float(a.mean()), se


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, rows in runs.items():
        per_rate: dict[str, Any] = {}
        for rate in sorted({r["rate"] for r in rows}):
            here = [r for r in rows if r["rate"] == rate]
            entry: dict[str, Any] = {
                "seeds": [r["seed"] for r in here],
                "true_rate": _mean_se([r["true_rate"] for r in here]),
            }
            for det in DETECTORS:
                if det not in here[0]:
                    continue
                entry[det] = {
                    key: _mean_se([r[det][key] for r in here])
                    for key in ("auroc", "ap", "f1", "precision", "recall", "flagged")
                }
                if det.startswith("ours"):
                    entry[det]["noise_rate"] = _mean_se([r[det]["noise_rate"] for r in here])
                    entry[det]["identification"] = sorted(
                        {str(r[det]["identification"]) for r in here}
                    )
            per_rate[f"{rate:g}"] = entry
        out[kind] = per_rate
    return out


def print_table(summary: dict[str, Any]) -> None:
    def fmt(ms: tuple[float, float]) -> str:
        m, se = ms
        return f"{m:.3f}" + (f"±{se:.3f}" if np.isfinite(se) else "")

    print(
        f"\n{'kind':11} {'rate':>4} {'detector':22} {'AUROC':>12} {'AP':>12} {'F1':>12} "
        f"{'flagged':>12} {'est. rate':>12}"
    )
    for kind, per_rate in summary.items():
        for rate, entry in per_rate.items():
            for det in DETECTORS:
                if det not in entry:
                    continue
                e = entry[det]
                est = fmt(e["noise_rate"]) if "noise_rate" in e else "-"
                print(
                    f"{kind:11} {rate:>4} {det:22} {fmt(e['auroc']):>12} {fmt(e['ap']):>12} "
                    f"{fmt(e['f1']):>12} {fmt(e['flagged']):>12} {est:>12}"
                )


def headline(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, rows in runs.items():
        est = [r["ours"]["noise_rate"] for r in rows]
        true = [r["true_rate"] for r in rows]
        out[kind] = {
            "f1": float(np.mean([r["ours"]["f1"] for r in rows])),
            "cleanlab_f1": float(np.mean([r["cleanlab_same_probs"]["f1"] for r in rows])),
            # the stronger baseline: cleanlab on the classifier with folds by pair
            "cleanlab_pair_folds_f1": float(
                np.mean([r["cleanlab_pair_folds"]["f1"] for r in rows])
            ),
            "auroc": float(np.mean([r["ours"]["auroc"] for r in rows])),
            "noise_rate": float(np.mean(est)),
            "true_rate": float(np.mean(true)),
            "max_rate_error": float(max(abs(e - t) for e, t in zip(est, true, strict=True))),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes, one seed")
    size.add_argument("--full", action="store_true", help="GPU sizes, cross-fit reward signal")
    parser.add_argument("--seed", type=int, default=None, help="one seed (with --quick)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--rates", type=float, nargs="+", default=list(RATES))
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="override every kind's size (questions, items, prompts or pairs)",
    )
    parser.add_argument(
        "--reward",
        action="store_true",
        help="add the cross-fitted reward model (on by default with --full)",
    )
    parser.add_argument(
        "--reward-pairs",
        type=int,
        default=100,
        help="CPU: train each reward fold on at most this many pairs",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="embedding cache (default: the prefdata cache)"
    )
    args = parser.parse_args(argv)
    from prefdata.paths import cache_root

    cache_dir = args.cache_dir or cache_root() / "embeddings"
    mode = "quick" if args.quick else ("full" if args.full else "cpu")
    default_seeds = [0] if args.quick else ([10, 11, 12] if args.full else [10, 11, 12, 13, 14])
    seeds = [args.seed] if args.seed is not None else (args.seeds or default_seeds)
    reward = args.reward or args.full
    # GPU: every pair in training, full-length sequences; CPU: small folds, short sequences
    reward_opts: dict[str, Any] = (
        {
            "max_pairs": None,
            "overrides": (
                "max_length=1024",
                "per_device_train_batch_size=8",
                "gradient_accumulation_steps=1",
            ),
        }
        if args.full
        else {"max_pairs": args.reward_pairs, "overrides": ("max_length=256",)}
    )
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "load_before": os.getloadavg()[0],
        "mode": mode,
        "seeds": seeds,
        "rates": args.rates,
        "reward": reward,
        "kinds": {},
    }
    runs: dict[str, list[dict[str, Any]]] = {}
    for kind in args.kinds:
        t0 = time.perf_counter()
        data = LOADERS[kind](args.size if args.size is not None else SIZES[mode][kind])
        emb = embed_pairs(data.pairs, cache_dir=cache_dir, progress=False)
        load_s = time.perf_counter() - t0
        print(
            f"{kind}: {data.pairs.height} pairs (loaded and embedded in {load_s:.0f} s)"
            + ("; " + "; ".join(data.notes) if data.notes else ""),
            flush=True,
        )
        runs[kind] = []
        for rate in args.rates:
            for seed in seeds:
                row = run_one(
                    data,
                    emb,
                    rate,
                    seed,
                    cache_dir=cache_dir,
                    reward=reward,
                    reward_opts=reward_opts,
                )
                runs[kind].append(row)
                o, c = row["ours"], row["cleanlab_same_probs"]
                print(
                    f"  rate {rate:g} seed {seed}: ours F1 {o['f1']:.3f} AUROC {o['auroc']:.3f}"
                    f" rate {o['noise_rate']:.3f} ({o['identification']}) vs true "
                    f"{row['true_rate']:.3f}; cleanlab F1 {c['f1']:.3f}; {row['seconds']:.0f} s",
                    flush=True,
                )
        result["kinds"][kind] = {
            "pairs": data.pairs.height,
            "clean_base": data.clean_base,
            "notes": data.notes,
            "runs": runs[kind],
        }
    result["summary"] = summarise(runs)
    result["headline"] = headline(runs)
    result["load_after"] = os.getloadavg()[0]
    print_table(result["summary"])
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = OUT_DIR / f"bench_mislabel-{mode}-{stamp}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(out)
    print(
        f"\nwritten {out.relative_to(REPO)}; load average {result['load_before']:.1f} before, "
        f"{result['load_after']:.1f} after"
    )
    print(json.dumps(result["headline"]))


if __name__ == "__main__":
    main()

"""Experiment: does curation give a measurably better model? A controlled run with a known
true reward (the DPO paper's controlled-sentiment setting, on short chat answers).

    OMP_NUM_THREADS=1 .venv/bin/python bench/curation_effect.py --partial bench/out/ce-40.json
    .venv/bin/python bench/curation_effect.py --flip-rate 0.2 --partial bench/out/ce-20.json \\
        --reuse-clean bench/out/ce-40.json      # the same clean runs serve every flip rate
    .venv/bin/python bench/curation_effect.py --combine bench/out/ce-40.json   # the table
    .venv/bin/python bench/curation_effect.py --quick --seed 101   # clean, noisy, best curation
    .venv/bin/python bench/curation_effect.py --full                # the GPU size (bench/gpu.sh)

The loop, through prefdata's own functions, as a user would run it (parts in
curation_effect_lib.py):
1. prompts: prefdata/examples/sentiment_prompts.jsonl (60 everyday topics x 4 phrasings);
   whole topics are held out (every 4th), so held-out prompts share no topic with training.
2. generate: the embedded SmolLM2 samples `--candidates` answers of `--answer-tokens` per
   prompt (temperature 1, seed 0) through the default call cache: the same requests as
   bench_mislabel's controlled kind, so a re-run (or that bench) generates nothing.
3. label: `rule_label(scorer="vader", pairing="all", min_margin=...)`: every pair of a
   prompt's answers whose true reward (VADER compound sentiment) differs by more than the
   margin: several pairs per prompt (the pool).
4. noise: `flip_labels` swaps exactly round(rate x n) pairs of the pool, chosen with the seed.
5. audit: `prefdata.quality.audit(model="embeddings")` on the whole noisy pool: the combined
   audit (embedding classifier, consistency of pairs sharing an answer, rule checks) gives
   each pair P(flipped) out of fold (issue rows `mislabeled`, `p_flipped`), its flags and a
   calibrated noise rate (report["mislabel"]["noise_rate"]).
6. train: LoRA DPO (`prefdata.train.train("dpo")`, the built-in recipe), the same steps,
   batch, learning rate, seed and number of pairs seen (steps x batch, taken in the seed's
   order of the pool) in every condition:
   - clean: the true labels; noisy: the same pairs, flipped;
   - audit_drop: the first pairs in that order that the audit does not flag;
   - kept_clean (a control, only with --conditions): audit_drop's pairs with their true
     labels, which tells the audit's choice of pairs apart from its removal of flips;
   - audit_relabel: the noisy pairs, those with P(flipped) > 0.5 swapped back (only where
     the audit thinks a flip more likely than not: its per-pair precision > 0.5);
   - weighted: the noisy pairs, confidence = 1 - P(flipped), confidence_weighting
     "centered" (weight max(0, 2c - 1): a pair's expected gradient sign);
   - robust: the robust DPO loss, label_noise = the audit's *estimated* noise rate;
   - ipo: the IPO loss on the noisy pairs.
7. evaluate on the held-out prompts (curation_effect_lib.Evaluator): each policy's samples
   (`--samples` per prompt, temperature 1, the same sampling seeds in every run): mean true
   reward; KL to the base model; implicit-reward accuracy on clean held-out pairs.

Figures over seeds: mean and SE per condition; clean - noisy (the gap) with its SE; each
curation's recovered share (curated - noisy) / (clean - noisy) with a delta-method SE.
`--partial FILE` keeps every finished run (and the audit, and the base model's figures) in
FILE as it finishes, and a re-run with the same FILE skips what is there: nothing is lost to
a kill. `--quick` runs clean, noisy and the best curation (`QUICK_CURATION`, chosen from the
audit's figures on seeds 0-2) and prints as its last line one JSON object:
{"clean", "noisy", "curated", "recovered", "gap_se"} (gap_se: the standard error of
clean - noisy from the samples' paired differences). Results are written to bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import curation_effect_lib as lib  # noqa: E402
from curation_effect_lib import (  # noqa: E402,F401
    CONDITIONS,
    CONTROLS,
    CURATIONS,
    load_prompts,
    overrides,
    summarize,
)

from prefdata.label.programmatic import flip_labels  # noqa: E402

OUT_DIR = REPO / "bench" / "out"
EMBEDDINGS = REPO / ".cache" / "curation_effect" / "embeddings"
# The curation --quick runs, chosen from the audit's figures on seeds 0-2 (bench/README.md):
# at 40% flips dropping the flagged pairs leaves 19-24% flipped, relabelling those with
# P(flipped) > 0.5 leaves 27-31%. On those seeds it recovered 0.99 +- 0.28 of the gap; on
# seed 7, never tried before, --quick gave 0.78.
QUICK_CURATION = "audit_drop"
# What must match for a run in a --partial file to be reused (seeds, conditions and the
# output folder may differ).
RUN_KEYS = (
    "topics",
    "candidates",
    "answer_tokens",
    "margin",
    "steps",
    "batch",
    "samples",
    "heldout_pairs",
    "lr",
    "beta",
    "lora_r",
    "max_length",
    "model",
    "audit_model",
)

SIZES: dict[str, dict[str, Any]] = {
    # tiny: the test's smoke size (a tiny random model would make VADER meaningless, so it
    # is SmolLM2 with a handful of prompts, one step and short held-out answers)
    "tiny": {
        "topics": 8,
        "candidates": 8,
        "answer_tokens": 32,
        "margin": 0.3,
        "steps": 1,
        "batch": 2,
        "samples": 1,
        "heldout_pairs": 2,
        "flip_rate": 0.4,
        "seeds": [0],
    },
    # The CPU sizes: 180 training prompts x 8 answers of 32 tokens (2,894 pairs past a 0.3
    # VADER gap), 48 pairs seen per run, 60 held-out prompts x 2 samples. A run (train +
    # evaluation) took ~4.2 minutes at load 8-12 with this process at priority; --quick
    # samples once per held-out prompt (evaluation ~1 minute instead of ~2) to fit 3 runs
    # in 10 minutes.
    "quick": {
        "topics": 60,
        "candidates": 8,
        "answer_tokens": 32,
        "margin": 0.3,
        "steps": 6,
        "batch": 8,
        "samples": 1,
        "heldout_pairs": 30,
        "flip_rate": 0.4,
        "seeds": None,
    },
    "default": {
        "topics": 60,
        "candidates": 8,
        "answer_tokens": 32,
        "margin": 0.3,
        "steps": 6,
        "batch": 8,
        "samples": 2,
        "heldout_pairs": 30,
        "flip_rate": 0.4,
        "seeds": [0, 1, 2],
    },
    # for a GPU: 16 answers per prompt (a pool of ~12k pairs), 50x the pairs seen, more
    # held-out samples and pairs, five seeds
    "full": {
        "topics": 60,
        "candidates": 16,
        "answer_tokens": 48,
        "margin": 0.3,
        "steps": 200,
        "batch": 16,
        "samples": 8,
        "heldout_pairs": 60,
        "flip_rate": 0.4,
        "seeds": [0, 1, 2, 3, 4],
    },
}


# --- persistence ----------------------------------------------------------------------------


def _write_json(data: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)


def _config(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in RUN_KEYS}


def load_store(path: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    """The runs kept so far in `path` (empty when there is none); refuses one made with other
    settings, whose runs would not be comparable."""
    empty = {
        "config": _config(args),
        "flip_rate": args.flip_rate,
        "base": {},
        "audit": {},
        "runs": {},
    }
    if path is None or not path.exists():
        return empty
    store = json.loads(path.read_text())
    if store.get("config") != _config(args) or store.get("flip_rate") != args.flip_rate:
        raise SystemExit(
            f"{path}: made with other settings ({store.get('config')}, flip rate "
            f"{store.get('flip_rate')}); use another --partial file"
        )
    return store


def reuse_clean(store: dict[str, Any], path: Path, args: argparse.Namespace) -> None:
    """Copy the clean runs of another flip rate's file: the clean condition does not depend
    on the flip rate (the same pairs in the same order, no flips)."""
    other = json.loads(path.read_text())
    if other.get("config") != _config(args):
        raise SystemExit(f"{path}: made with other settings; its clean runs do not apply")
    for seed, runs in other.get("runs", {}).items():
        if "clean" in runs:
            store["runs"].setdefault(seed, {}).setdefault("clean", runs["clean"])
    if other.get("base"):
        store["base"] = store["base"] or other["base"]


# --- the run ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    started, cpu_started = time.perf_counter(), time.process_time()
    train_prompts, held = load_prompts(args.topics)
    clean = lib.pool_pairs(lib.candidates(train_prompts, args), args.margin)
    held_pairs = lib.heldout_pairs(lib.candidates(held, args), args.heldout_pairs)
    print(
        f"{train_prompts.height} training prompts x {args.candidates} answers -> "
        f"{clean.height} pairs (VADER gap > {args.margin}); {held.height} held-out prompts, "
        f"{held_pairs.height} held-out pairs ({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    store = load_store(args.partial, args)
    if args.reuse_clean:
        reuse_clean(store, args.reuse_clean, args)
    n = args.steps * args.batch
    evaluator = lib.Evaluator(held, held_pairs, args)
    if not args.no_base and not store["base"]:
        store["base"], _ = evaluator(None)
        print(f"base model: reward {store['base']['reward']:+.3f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="curation_effect-") as tmp:
        for seed in args.seeds:
            done = store["runs"].setdefault(str(seed), {})
            todo = [c for c in args.conditions if c not in done]
            if not todo:
                continue
            noisy, flips = flip_labels(clean, rate=args.flip_rate, seed=seed)
            flipped = flips["flipped"].to_numpy()
            audit, rate = None, None
            if set(todo) & set(CURATIONS + CONTROLS):
                audit, figures = lib.audit_pool(noisy, flipped, seed, args.audit_model, EMBEDDINGS)
                store["audit"][str(seed)] = figures
                rate = audit["rate"]
                _print_audit(seed, figures)
            sets = lib.training_sets(clean, noisy, audit, seed, n, todo)
            for name in todo:
                out = Path(tmp) / f"seed{seed}-{name}"
                trained = lib.train_run(name, sets[name], out, args, seed, rate)
                figures, rewards = evaluator(out)
                shutil.rmtree(out, ignore_errors=True)
                kept = sets[name]
                done[name] = {
                    **trained,
                    **figures,
                    "pairs": kept.height,
                    "unique_pairs": kept["pair_id"].n_unique(),
                    "flipped_share": _flipped_share(kept, clean),
                    "load_average": os.getloadavg()[0],
                    "per_sample": rewards,
                }
                if args.partial:
                    _write_json(store, args.partial)  # every finished run is kept at once
                print(
                    f"seed {seed} {name:13}: reward {figures['reward']:+.3f} "
                    f"(+-{figures['reward_se']:.3f}), KL {figures.get('kl', 0):.2f}, held-out "
                    f"acc {figures.get('heldout_accuracy', float('nan')):.2f}, wrong labels "
                    f"{done[name]['flipped_share']:.2f}; train {trained['train_seconds']:.0f} s "
                    f"(cpu {trained['train_cpu_seconds']:.0f}), eval "
                    f"{figures['eval_seconds']:.0f} s (cpu {figures['eval_cpu_seconds']:.0f}), "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    runs = {int(s): r for s, r in store["runs"].items() if int(s) in args.seeds}
    return {
        "benchmark": "curation_effect",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "omp_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "config": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "flip_rate": args.flip_rate,
        "data": {
            "train_prompts": train_prompts.height,
            "heldout_prompts": held.height,
            "pool_pairs": clean.height,
            "pairs_seen": n,
            "heldout_pairs": held_pairs.height,
        },
        "base": store["base"],
        "audit": {int(s): a for s, a in store["audit"].items() if int(s) in args.seeds},
        "runs": runs,
        "summary": summarize(
            runs, [c for c in args.conditions if all(c in r for r in runs.values())]
        ),
    }


def _flipped_share(kept: Any, clean: Any) -> float:
    """Share of a training set whose label is not the true one (by the clean pool)."""
    truth = dict(zip(clean["pair_id"].to_list(), clean["chosen"].to_list(), strict=True))
    wrong = [truth[p] != c for p, c in zip(kept["pair_id"], kept["chosen"], strict=True)]
    return float(np.mean(wrong))


def _print_audit(seed: int, a: dict[str, Any]) -> None:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    print(
        f"seed {seed}: audit of {a['pairs']} pairs: AUROC {f(a['auroc'])}; flags "
        f"{a['flagged']} (precision {f(a['flag_precision'])}, recall {f(a['flag_recall'])}; "
        f"kept pairs {f(a['noise_after_drop'])} flipped); relabels {a['relabelled']} "
        f"(precision {f(a['relabel_precision'])}; then {f(a['noise_after_relabel'])} "
        f"flipped); noise rate {f(a['estimated_noise_rate'])} estimated "
        f"({a['identification']}) vs {a['true_noise_rate']:.2f} ({a['seconds']:.0f} s)",
        flush=True,
    )


def print_table(result: dict[str, Any]) -> None:
    s = result["summary"]
    base = result.get("base") or {}
    print(
        f"\nflip rate {result.get('flip_rate')}; seeds {s['seeds']}; base model reward "
        f"{base.get('reward', float('nan')):+.3f}"
    )
    print(f"{'condition':14} {'reward':>16} {'KL':>14} {'held-out acc':>16}")
    for name, row in s["conditions"].items():
        cells = []
        for key, width in (("reward", 16), ("kl", 14), ("heldout_accuracy", 16)):
            if key in row:
                se = row.get(f"{key}_se")
                text = f"{row[key]:+.3f} +- {se:.3f}" if se else f"{row[key]:+.3f}"
                cells.append(text.rjust(width))
            else:
                cells.append("-".rjust(width))
        print(f"{name:14} " + " ".join(cells))
    if "gap" in s:
        print(f"clean - noisy: {s['gap']:+.3f} +- {s['gap_se']:.3f}")
        for name, r in s.get("recovered", {}).items():
            se = f" +- {r['recovered_se']:.2f}" if r["recovered_se"] is not None else ""
            share = "-" if r["recovered"] is None else f"{r['recovered']:+.2f}"
            print(f"  {name:13} recovers {share}{se} of the gap")


def combine(files: list[Path]) -> int:
    """Print the table of result or --partial files as one run over their seeds."""
    results = [json.loads(f.read_text()) for f in files]
    runs: dict[int, dict[str, Any]] = {}
    for res in results:  # several files may hold conditions of the same seed
        for seed, r in res["runs"].items():
            runs.setdefault(int(seed), {}).update(r)
    # A condition counts where every seed has it (partial files hold what finished so far).
    done = [c for c in CONDITIONS + CONTROLS if all(c in r for r in runs.values())]
    merged = {**results[0], "runs": runs, "summary": summarize(runs, done)}
    merged["combined_from"] = [str(f) for f in files]
    merged["audit"] = {int(k): v for res in results for k, v in res.get("audit", {}).items()}
    print_table(merged)
    print(json.dumps(merged["summary"], indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="clean, noisy, best curation")
    size.add_argument("--full", action="store_true", help="the GPU size")
    size.add_argument("--tiny", action="store_true", help="smoke size (tests)")
    parser.add_argument("--seed", type=int, action="append", dest="seeds", help="repeatable")
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS + CONTROLS, default=None)
    for key in (
        "topics",
        "candidates",
        "answer_tokens",
        "steps",
        "batch",
        "samples",
        "heldout_pairs",
    ):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    parser.add_argument("--margin", type=float, default=None, help="pool: VADER gap above")
    parser.add_argument("--flip-rate", type=float, default=None)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument(
        "--audit-model",
        default="embeddings",
        help="prefdata audit's model signal (embeddings+reward adds the cross-fitted reward)",
    )
    parser.add_argument("--no-base", action="store_true", help="skip the base model's figures")
    parser.add_argument(
        "--partial",
        type=Path,
        default=None,
        help="JSON kept after each run; a re-run skips the runs in it",
    )
    parser.add_argument(
        "--reuse-clean",
        type=Path,
        default=None,
        help="a --partial file of another flip rate: take its clean runs",
    )
    parser.add_argument("--out", default=str(OUT_DIR))
    parser.add_argument(
        "--combine",
        nargs="+",
        default=None,
        help="result or --partial files: their table over seeds",
    )
    args = parser.parse_args(argv)
    if args.combine:
        return combine([Path(f) for f in args.combine])
    args.size = (
        "quick" if args.quick else "full" if args.full else "tiny" if args.tiny else "default"
    )
    for key, value in SIZES[args.size].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.seeds is None:
        args.seeds = [0]
    if args.conditions is None:
        args.conditions = (
            ["clean", "noisy", QUICK_CURATION]
            if args.size in ("quick", "tiny")
            else list(CONDITIONS)
        )
    if args.size in ("quick", "tiny") and not args.partial:
        args.no_base = True  # the quick JSON needs no base model figures
    result = run(args)
    print_table(result)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    suffix = "" if args.size == "default" else f"-{args.size}"
    path = Path(args.out) / f"curation_effect{suffix}-{stamp}.json"
    _write_json(result, path)
    print(f"written: {path} ({result['seconds']:.0f} s, cpu {result['cpu_seconds']:.0f} s)")
    s = result["summary"]
    conditions = s["conditions"]
    curated = next((c for c in args.conditions if c in CURATIONS), None)
    last = {
        "clean": conditions.get("clean", {}).get("reward"),
        "noisy": conditions.get("noisy", {}).get("reward"),
        "curated": conditions.get(curated, {}).get("reward") if curated else None,
        "recovered": s.get("recovered", {}).get(curated, {}).get("recovered") if curated else None,
        "gap_se": s.get("gap_se"),
    }
    print(json.dumps(last))
    return 0


if __name__ == "__main__":
    sys.exit(main())

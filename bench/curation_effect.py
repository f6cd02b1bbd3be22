"""Experiment: does curation give a measurably better model? A controlled run with a known
true reward (the DPO paper's controlled-sentiment setting, on short chat answers).

    OMP_NUM_THREADS=1 .venv/bin/python bench/curation_effect.py --seed 0 --partial s0.json
    .venv/bin/python bench/curation_effect.py --combine s0.json s1.json s2.json   # over seeds
    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/curation_effect.py
    .venv/bin/python bench/curation_effect.py --quick --seed 101   # clean, noisy, best curation
    .venv/bin/python bench/curation_effect.py --full                # the GPU size (bench/gpu.sh)

The loop, through prefdata's own functions, as a user would run it:
1. prompts: prefdata/examples/sentiment_prompts.jsonl (60 everyday topics x 4 phrasings);
   whole topics are held out (every 4th), so held-out prompts share no topic with training.
2. generate: the embedded SmolLM2 samples `--candidates` answers per training prompt and
   4 per held-out prompt (temperature 1, `--max-new-tokens`, seed 0; call-cached in
   .cache/curation_effect, so seeds and conditions reuse them and a re-run generates nothing).
3. label: `rule_label(scorer="vader")`, best-vs-worst per prompt: the true reward is VADER's
   compound sentiment of the answer (lexicon inside the vaderSentiment wheel; see
   bench/README.md for why this reward).
4. noise: `flip_labels` swaps exactly round(rate x n) training pairs, chosen with the seed.
5. curate: `prefdata.quality.audit(model="embeddings")` on the noisy pairs gives each pair
   p = P(label as given is right) out of fold, its flags and an estimated noise rate.
6. train: LoRA DPO with `prefdata.train.train("dpo", recipe=<the built-in dpo recipe>)`, the same
   steps, batch, learning rate, seed and pair order for every condition:
   - clean: the true labels; noisy: the flipped ones;
   - audit_drop: noisy less the pairs the audit flags (filter_pairs, drop model_disagrees);
   - audit_relabel: noisy with the pairs whose p < 0.5 swapped back (only where the audit
     thinks a flip more likely right than wrong, i.e. where its per-pair precision > 0.5);
   - weighted: noisy with confidence = p and confidence_weighting "centered" (weight
     max(0, 2p - 1): the expected sign of a pair's gradient under p);
   - robust: the robust DPO loss with label_noise = the audit's *estimated* noise rate;
   - ipo: the IPO loss on the noisy pairs.
7. evaluate on the held-out prompts: each policy samples `--samples` answers per prompt
   (temperature 1, the same sampling seeds in every condition); figures: mean true reward,
   the KL to the base model (mean over samples of log pi(y) - log pi_ref(y), summed over the
   answer's tokens: an unbiased estimate of the sequence KL), and the held-out preference
   accuracy on clean held-out pairs (prefdata.train.evaluate, DPO implicit reward).

Figures over seeds: mean and standard error per condition; clean - noisy (the gap) with its
paired standard error; each curation's recovered share (curated - noisy) / (clean - noisy)
with a delta-method standard error. `--quick` runs clean, noisy and the best curation
(`QUICK_CURATION`, chosen on seeds 0-2) and prints as its last line one JSON object:
{"clean", "noisy", "curated", "recovered", "gap_se"} (gap_se: the standard error of
clean - noisy from the samples' paired differences). Results are written to bench/out/.
"""

from __future__ import annotations

import argparse
import json
import math
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
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prefdata.label.programmatic import flip_labels, rule_label, vader_compound  # noqa: E402
from prefdata.train.recipe import builtin_recipe  # noqa: E402

PROMPTS = REPO / "prefdata" / "examples" / "sentiment_prompts.jsonl"
RECIPE = builtin_recipe("dpo")
OUT_DIR = REPO / "bench" / "out"
CACHE = REPO / ".cache" / "curation_effect"
CONDITIONS = ("clean", "noisy", "audit_relabel", "audit_drop", "weighted", "robust", "ipo")
CURATIONS = CONDITIONS[2:]
# The curation --quick runs, chosen from the audit's figures on seeds 0-2 (its relabel
# precision was 0.42-0.51, so relabelling would add noise; dropping is the conservative use);
# the training runs that would rank the curations did not finish on CPU (bench/README.md).
QUICK_CURATION = "audit_drop"
HELDOUT_CANDIDATES = 4

SIZES: dict[str, dict[str, Any]] = {
    # tiny: the test's smoke size (a tiny random model would make VADER meaningless, so it
    # is SmolLM2 with a handful of prompts and one step)
    "tiny": {
        "topics": 8,
        "candidates": 3,
        "max_new_tokens": 8,
        "steps": 1,
        "batch": 2,
        "samples": 1,
        "heldout_pairs": 2,
        "flip_rate": 0.4,
        "seeds": [0],
    },
    # The CPU sizes: 40 pairs seen per run, the least the pilot suggests moves the reward by
    # several standard errors. About 45 minutes for seeds 0-2 (one process per seed) on a
    # mostly idle 2-core machine; hours at load 12-20 (bench/README.md says what it took).
    "quick": {
        "topics": 40,
        "candidates": 4,
        "max_new_tokens": 16,
        "steps": 5,
        "batch": 8,
        "samples": 2,
        "heldout_pairs": 12,
        "flip_rate": 0.4,
        "seeds": None,
    },
    "default": {
        "topics": 40,
        "candidates": 4,
        "max_new_tokens": 16,
        "steps": 5,
        "batch": 8,
        "samples": 2,
        "heldout_pairs": 12,
        "flip_rate": 0.4,
        "seeds": [0, 1, 2],
    },
    # for a GPU: longer answers, 50x the pairs seen, both noise rates, five seeds
    "full": {
        "topics": 60,
        "candidates": 8,
        "max_new_tokens": 48,
        "steps": 200,
        "batch": 16,
        "samples": 8,
        "heldout_pairs": 60,
        "flip_rate": 0.4,
        "seeds": [0, 1, 2, 3, 4],
    },
}


# --- data ----------------------------------------------------------------------------------


def load_prompts(topics: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training prompts, held-out prompts) from the first `topics` topics; every 4th topic
    (in file order) is held out whole."""
    table = pl.read_ndjson(PROMPTS)
    names = table["topic"].unique(maintain_order=True).to_list()[:topics]
    held = set(names[3::4]) if len(names) >= 4 else {names[-1]}
    table = table.filter(pl.col("topic").is_in(names))
    return (
        table.filter(~pl.col("topic").is_in(list(held))),
        table.filter(pl.col("topic").is_in(list(held))),
    )


def sample(
    prompts: pl.DataFrame, model: str, *, n: int, max_new_tokens: int, seed: int, cache: Any
) -> pl.DataFrame:
    """N answers per prompt from `model` (temperature 1; seeded per sample)."""
    from prefdata.llm.base import Params
    from prefdata.llm.generate import generate
    from prefdata.llm.local import LocalClient

    result = generate(
        prompts,
        models=[LocalClient(model, device="auto", batch_size=48)],
        n=n,
        params=Params(temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens, seed=seed),
        cache=cache,
        chunk_size=24,
        progress=False,
    )
    candidates: pl.DataFrame = result.tables["candidates"]
    return candidates


def true_pairs(candidates: pl.DataFrame) -> pl.DataFrame:
    """Best-vs-worst pairs by the true reward (VADER)."""
    return rule_label(candidates, scorer="vader", pairing="best-vs-worst").tables["pairs"]


def _swap(pairs: pl.DataFrame, mask: pl.Series) -> pl.DataFrame:
    return pairs.with_columns(
        chosen=pl.when(mask).then(pl.col("rejected")).otherwise(pl.col("chosen")),
        rejected=pl.when(mask).then(pl.col("chosen")).otherwise(pl.col("rejected")),
    )


# --- curation -----------------------------------------------------------------------------


def curate(
    noisy: pl.DataFrame, flipped: np.ndarray, seed: int, audit_model: str = "embeddings"
) -> tuple[dict[str, Any], dict]:
    """The audit on the noisy pairs and the curated training sets (see the module doc)."""
    from prefdata.quality.audit import audit
    from prefdata.quality.filter import filter_pairs

    start = time.perf_counter()
    audited = audit(
        noisy, model=audit_model, sample=0, seed=seed, cache_dir=str(CACHE / "embeddings")
    )
    issues, report = audited.tables["issues"], audited.report
    seconds = time.perf_counter() - start
    # The combined, calibrated mislabel probability when the audit gives one; else the
    # embedding classifier's own flags.
    name = "mislabeled" if (issues["issue"] == "mislabeled").any() else "model_disagrees"
    model_rows = issues.filter(pl.col("issue") == name)
    aligned = noisy.select("pair_id").join(
        model_rows.select("item_id", "score", "is_issue"),
        left_on="pair_id",
        right_on="item_id",
        how="left",
        maintain_order="left",
    )
    p = aligned["score"].fill_null(0.5)
    flags = aligned["is_issue"].fill_null(False)
    kept = filter_pairs(noisy, issues=model_rows, drop_issues=[name]).tables["pairs"]
    relabel = p < 0.5
    estimated = (
        (report.get("mislabel") or {}).get("noise_rate")
        if name == "mislabeled"
        else (report.get("model") or {}).get("estimated_noise_rate")
    )
    sets = {
        "audit_drop": kept,
        "audit_relabel": _swap(noisy, relabel),
        "weighted": noisy.with_columns(confidence=p),
    }
    flag_np, relabel_np = flags.to_numpy(), relabel.to_numpy()
    figures = {
        "signal": name,
        "seconds": seconds,
        "estimated_noise_rate": estimated,
        "true_noise_rate": float(flipped.mean()),
        "flagged": int(flag_np.sum()),
        "flag_precision": _ratio(flag_np & flipped, flag_np),
        "flag_recall": _ratio(flag_np & flipped, flipped),
        "relabelled": int(relabel_np.sum()),
        "relabel_precision": _ratio(relabel_np & flipped, relabel_np),
        "auroc": _auroc(-p.to_numpy(), flipped),
    }
    return sets, figures


def _write_json(data: Any, path: Path) -> None:
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)


def _ratio(hits: np.ndarray, of: np.ndarray) -> float | None:
    return float(hits.sum() / of.sum()) if of.sum() else None


def _auroc(score: np.ndarray, truth: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, score)) if 0 < truth.sum() < truth.size else None


# --- training and evaluation --------------------------------------------------------------


def overrides(
    name: str, args: argparse.Namespace, seed: int, noise_rate: float | None
) -> list[str]:
    """The recipe overrides of one run: the same for every condition but the loss."""
    common = [
        f"max_steps={args.steps}",
        f"per_device_train_batch_size={args.batch}",
        "gradient_accumulation_steps=1",
        f"max_length={args.max_length}",
        f"learning_rate={args.lr}",
        f"beta={args.beta}",
        "warmup_steps=0",
        "lr_scheduler_type=constant",
        f"seed={seed}",
        f"logging_steps={max(1, args.steps // 4)}",
        "save_strategy=no",
        f"peft.r={args.lora_r}",
        f"peft.lora_alpha={2 * args.lora_r}",
        # Only the top layers adapt: the backward pass stops there (a large part of a CPU step).
        f"peft.layers_to_transform={list(range(30 - args.lora_layers, 30))}",
        "peft.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
        "prefdata.confidence_weighting=none",
    ]
    if name == "weighted":
        common.append("prefdata.confidence_weighting=centered")
    if name == "robust":
        rate = min(float(noise_rate or 0.0), 0.45)
        common += ["loss_type=[robust]", f"prefdata.label_noise={rate}"]
    if name == "ipo":
        common.append("loss_type=[ipo]")
    return common


def train_run(
    name: str, table: pl.DataFrame, out: Path, args: argparse.Namespace, seed: int, rate: Any
) -> dict[str, Any]:
    from prefdata.train import train
    from prefdata.train.outputs import remove_checkpoints

    start = time.perf_counter()
    report = train(
        "dpo",
        recipe=RECIPE,
        data=table,
        model=args.model,
        out=out,
        overrides=overrides(name, args, seed, rate),
    )
    remove_checkpoints(out)
    return {"train_seconds": time.perf_counter() - start, "train_loss": report["train_loss"]}


def policy_samples(
    model_dir: Path | None, held: pl.DataFrame, args: argparse.Namespace, seed: int
) -> pl.DataFrame:
    """The policy's samples on the held-out prompts, with their true reward and the summed
    log-probabilities under the policy and the base model (`model_dir` None: the base)."""
    import torch

    from prefdata.llm.cache import CallCache
    from prefdata.models import load
    from prefdata.train.evaluation import sequence_logps

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # prefdata's loader takes the LoRA output folder itself (the adapter merged onto its base)
    policy = str(model_dir) if model_dir is not None else args.model
    # Not cached: every run writes its model to a folder of the same name.
    samples = sample(
        held,
        policy,
        n=args.samples,
        max_new_tokens=args.max_new_tokens,
        seed=10_000 + seed,
        cache=CallCache(enabled=False),
    )
    texts = samples["completion"].to_list()
    samples = samples.select("prompt_id", "prompt", "completion").with_columns(
        pl.Series("reward", [vader_compound([], t) for t in texts], dtype=pl.Float64)
    )
    # The KL estimate reads one sample per prompt: two forward passes over every sample cost
    # more than sampling them on a CPU, and the reward is the headline.
    first = samples.unique("prompt_id", keep="first", maintain_order=True)
    prompts, firsts = first["prompt"].to_list(), first["completion"].to_list()
    logps = {}
    for label, path in (("policy", policy), ("base", args.model)):
        if label == "policy" and model_dir is None:
            continue
        model, tokenizer = load(path, device=device)
        logps[label], _ = sequence_logps(model, tokenizer, prompts, firsts, batch_size=24)
        del model
    kl = pl.DataFrame(
        {
            "prompt_id": first["prompt_id"],
            "logp_base": logps["base"],
            "logp_policy": logps.get("policy", logps["base"]),
        }
    )
    return samples.drop("prompt").join(kl, on="prompt_id", how="left", maintain_order="left")


def evaluate_run(
    model_dir: Path | None, held: pl.DataFrame, held_pairs: pl.DataFrame, args: Any, seed: int
) -> tuple[dict[str, Any], pl.DataFrame]:
    from prefdata.train import evaluate

    start = time.perf_counter()
    samples = policy_samples(model_dir, held, args, seed)
    once = samples.unique("prompt_id", keep="first", maintain_order=True)
    kl = (once["logp_policy"] - once["logp_base"]).to_numpy()
    rewards = samples["reward"].to_numpy()
    out: dict[str, Any] = {
        "reward": float(rewards.mean()),
        "reward_se": float(rewards.std(ddof=1) / math.sqrt(len(rewards))),
        "kl": float(kl.mean()),
        "samples": len(rewards),
        "answer_chars": float(samples["completion"].str.len_chars().mean()),
    }
    if model_dir is not None:
        scored = evaluate(model_dir, held_pairs, batch_size=24, progress=False).report
        out["heldout_accuracy"] = scored["accuracy"]
    out["eval_seconds"] = time.perf_counter() - start
    return out, samples


# --- figures ------------------------------------------------------------------------------


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    arr = np.asarray(values, dtype=float)
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else None
    return float(arr.mean()), se


def summarize(runs: dict[int, dict[str, Any]], conditions: list[str]) -> dict[str, Any]:
    """Per condition: mean and SE over seeds of reward, KL and held-out accuracy; the gap
    clean - noisy and each curation's recovered share, with standard errors.

    With one seed the SE of a difference comes from the held-out samples (paired by prompt and
    sample seed: the same prompts and sampling seeds in every condition); with several seeds,
    from the spread of the per-seed differences."""
    seeds = sorted(runs)
    table: dict[str, Any] = {}
    for c in conditions:
        row: dict[str, Any] = {}
        for key in ("reward", "kl", "heldout_accuracy"):
            values = [runs[s][c][key] for s in seeds if key in runs[s].get(c, {})]
            if values:
                row[key], row[f"{key}_se"] = _mean_se(values)
        table[c] = row
    out: dict[str, Any] = {"seeds": seeds, "conditions": table}
    if "clean" not in table or "noisy" not in table:
        return out
    gaps = [runs[s]["clean"]["reward"] - runs[s]["noisy"]["reward"] for s in seeds]
    gap, gap_se = _mean_se(gaps)
    if gap_se is None:
        gap_se = _paired_se(runs[seeds[0]], "clean", "noisy")
    out["gap"], out["gap_se"] = gap, gap_se
    recovered: dict[str, Any] = {}
    for c in conditions:
        if c in ("clean", "noisy"):
            continue
        wins = [runs[s][c]["reward"] - runs[s]["noisy"]["reward"] for s in seeds]
        win, win_se = _mean_se(wins)
        if win_se is None:
            win_se = _paired_se(runs[seeds[0]], c, "noisy")
        share = win / gap if gap else None
        # delta method for a ratio of two means (their covariance left out: conservative
        # when both move together, which they do through the shared noisy baseline)
        share_se = (
            abs(share) * math.sqrt((win_se / win) ** 2 + (gap_se / gap) ** 2)
            if share is not None and win and win_se is not None and gap_se
            else None
        )
        recovered[c] = {"win": win, "win_se": win_se, "recovered": share, "recovered_se": share_se}
    out["recovered"] = recovered
    return out


def _paired_se(run: dict[str, Any], a: str, b: str) -> float | None:
    """SE of mean reward(a) - reward(b) over the held-out samples, paired by sample."""
    left, right = run[a].get("per_sample"), run[b].get("per_sample")
    if left is None or right is None or len(left) != len(right) or len(left) < 2:
        return None
    d = np.asarray(left) - np.asarray(right)
    return float(d.std(ddof=1) / math.sqrt(d.size))


# --- the run ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from prefdata.llm.cache import CallCache

    load_before = os.getloadavg()
    started = time.perf_counter()
    train_prompts, held = load_prompts(args.topics)
    cache = CallCache(CACHE / "calls.sqlite")
    try:
        candidates = sample(
            train_prompts,
            args.model,
            n=args.candidates,
            max_new_tokens=args.max_new_tokens,
            seed=0,
            cache=cache,
        )
        held_candidates = sample(
            held,
            args.model,
            n=HELDOUT_CANDIDATES,
            max_new_tokens=args.max_new_tokens,
            seed=1,
            cache=cache,
        )
    finally:
        cache.close()
    clean = true_pairs(candidates)
    held_pairs = true_pairs(held_candidates).head(args.heldout_pairs)
    print(
        f"{train_prompts.height} training prompts x {args.candidates} answers -> "
        f"{clean.height} clean pairs; {held.height} held-out prompts, {held_pairs.height} "
        f"held-out pairs ({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    runs: dict[int, dict[str, Any]] = {}
    audits: dict[int, Any] = {}
    with tempfile.TemporaryDirectory(prefix="curation_effect-") as tmp:
        work = Path(args.workdir or tmp)
        base: dict[str, Any] = {}
        if not args.no_base:
            base, _ = evaluate_run(None, held, held_pairs, args, seed=0)
            print(f"base model: reward {base['reward']:+.3f} ({base['eval_seconds']:.0f} s)")
        for seed in args.seeds:
            noisy, flips = flip_labels(clean, rate=args.flip_rate, seed=seed)
            flipped = flips["flipped"].to_numpy()
            sets: dict[str, pl.DataFrame] = {"clean": clean, "noisy": noisy}
            rate = None
            if set(args.conditions) & set(CURATIONS):
                curated, audits[seed] = curate(noisy, flipped, seed, args.audit_model)
                sets.update(curated)
                rate = audits[seed]["estimated_noise_rate"]
                a = audits[seed]
                print(
                    f"seed {seed}: audit flags {a['flagged']} (precision "
                    f"{a['flag_precision'] or 0:.2f}, recall {a['flag_recall'] or 0:.2f}, AUROC "
                    f"{a['auroc'] or 0:.2f}); relabels {a['relabelled']} (precision "
                    f"{a['relabel_precision'] or 0:.2f}); noise rate estimated {rate} vs "
                    f"{a['true_noise_rate']:.2f}",
                    flush=True,
                )
            sets["robust"] = sets["ipo"] = noisy
            runs[seed] = {}
            for name in args.conditions:
                out = work / f"seed{seed}" / name
                trained = train_run(name, sets[name], out, args, seed, rate)
                figures, samples = evaluate_run(out, held, held_pairs, args, seed)
                runs[seed][name] = {
                    **trained,
                    **figures,
                    "pairs": sets[name].height,
                    "per_sample": samples["reward"].to_list(),
                }
                shutil.rmtree(out, ignore_errors=True)
                if args.partial:
                    # each finished run is kept, so a run cut short still has its figures
                    _write_json({"runs": runs, "audit": audits, "base": base}, args.partial)
                print(
                    f"seed {seed} {name:13}: reward {figures['reward']:+.3f} "
                    f"(+-{figures['reward_se']:.3f}), KL {figures['kl']:.2f}, held-out acc "
                    f"{figures.get('heldout_accuracy', float('nan')):.2f}, train "
                    f"{trained['train_seconds']:.0f} s, eval {figures['eval_seconds']:.0f} s",
                    flush=True,
                )
    summary = summarize(runs, args.conditions)
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
        "config": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "data": {
            "train_prompts": train_prompts.height,
            "heldout_prompts": held.height,
            "clean_pairs": clean.height,
            "heldout_pairs": held_pairs.height,
        },
        "base": base,
        "audit": audits,
        "runs": runs,
        "summary": summary,
    }


def print_table(result: dict[str, Any]) -> None:
    s = result["summary"]
    base = result.get("base") or {}
    print(f"\nseeds {s['seeds']}; base model reward {base.get('reward', float('nan')):+.3f}")
    print(f"{'condition':14} {'reward':>16} {'KL':>14} {'held-out acc':>16}")
    for name, row in s["conditions"].items():
        cells = []
        for key, width in (("reward", 16), ("kl", 14), ("heldout_accuracy", 16)):
            if key in row:
                se = row.get(f"{key}_se")
                cells.append(
                    f"{row[key]:+.3f} +- {se:.3f}".rjust(width)
                    if se
                    else f"{row[key]:+.3f}".rjust(width)
                )
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
    """Print the table of several single-seed result files as one run over their seeds."""
    results = [json.loads(f.read_text()) for f in files]
    runs: dict[int, dict[str, Any]] = {}
    for res in results:  # several files may hold conditions of the same seed
        for seed, r in res["runs"].items():
            runs.setdefault(int(seed), {}).update(r)
    # Partial files (--partial) hold the runs finished so far: a condition counts where
    # every seed has it.
    done = [c for c in CONDITIONS if all(c in r for r in runs.values())]
    merged = {**results[0], "runs": runs, "summary": summarize(runs, done)}
    merged["combined_from"] = [str(f) for f in files]
    merged["audit"] = {int(k): v for res in results for k, v in res["audit"].items()}
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
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=None)
    for key in (
        "topics",
        "candidates",
        "max_new_tokens",
        "steps",
        "batch",
        "samples",
        "heldout_pairs",
    ):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    parser.add_argument("--flip-rate", type=float, default=None)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-layers", type=int, default=30, help="top layers adapted (of 30)")
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument(
        "--audit-model",
        default="embeddings",
        help="prefdata audit's model signal (embeddings+reward adds the cross-fitted reward)",
    )
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--no-base", action="store_true", help="skip the base model's figures")
    parser.add_argument("--partial", type=Path, default=None, help="JSON rewritten after each run")
    parser.add_argument("--out", default=str(OUT_DIR))
    parser.add_argument(
        "--combine",
        nargs="+",
        default=None,
        help="result files of single-seed runs (one process per seed): their table over seeds",
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
    result = run(args)
    print_table(result)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    suffix = "" if args.size == "default" else f"-{args.size}"
    path = out_dir / f"curation_effect{suffix}-{stamp}.json"
    tmp_path = path.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    tmp_path.replace(path)
    print(f"written: {path} ({result['seconds']:.0f} s)")
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

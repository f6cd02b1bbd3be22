"""Experiment: what 25% flipped labels cost DPO, and how much prefdata's audit + filter wins back.

    OMP_NUM_THREADS=2 .venv/bin/python bench/noisy_labels.py   # CPU default (34 min at load 4-5)
    .venv/bin/python bench/noisy_labels.py --quick              # tiny random model, smoke run
    .venv/bin/python bench/noisy_labels.py --full               # the real sizes, for a GPU:
        # every pair up to 512 tokens, 300 held out, 400 steps of 8, all four training sets

Data: Anthropic HH-RLHF harmless-base test (../shared/data/hh_rlhf, 2,303 pairs through
prefdata's importer), keeping the pairs whose prompt and longer response fit `--max-length`
tokens of SmolLM2's chat template (so neither training nor scoring cuts a response; TRL would
drop or truncate it, and a prompt that fills max_length scores as a tie). Split, seeded, by
prompt: pairs are grouped by their first user turn (stricter than prompt_id: a conversation
continued in another pair stays on the same side), whole groups go to the held-out set until
it holds `--heldout` pairs, or as near as whole groups get (the output's data.heldout_short
says how many it lacks); the rest, shuffled, is the training pool, of which `--limit` pairs
are used (0 = all). `--flip-rate` of those (round(rate x n), seeded; the same swap as
bench/bench_model_audit.py) get chosen and rejected swapped; which ones is kept as the truth.

Training sets, all trained with DPO (LoRA r 16, train/dpo.yaml with the overrides below)
through prefdata.train.train, with the same seed, steps, batch and learning rate:
- `noisy`: the flipped set;
- `audit_drop`: the flipped set after prefdata.quality.audit(model="embeddings") and
  filter_pairs(drop_issues=["model_disagrees"]): the pairs the model-based audit flags are
  dropped, so it trains on fewer distinct pairs (the other audit signals, rule checks and
  dedup, are reported but not filtered on: they are about other defects, and on HH-RLHF they
  flag hundreds of pairs (length ratio, cut-off answers) that say nothing about swapped labels);
- `audit_flip`: the same flags, but the flagged pairs are swapped back instead of dropped
  (the audit's output supports it: a flag means "the model thinks chosen and rejected are
  swapped"), so it keeps every pair; trained with --full or `--conditions`, since its label
  noise (always reported) already says whether flipping back can help: it fixes the flagged
  flips and breaks the flagged good pairs, so it helps only where precision exceeds 0.5;
- `clean`: the same pairs with their original labels.
Data size policy: every run takes `--steps` optimizer steps of `--batch` pairs (the same
number of examples seen); a set with fewer pairs than steps x batch is gone round again.
With the same seed, noisy, audit_flip and clean see the same pairs in the same order and
differ only in labels; audit_drop sees its own (smaller) set. Each set's remaining label
noise (share of pairs whose label is the wrong way round) is reported beside its accuracy.

Figures (held-out pairs, prefdata.train.evaluate): DPO implicit-reward accuracy
(beta * (log pi - log pi_ref), chosen above rejected) and mean margin of each run, and each
run's difference from `noisy` on the same pairs with a paired standard error; the
base model's accuracy before training (its own log-likelihood ordering, the reference
the implicit reward is measured against; its implicit reward is 0 for every pair, so a
tie everywhere); the audit's precision / recall / F1 on the flipped labels and its AUROC
(bench_model_audit's figures). Headline: audit_drop accuracy (figure) against noisy
(baseline), ratio figure / baseline, target > 1; `recovered` = (audit - noisy) /
(clean - noisy), the share of the noise's cost won back, given only where clean beats noisy
by more than two paired standard errors. Printed, and written as JSON to bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_model_audit import _figures, _flip  # noqa: E402  (the same flips and figures)

from prefdata.io.importers.hh_rlhf import import_hh_rlhf  # noqa: E402
from prefdata.train.recipe import builtin_recipe  # noqa: E402

OUT_DIR = REPO / "bench" / "out"
DATA = (
    Path(os.environ.get("PREFDATA_SHARED_DATA", REPO.parent / "shared" / "data"))
    / "hh_rlhf"
    / "harmless-base_test.jsonl.gz"
)
RECIPE = builtin_recipe("dpo")
CONDITIONS = ("noisy", "audit_drop", "audit_flip", "clean")


# --- data preparation (no model needed; tests/bench/test_noisy_labels.py runs it) -----------


@dataclass
class Split:
    """The experiment's data: `clean` and `noisy` hold the same training pairs in the same
    order (noisy with `flipped` rows swapped), `heldout` shares no first user turn with them."""

    clean: pl.DataFrame
    noisy: pl.DataFrame
    heldout: pl.DataFrame
    flipped: np.ndarray  # bool per training row: the truth the audit is scored against
    # Held-out pairs asked for that whole prompt groups could not fill (split_by_prompt).
    heldout_short: int = 0

    def truth(self) -> pl.DataFrame:
        """pair_id, flipped: which training pairs carry a swapped label."""
        return pl.DataFrame({"pair_id": self.noisy["pair_id"], "flipped": self.flipped})


def load_pairs(path: str | Path = DATA) -> pl.DataFrame:
    """HH-RLHF pairs through prefdata's importer (pairs contract)."""
    return import_hh_rlhf(path).tables["pairs"]


def prompt_group(pairs: pl.DataFrame) -> pl.Series:
    """The split key: each pair's first user turn, stripped (one key per conversation start)."""
    return (
        pairs["prompt"]
        .list.eval(
            pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content")
        )
        .list.first()
        .fill_null("")
        .str.strip_chars()
        .alias("group")
    )


def split_by_prompt(
    pairs: pl.DataFrame, heldout: int, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, heldout): whole prompt groups, in a seeded order, fill up to `heldout` pairs;
    a group that would overshoot is passed over for smaller ones, so the held-out set falls
    short when no remaining group fits the gap (Split.heldout_short says by how much).
    train: the other pairs, shuffled with the seed. Both keep the input columns."""
    if not 0 < heldout < pairs.height:
        raise ValueError(f"--heldout must be between 1 and {pairs.height - 1}, got {heldout}")
    keyed = pairs.with_columns(prompt_group(pairs)).with_row_index("__row")
    sizes = keyed.group_by("group", maintain_order=True).len()
    rng = np.random.default_rng([seed, 0])
    order = rng.permutation(sizes.height)
    chosen_groups: list[str] = []
    total = 0
    for i in order.tolist():
        size = int(sizes["len"][i])
        if total + size <= heldout:
            chosen_groups.append(sizes["group"][i])
            total += size
            if total == heldout:
                break
    held_mask = keyed["group"].is_in(pl.Series(chosen_groups, dtype=pl.String).implode())
    held = keyed.filter(held_mask)
    rest = keyed.filter(~held_mask)
    rest = rest[rng.permutation(rest.height).tolist()]
    return rest.drop("__row", "group"), held.drop("__row", "group")


def prepare_data(
    pairs: pl.DataFrame, *, heldout: int, limit: int, flip_rate: float, seed: int
) -> Split:
    """Split by prompt, keep `limit` training pairs (0 = all), flip round(rate x n) of them.

    Input: a pairs table. Output: a Split (see there); deterministic for a given seed.
    """
    train, held = split_by_prompt(pairs, heldout, seed)
    if limit:
        train = train.head(limit)
    noisy, flipped = _flip(train, flip_rate, seed)
    return Split(
        clean=train, noisy=noisy, heldout=held, flipped=flipped, heldout_short=heldout - held.height
    )


def fits_length(pairs: pl.DataFrame, model: str, max_length: int) -> pl.DataFrame:
    """The pairs whose prompt + longer response fits max_length tokens (chat template)."""
    from prefdata.models.loader import load_tokenizer
    from prefdata.train.models import model_path

    tokenizer = load_tokenizer(model_path(model))

    def length(messages: list[dict[str, str]], reply: str) -> int:
        ids: Any = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": reply}], tokenize=True
        )
        return len(ids["input_ids"] if hasattr(ids, "keys") else ids)

    keep = [
        max(length(p, c), length(p, r)) <= max_length
        for p, c, r in zip(
            pairs["prompt"].to_list(),
            pairs["chosen"].to_list(),
            pairs["rejected"].to_list(),
            strict=True,
        )
    ]
    return pairs.filter(pl.Series(keep))


def _swap(pairs: pl.DataFrame, mask: pl.Series) -> pl.DataFrame:
    return pairs.with_columns(
        chosen=pl.when(mask).then(pl.col("rejected")).otherwise(pl.col("chosen")),
        rejected=pl.when(mask).then(pl.col("chosen")).otherwise(pl.col("rejected")),
    )


# --- the audit -----------------------------------------------------------------------------


def audit_sets(
    split: Split, *, seed: int, cache_dir: str, drop_issues: list[str] | str
) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """The four training sets, and the audit's report and figures on the flipped labels."""
    from prefdata.quality.audit import audit
    from prefdata.quality.filter import filter_pairs

    start = time.perf_counter()
    audited = audit(split.noisy, model="embeddings", sample=0, seed=seed, cache_dir=cache_dir)
    issues, report = audited.tables["issues"], audited.report
    seconds = time.perf_counter() - start
    model_rows = issues.filter(pl.col("issue") == "model_disagrees").select(
        "item_id", "score", "is_issue"
    )
    aligned = split.noisy.select("pair_id").join(
        model_rows, left_on="pair_id", right_on="item_id", how="left", maintain_order="left"
    )
    flags = aligned["is_issue"].fill_null(False)
    filtered = filter_pairs(split.noisy, issues=issues, drop_issues=drop_issues)
    kept, rejected, filter_report = filtered.tables["pairs"], filtered.rejected, filtered.report
    assert rejected is not None
    dropped = split.noisy["pair_id"].is_in(rejected["pair_id"].implode()).to_numpy()
    flip_back = _swap(split.noisy, flags)
    if drop_issues != ["model_disagrees"]:
        # other signals' drops apply to the flip-back set too
        others = dropped & ~flags.to_numpy()
        flip_back = flip_back.filter(pl.Series(~others))
    flips = split.flipped
    model_figures = _figures(aligned["score"].to_numpy(), flags.to_numpy(), flips)
    drop_figures = _figures(aligned["score"].to_numpy(), dropped, flips)
    sets = {
        "noisy": split.noisy,
        "audit_drop": kept,
        "audit_flip": flip_back,
        "clean": split.clean,
    }
    model = report.get("model", {})
    out = {
        "seconds": seconds,
        "pairs": split.noisy.height,
        "flips": int(flips.sum()),
        "issue_counts": report["issue_counts"],
        "drop_issues": drop_issues,
        "filter": filter_report,
        "model_flags": model_figures,
        "dropped_by_filter": drop_figures,
        "estimated_noise_rate": model.get("estimated_noise_rate"),
        "agree_rate": model.get("agree_rate"),
        "C": model.get("C"),
    }
    return sets, out


def label_noise(table: pl.DataFrame, clean: pl.DataFrame) -> float:
    """Share of `table`'s pairs whose chosen differs from the clean label (pair_id join)."""
    joined = table.select("pair_id", "chosen").join(
        clean.select("pair_id", pl.col("chosen").alias("truth")), on="pair_id", how="left"
    )
    wrong = (joined["chosen"] != joined["truth"]).to_numpy()
    return float(wrong.mean()) if wrong.size else 0.0


# --- training and scoring ------------------------------------------------------------------


def train_and_score(
    name: str, table: pl.DataFrame, heldout: pl.DataFrame, args: argparse.Namespace, model: str
) -> dict[str, Any]:
    """Train DPO on `table` into <workdir>/<name>, then score the held-out pairs."""
    from prefdata.train import evaluate, train
    from prefdata.train.outputs import remove_checkpoints

    out = Path(args.workdir) / name
    overrides = [
        f"max_steps={args.steps}",
        f"per_device_train_batch_size={args.batch}",
        "gradient_accumulation_steps=1",
        f"max_length={args.max_length}",
        f"learning_rate={args.lr}",
        f"seed={args.seed}",
        f"logging_steps={max(1, args.steps // 10)}",
        "save_strategy=no",
    ]
    start = time.perf_counter()
    report = train("dpo", recipe=RECIPE, data=table, model=model, out=out, overrides=overrides)
    train_s = time.perf_counter() - start
    remove_checkpoints(out)
    start = time.perf_counter()
    from prefdata.io.tables import write_table

    evaluated = evaluate(out, heldout, batch_size=args.eval_batch)
    scores = evaluated.report
    scores["per_pair"] = str(
        write_table(evaluated.tables["per_pair"], out / "heldout_scores.parquet")
    )
    eval_s = time.perf_counter() - start
    return {
        "per_pair": scores["per_pair"],
        "pairs": table.height,
        "steps": report["steps"],
        "train_loss": report["train_loss"],
        "losses": report["losses"],
        "train_seconds": train_s,
        "eval_seconds": eval_s,
        "accuracy": scores["accuracy"],
        "ties": scores["ties"],
        "margin_mean": scores["margin_mean"],
        "margin_median": scores["margin_median"],
        "policy_logp_accuracy": scores.get("policy_logp_accuracy"),
        "reference_logp_accuracy": scores.get("reference_logp_accuracy"),
    }


def paired_vs(results: dict[str, Any], baseline: str) -> dict[str, Any]:
    """Each run against `baseline` on the same held-out pairs: the difference in accuracy and
    in mean margin, with paired standard errors (the runs share their pairs, so their errors
    are correlated and the paired error is smaller than either accuracy's own)."""
    if baseline not in results:
        return {}
    base = pl.read_parquet(results[baseline]["per_pair"])
    out: dict[str, Any] = {}
    for name, r in results.items():
        if name == baseline:
            continue
        other = pl.read_parquet(r["per_pair"])
        joined = base.join(other, on="pair_id", suffix="_other")
        d_acc = (
            joined["correct_other"].cast(pl.Float64) - joined["correct"].cast(pl.Float64)
        ).to_numpy()
        d_margin = (joined["margin_other"] - joined["margin"]).to_numpy()
        n = len(d_acc)
        out[name] = {
            "accuracy_difference": float(d_acc.mean()),
            "accuracy_difference_se": float(d_acc.std(ddof=1) / np.sqrt(n)) if n > 1 else None,
            "margin_difference": float(d_margin.mean()),
            "margin_difference_se": float(d_margin.std(ddof=1) / np.sqrt(n)) if n > 1 else None,
            "pairs_better": int((d_acc > 0).sum()),
            "pairs_worse": int((d_acc < 0).sum()),
        }
    return out


def headline(results: dict[str, Any], paired: dict[str, Any]) -> dict[str, Any]:
    """audit_drop's held-out accuracy against noisy's (ratio, target > 1), and the share of
    the clean-noisy gap it recovers: given only where clean beat noisy by more than twice the
    paired standard error (a smaller gap is noise, and dividing by it means nothing)."""
    if "noisy" not in results or "audit_drop" not in results:
        return {}
    fig, basel = results["audit_drop"]["accuracy"], results["noisy"]["accuracy"]
    out: dict[str, Any] = {
        "figure": fig,
        "figure_name": "held-out accuracy, audit_drop",
        "baseline": basel,
        "baseline_name": "held-out accuracy, noisy",
        "ratio": fig / basel if basel else None,
        "target": "> 1",
        "met": fig > basel,
    }
    clean = paired.get("clean")
    if clean:
        gap, se = clean["accuracy_difference"], clean["accuracy_difference_se"]
        if se is not None and gap > 2 * se:
            out["recovered"] = (fig - basel) / gap
        else:
            out["recovered"] = None
            out["recovered_note"] = (
                f"not given: clean - noisy = {gap:+.3f} (paired SE {se or 0:.3f}) is no real gap"
            )
    return out


def _standard_error(p: float, n: int) -> float:
    return float(np.sqrt(p * (1 - p) / n)) if n else float("nan")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from prefdata.models.tiny import tiny_model

    model = args.model or (str(tiny_model(layers=2, hidden=64)) if args.quick else "smollm2")
    load_before = os.getloadavg()
    pairs = load_pairs(args.data)
    fitting = fits_length(pairs, model, args.max_length)
    split = prepare_data(
        fitting, heldout=args.heldout, limit=args.limit, flip_rate=args.flip_rate, seed=args.seed
    )
    print(
        f"HH-RLHF: {pairs.height} pairs, {fitting.height} fit {args.max_length} tokens; "
        f"held-out {split.heldout.height}"
        + (f" ({split.heldout_short} short of --heldout)" if split.heldout_short else "")
        + f", train {split.noisy.height} with "
        f"{int(split.flipped.sum())} flipped ({args.flip_rate:.0%})",
        flush=True,
    )
    sets, audit_report = audit_sets(
        split, seed=args.seed, cache_dir=args.cache_dir, drop_issues=args.drop_issues
    )
    mf = audit_report["model_flags"]
    print(
        f"audit ({audit_report['seconds']:.1f} s): flagged {mf['flagged']} of "
        f"{split.noisy.height}; on the flips: precision {mf['precision']:.3f}, recall "
        f"{mf['recall']:.3f}, F1 {mf['f1']:.3f}, AUROC {mf['auroc']:.3f}",
        flush=True,
    )
    noise = {name: label_noise(table, split.clean) for name, table in sets.items()}
    audit_report["training_sets"] = {
        name: {"pairs": sets[name].height, "label_noise": noise[name]} for name in sets
    }
    print(
        "training sets: "
        + "; ".join(f"{n} {sets[n].height} pairs, label noise {noise[n]:.3f}" for n in sets),
        flush=True,
    )
    # Scored shortest first: less padding per batch on a CPU, the same scores in any order.
    heldout = split.heldout.sort(
        pl.col("prompt").list.eval(pl.element().struct.field("content").str.len_chars()).list.sum()
        + pl.max_horizontal(pl.col("chosen").str.len_chars(), pl.col("rejected").str.len_chars())
    )
    results: dict[str, Any] = {}
    for name in args.conditions:
        table = sets[name]
        print(f"{name}: training on {table.height} pairs", flush=True)
        results[name] = {
            "label_noise": noise[name],
            **train_and_score(name, table, heldout, args, model),
        }
        r = results[name]
        print(
            f"  {name}: held-out accuracy {r['accuracy']:.3f}, margin {r['margin_mean']:+.4f}, "
            f"train {r['train_seconds']:.0f} s, eval {r['eval_seconds']:.0f} s",
            flush=True,
        )
    n = split.heldout.height
    first: dict[str, Any] = next(iter(results.values()), {})
    base = first.get("reference_logp_accuracy")
    out: dict[str, Any] = {
        "benchmark": "noisy_labels",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads_env": os.environ.get("OMP_NUM_THREADS"),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "config": {
            "model": model,
            "size": args.size,
            "conditions": args.conditions,
            "drop_issues": args.drop_issues,
            "seed": args.seed,
            "flip_rate": args.flip_rate,
            "limit": args.limit,
            "heldout": args.heldout,
            "steps": args.steps,
            "batch": args.batch,
            "lr": args.lr,
            "max_length": args.max_length,
            "recipe": str(RECIPE.relative_to(REPO)),
        },
        "data": {
            "pairs": pairs.height,
            "fit_max_length": fitting.height,
            "train": split.noisy.height,
            "heldout": n,
            "heldout_short": split.heldout_short,
            "flipped": int(split.flipped.sum()),
        },
        "audit": audit_report,
        "base_model": {
            "logp_accuracy": base,
            "implicit_reward_accuracy": "undefined: every margin is 0 before training (ties)",
        },
        "runs": results,
        "heldout_standard_error": _standard_error(0.5, n),
        "paired_vs_noisy": paired_vs(results, "noisy"),
    }
    head = headline(results, out["paired_vs_noisy"])
    if head:
        out["headline"] = head
    return out


def _print_table(result: dict[str, Any]) -> None:
    n = result["data"]["heldout"]
    print(
        f"\nheld-out pairs: {n} (standard error of an accuracy near 0.5: "
        f"{result['heldout_standard_error']:.3f})"
    )
    print(f"{'training set':12} {'pairs':>6} {'noise':>6} {'accuracy':>9} {'margin':>9}")
    base = result["base_model"]["logp_accuracy"]
    if base is not None:
        print(f"{'base model':12} {'-':>6} {'-':>6} {base:9.3f} {'-':>9}  (log-likelihood order)")
    for name, r in result["runs"].items():
        paired = result["paired_vs_noisy"].get(name)
        extra = (
            f"  vs noisy {paired['accuracy_difference']:+.3f} +- "
            f"{paired['accuracy_difference_se']:.3f} (paired)"
            if paired and paired["accuracy_difference_se"] is not None
            else ""
        )
        print(
            f"{name:12} {r['pairs']:6d} {r['label_noise']:6.3f} {r['accuracy']:9.3f} "
            f"{r['margin_mean']:+9.4f}{extra}"
        )
    for name, t in result["audit"]["training_sets"].items():
        if name not in result["runs"]:
            print(f"{name:12} {t['pairs']:6d} {t['label_noise']:6.3f}  (not trained)")
    head = result.get("headline")
    if head:
        print(
            f"audit_drop / noisy accuracy: {head['ratio']:.3f} (target > 1: "
            f"{'met' if head['met'] else 'not met'})"
            + (
                f"; recovered {head['recovered']:.2f} of the clean-noisy gap"
                if head.get("recovered") is not None
                else f"; recovered {head['recovered_note']}"
                if "recovered_note" in head
                else ""
            )
        )


SIZES: dict[str, dict[str, Any]] = {
    # tiny random model: checks the pipeline end to end, its accuracies mean nothing
    "quick": {
        "limit": 400,
        "heldout": 24,
        "steps": 2,
        "batch": 2,
        "max_length": 128,
        "conditions": ["noisy", "audit_drop", "clean"],
    },
    # SmolLM2 on 2 shared CPU cores (a forward pass of 8 x 150 tokens took 10 s at load 6):
    # the 705 pairs of at most 128 tokens, 48 held out, 8 steps of 4 pairs per run
    "default": {
        "limit": 0,
        "heldout": 48,
        "steps": 8,
        "batch": 4,
        "max_length": 128,
        "conditions": ["noisy", "audit_drop", "clean"],
    },
    # for a GPU: every pair up to 512 tokens (2,215 of 2,303), ~1.7 epochs of the pool
    "full": {
        "limit": 0,
        "heldout": 300,
        "steps": 400,
        "batch": 8,
        "max_length": 512,
        "conditions": list(CONDITIONS),
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny random model, smoke run")
    size.add_argument("--full", action="store_true", help="the real sizes (for a GPU)")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="training pairs, 0 = the whole pool (default 0; 400 with --quick)",
    )
    parser.add_argument(
        "--heldout",
        type=int,
        default=None,
        help="held-out pairs (default 48; 24 --quick, 300 --full)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimizer steps per run (default 8; 2 --quick, 400 --full)",
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="pairs per step (default 4; 2 --quick, 8 --full)"
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="token limit, longer pairs are left out (default 128; 512 --full)",
    )
    parser.add_argument("--lr", type=float, default=2e-4, help="learning rate (LoRA r 16)")
    parser.add_argument("--eval-batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flip-rate", type=float, default=0.25)
    parser.add_argument(
        "--model",
        default=None,
        help="smollm2 (default) or a model folder; a tiny model with --quick",
    )
    parser.add_argument(
        "--conditions",
        nargs="+",
        choices=CONDITIONS,
        default=None,
        help="training sets to train on (default noisy audit_drop clean; all "
        "four with --full); every set's label noise is reported anyway",
    )
    parser.add_argument(
        "--drop-issues",
        nargs="+",
        default=["model_disagrees"],
        help="audit issues the filter drops ('all' for every signal)",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="training outputs (default: a temporary folder, removed after)",
    )
    parser.add_argument(
        "--cache-dir",
        default=str(REPO / ".cache" / "embeddings"),
        help="embedding cache (shared with bench_model_audit.py)",
    )
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default=str(OUT_DIR))
    args = parser.parse_args(argv)
    if args.drop_issues == ["all"]:
        args.drop_issues = "all"
    args.size = "quick" if args.quick else "full" if args.full else "default"
    for key, value in SIZES[args.size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    import tempfile

    with tempfile.TemporaryDirectory(prefix="noisy_labels-") as tmp:
        if args.workdir is None:
            args.workdir = tmp
        result = run(args)
    _print_table(result)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    suffix = "" if args.size == "default" else f"-{args.size}"
    path = out_dir / f"noisy_labels{suffix}-{stamp}.json"
    tmp_path = path.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    tmp_path.replace(path)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

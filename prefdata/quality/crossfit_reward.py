"""Cross-fitted reward signal: K reward models, each scoring the pairs it was not trained on.

The pairs are split into K folds by a seeded hash of their prompt_id (so fold membership
depends on neither row order nor which side is chosen, and the pairs of one prompt, which
often share a response, share a fold: a model never learns a response's worth from a sibling
pair and then scores it, which would tie its errors to the consistency signal's; see
prefdata.quality.model_audit.fit_out_of_fold). For each fold k, a reward model is
trained with prefdata.train on the other K-1 folds, and then scores the pairs of fold k
(prefdata.train.evaluation.score_pairs). No pair is scored by a model that saw its label,
so a flipped label cannot teach the model to agree with itself, which is what makes the
score usable as evidence against the label.

Two kinds of model (`method`):
- "reward" (default): a LoRA reward head on the causal LM (TRL RewardTrainer);
  score = r(prompt, response).
- "dpo": the DPO implicit reward beta * (log pi - log pi_ref) of a LoRA policy.

Cost. Training a 135M model costs about 6 x 135M FLOPs per token. On 2 CPU cores shared
with other jobs a process got 2-3 GFLOP/s: a step of 8 PandaLM pairs (about 6,000 tokens) took
100 s at load 7, a step of 8 short answers 378 s at load 12-16 (bench/README.md). So on such a
machine the signal is for a few dozen pairs at most (`max_pairs_per_fold` and a short
`max_length` bound the training; every pair is still scored). On a GPU the same code runs
unchanged (TRL picks bf16 and the device): an H100 does about 1e14 useful FLOP/s on this
model, so 10,000 pairs x 3 folds x 1 epoch (each fold trains on 2/3 of the pairs: about 2e7
tokens, 1.6e16 FLOPs) is a few minutes (bench/gpu.sh runs it at full length).

Each fold's model and scores are kept under `work_dir` (fold_<k>/ and fold_<k>.scores.parquet,
keyed by a digest of the fold's training pairs and the settings), so an interrupted run
resumes at the first unfinished fold and a repeated run retrains nothing.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from prefdata.errors import InputError

RewardMethod = Literal["reward", "dpo"]

# Small, CPU-friendly defaults: one epoch, short sequences, a small adapter. The label's
# confidence is not turned into a margin: a mislabel audit must not trust the labels' own
# confidence when learning which labels to doubt.
BASE_RECIPES: dict[str, dict[str, Any]] = {
    "reward": {
        "learning_rate": 2.0e-4,
        "num_train_epochs": 1,
        # two pairs per forward pass: on CPU the activations of 8 pairs x 384 tokens took
        # 12 GB; the effective batch stays 8
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 4,
        "max_length": 384,
        "center_rewards_coefficient": 0.01,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05,
        "logging_steps": 10,
        "save_strategy": "no",
        "peft": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear"},
        # A fold trains on what it can: degenerate pairs (prefdata.train.integrity) are left
        # out of its training, never a reason to stop the audit; every pair is still scored.
        "prefdata": {"margin_from": "none", "check_memory": False, "max_degenerate_share": 1.0},
    },
    "dpo": {
        "learning_rate": 5.0e-5,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 4,
        "max_length": 384,
        "beta": 0.1,
        "logging_steps": 10,
        "save_strategy": "no",
        "peft": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear"},
        "prefdata": {
            "confidence_weighting": "none",
            "check_memory": False,
            "max_degenerate_share": 1.0,
        },
    },
}


def fold_of(keys: Sequence[str] | pl.Series, folds: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..folds-1) of each row from its key (a pair_id, or a prompt_id to keep a
    prompt's pairs together): the distinct keys ordered by a seeded hash and dealt
    round-robin, so folds differ by at most one key and a row's fold depends only on its
    key and the seed (never on its label or its position)."""
    if folds < 2:
        raise InputError(f"folds must be at least 2, got {folds}")
    ids = [str(i) for i in keys]
    distinct = sorted(set(ids))
    digest = {
        i: hashlib.blake2b(f"{seed}\x1f{i}".encode(), digest_size=8).hexdigest() for i in distinct
    }
    order = sorted(distinct, key=lambda k: (digest[k], k))
    fold = {k: j % folds for j, k in enumerate(order)}
    return np.array([fold[i] for i in ids], dtype=np.int64)


def _digest(train: pl.DataFrame, settings: Mapping[str, Any]) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for row in train.select("pair_id", "chosen", "rejected").iter_rows():
        h.update("\x1f".join(row).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def crossfit_reward_scores(
    pairs: pl.DataFrame,
    *,
    folds: int = 3,
    seed: int = 0,
    method: RewardMethod = "reward",
    model: str | Path = "smollm2",
    overrides: Sequence[str] = (),
    max_pairs_per_fold: int | None = 400,
    work_dir: str | Path | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Out-of-fold reward scores for every pair (see the module doc).

    Args:
        pairs: pairs table (pair_id, prompt, chosen, rejected, ...).
        folds: K; each pair is scored by the model trained on the other K-1 folds.
        seed: fold assignment, training-set sample and the trainer's seed.
        method: "reward" (LoRA reward head) or "dpo" (implicit reward of a LoRA policy).
        model: base model, "smollm2" (the embedded SmolLM2-135M) or a local folder.
        overrides: recipe overrides on top of the built-in small recipe, e.g.
            "num_train_epochs=2", "max_length=1024", "peft.r=16".
        max_pairs_per_fold: train each fold on a seeded sample of at most this many pairs
            (None: all); every pair is still scored.
        work_dir: where fold models and scores are kept for resuming (default: a temporary
            folder, removed afterwards).
        batch_size: pairs per scoring batch.
        progress: progress bars on stderr.

    Returns: (scores, report). scores: pair_id, score_chosen, score_rejected, margin
    (chosen - rejected), fold; row order as in `pairs`. report: method, folds, seed, per-fold
    train_pairs / scored / seconds / resumed, and the held-out accuracy of each fold's model
    on the labels as given (the share of pairs with margin > 0).
    """
    from prefdata.schema import validate

    pairs = validate(pairs, "pairs")
    if method not in BASE_RECIPES:
        raise InputError(f"method must be 'reward' or 'dpo', got {method!r}")
    if pairs.height < 2 * folds:
        raise InputError(f"cross-fitting needs at least {2 * folds} pairs, got {pairs.height}")
    fold = fold_of(pairs["prompt_id"], folds, seed)
    recipe = {**BASE_RECIPES[method], "seed": seed}
    settings = {
        "method": method,
        "model": str(model),
        "overrides": list(overrides),
        "recipe": recipe,
        "seed": seed,
    }
    report: dict[str, Any] = {"method": method, "folds": folds, "seed": seed, "per_fold": []}
    with tempfile.TemporaryDirectory(prefix="prefdata-crossfit-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        parts = []
        for k in range(folds):
            held = pairs.filter(pl.Series(fold == k))
            train = pairs.filter(pl.Series(fold != k))
            if max_pairs_per_fold is not None and train.height > max_pairs_per_fold:
                train = train.sample(max_pairs_per_fold, seed=seed + k, shuffle=False)
            part, info = _fold_scores(
                train,
                held,
                root,
                k,
                settings,
                recipe,
                method,
                model,
                overrides,
                batch_size,
                progress,
            )
            parts.append(part.with_columns(pl.lit(k, dtype=pl.Int64).alias("fold")))
            report["per_fold"].append(info)
    scores = pairs.select("pair_id").join(
        pl.concat(parts), on="pair_id", how="left", maintain_order="left"
    )
    report["held_out_accuracy"] = float((scores["margin"] > 0).mean())  # type: ignore[arg-type]
    return scores, report


def _fold_scores(
    train: pl.DataFrame,
    held: pl.DataFrame,
    root: Path,
    k: int,
    settings: Mapping[str, Any],
    recipe: Mapping[str, Any],
    method: RewardMethod,
    model: str | Path,
    overrides: Sequence[str],
    batch_size: int,
    progress: bool,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    from prefdata.io.tables import read_table, write_table
    from prefdata.train import train as run_training
    from prefdata.train.evaluation import score_pairs

    key = _digest(train, settings)
    out = root / f"fold_{k}"
    cached = root / f"fold_{k}.scores.parquet"
    stamp = root / f"fold_{k}.key"
    info: dict[str, Any] = {"fold": k, "train_pairs": train.height, "scored": held.height}
    start = time.perf_counter()
    if stamp.is_file() and stamp.read_text() == key and cached.is_file():
        table = read_table(cached)
        if set(held["pair_id"]) <= set(table["pair_id"]):
            info.update(resumed=True, seconds=0.0)
            return table.select("pair_id", "score_chosen", "score_rejected", "margin"), info
    trained = out / "prefdata-train.json"
    if not (stamp.is_file() and stamp.read_text() == key and trained.is_file()):
        stamp.unlink(missing_ok=True)
        run_training(
            method,
            recipe={"method": method, **recipe},
            data=train,
            model=model,
            out=out,
            overrides=overrides,
        )
        # The stamp is written after the model: a crash mid-training leaves no stamp.
        stamp.write_text(key)
    info["train_seconds"] = time.perf_counter() - start
    table, _ = score_pairs(out, held, batch_size=batch_size, progress=progress)
    table = table.select("pair_id", "score_chosen", "score_rejected", "margin")
    write_table(table, cached)
    info.update(
        resumed=False,
        seconds=time.perf_counter() - start,
        held_out_accuracy=float((table["margin"] > 0).mean()),  # type: ignore[arg-type]
    )
    return table, info

"""Reward model on pairs with TRL's RewardTrainer, with a per-pair margin from confidence.

Input: a pairs table. TRL sees conversational rows (`prompt` messages, `chosen` / `rejected`
one assistant message each) and a `margin` column; its loss is
-log sigmoid(r(chosen) - r(rejected) - margin).

Coin flips (`prefdata.min_confidence`, 0.5): pairs whose confidence is at most this are left
out (counted as `dropped_coin_flip`). A 0.5 pair gets margin 0, which is TRL's plain loss at
full weight: the labellers could not tell the sides apart, yet the model would learn to
separate them. Pairs without a confidence are kept.

Margin (`prefdata:` section):

- `margin_from: confidence` (default): the Bradley-Terry reward gap the pair's confidence
  implies, logit(confidence), clipped to [0, logit(max_confidence)] and times `margin_scale`.
  A sure pair (0.99) asks for a gap of 4.6, a 0.6 pair for 0.4, a pair without confidence
  for none, which is TRL's plain loss.
- `margin_from: margin`: the pairs table's own `margin` column (e.g. a rating gap) times
  `margin_scale`; null -> 0.
- `margin_from: none`: no margin column at all.

prefdata always decides the `margin` column: the pairs table's own `margin` (kept by the TRL
exporter) would otherwise reach TRL's RewardTrainer, which uses any column of that name.

The model is the causal LM checkpoint with a new one-output score head
(AutoModelForSequenceClassification); with LoRA, PEFT trains the head fully and the adapter.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from prefdata.train.data import TOO_LONG, check_kept, drop_coin_flips
from prefdata.train.method import Data, MethodRun, build_trainer, read_training_table
from prefdata.train.outputs import Prepared
from prefdata.train.recipe import MethodSpec, Recipe, RecipeError
from prefdata.train.reference import trainable_parameters

__all__ = ["PREFDATA_DEFAULTS", "SPEC", "margins", "prepare", "reward_rows"]

PREFDATA_DEFAULTS: dict[str, Any] = {
    # Pairs whose confidence is at most this (0.5: a coin flip) are left out: with a margin of
    # 0 they would still train with the full plain loss. null keeps every pair.
    "min_confidence": 0.5,
    "margin_from": "confidence",
    "margin_scale": 1.0,
    "max_confidence": 0.99,
}
_MARGIN_SOURCES = ("confidence", "margin", "none")


def _reward_config() -> type:
    from trl import RewardConfig

    return RewardConfig


SPEC = MethodSpec(
    "reward", _reward_config, PREFDATA_DEFAULTS, task_type="SEQ_CLS", reference="none"
)


def margins(pairs: pl.DataFrame, settings: dict[str, Any]) -> pl.Series | None:
    """The per-pair margin column (see the module doc), or None for `margin_from: none`."""
    source = settings["margin_from"]
    if source not in _MARGIN_SOURCES:
        raise RecipeError(
            f"prefdata.margin_from must be one of {', '.join(_MARGIN_SOURCES)}, got '{source}'",
            column="prefdata.margin_from",
        )
    scale = float(settings["margin_scale"])
    if source == "none":
        return None
    if source == "margin":
        return (pairs["margin"].cast(pl.Float64).fill_null(0.0) * scale).alias("margin")
    top = float(settings["max_confidence"])
    if not 0.5 < top < 1.0:
        raise RecipeError(
            "prefdata.max_confidence must lie in (0.5, 1)", column="prefdata.max_confidence"
        )
    c = pairs["confidence"].cast(pl.Float64).fill_null(0.5).clip(0.5, top)
    return ((c / (1.0 - c)).log() * scale).alias("margin")


def reward_rows(pairs: pl.DataFrame, settings: dict[str, Any]) -> pl.DataFrame:
    """Pairs -> TRL conversational preference rows (prompt, chosen, rejected[, margin])."""
    from prefdata.io.exporters import to_trl

    rows = to_trl(pairs, conversational=True, minimal=True)
    margin = margins(pairs, settings)
    return rows if margin is None else rows.with_columns(margin)


def prepare(recipe: Recipe, data: Data, run: MethodRun) -> Prepared:
    """Build the reward-model trainer from a resolved recipe and a pairs table."""
    from trl import RewardTrainer

    recipe = recipe.copy()
    notes: list[str] = []
    table, source, _ = read_training_table(data, SPEC, recipe, notes)
    table, coin_flips = drop_coin_flips(
        table, recipe.prefdata["min_confidence"], notes, source=source
    )
    rows = reward_rows(table, recipe.prefdata)

    config, models = run.load(recipe, SPEC)
    eval_rows = run.eval_rows(SPEC, lambda held, _: reward_rows(held, recipe.prefdata))
    trainer = build_trainer(RewardTrainer, config, models, rows, eval_rows)
    margin_stats: dict[str, Any] = {"margin_from": recipe.prefdata["margin_from"]}
    if "margin" in rows.columns:
        m = rows["margin"]
        margin_stats.update(
            {
                "margin_mean": float(m.mean()),  # type: ignore[arg-type]
                "margin_max": float(m.max()),  # type: ignore[arg-type]
                "pairs_margin_zero": int((m == 0).sum()),
            }
        )
    report: dict[str, Any] = {
        "model": models.path,
        "data": source,
        "pairs": rows.height,
        "dropped_coin_flip": coin_flips,
        "pairs_after_tokenization": len(trainer.train_dataset),
        "model_loaded": models.loaded,
        **margin_stats,
        "max_confidence_margin": math.log(
            float(recipe.prefdata["max_confidence"])
            / (1 - float(recipe.prefdata["max_confidence"]))
        ),
        "weights_dtype": models.dtype,
        "finetune": models.finetune,
        "reference": "none (reward model)",
        "trainable_parameters": trainable_parameters(trainer.model),
        "notes": notes,
    }
    check_kept(report, trainer, rows.height, rows="pairs", why=TOO_LONG, source=source)
    return Prepared(trainer, SPEC, recipe, run.hardware, report)

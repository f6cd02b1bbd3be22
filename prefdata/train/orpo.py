"""ORPO (odds-ratio preference optimisation) on pairs. EXPERIMENTAL: TRL 1.16 keeps its ORPO
trainer in `trl.experimental.orpo`, whose API may change or go without a deprecation period.

Input: a pairs table; TRL sees conversational rows (prompt, chosen, rejected) and applies the
tokenizer's chat template itself. ORPO needs no reference model: its loss is the chosen
response's language-model loss plus `beta` times an odds-ratio term. Every report says
`experimental: true` and carries a warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import polars as pl

from prefdata.train.method import Data, MethodRun, build_trainer, read_training_table
from prefdata.train.outputs import Prepared
from prefdata.train.recipe import MethodSpec, Recipe
from prefdata.train.reference import trainable_parameters

__all__ = ["EXPERIMENTAL_WARNING", "SPEC", "prepare"]

EXPERIMENTAL_WARNING = (
    "ORPO runs on trl.experimental.orpo: experimental in TRL 1.16, its API and behaviour may "
    "change without a deprecation period"
)


def _import_orpo() -> Any:
    # TRL's generic notice on importing trl.experimental is replaced by the report's own
    # warning, which names what is experimental.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental.*", category=UserWarning)
        from trl.experimental import orpo
    return orpo


def _orpo_config() -> type:
    config: type = _import_orpo().ORPOConfig
    return config


SPEC = MethodSpec("orpo", _orpo_config, {}, reference="none", experimental=True)


def orpo_rows(pairs: pl.DataFrame) -> pl.DataFrame:
    """Pairs -> TRL conversational preference rows (prompt, chosen, rejected)."""
    from prefdata.io.exporters import to_trl

    return to_trl(pairs, conversational=True, minimal=True)


def prepare(recipe: Recipe, data: Data, run: MethodRun) -> Prepared:
    """Build the (experimental) ORPO trainer from a resolved recipe and a pairs table."""
    recipe = recipe.copy()
    notes: list[str] = []
    table, source, _ = read_training_table(data, SPEC, recipe, notes)
    rows = orpo_rows(table)
    if "remove_unused_columns" not in recipe.user_fields:
        # ORPO's collator needs the raw columns; TRL would switch this off itself, with a warning.
        recipe.trl["remove_unused_columns"] = False
    config, models = run.load(recipe, SPEC)
    eval_rows = run.eval_rows(SPEC, lambda held, _: orpo_rows(held))
    trainer = build_trainer(_import_orpo().ORPOTrainer, config, models, rows, eval_rows)
    report: dict[str, Any] = {
        "model": models.path,
        "data": source,
        "pairs": rows.height,
        "beta": config.beta,
        "weights_dtype": models.dtype,
        "finetune": models.finetune,
        "reference": "none (ORPO needs none)",
        "trainable_parameters": trainable_parameters(trainer.model),
        "notes": notes,
        "warnings": [EXPERIMENTAL_WARNING],
    }
    return Prepared(trainer, SPEC, recipe, run.hardware, report)

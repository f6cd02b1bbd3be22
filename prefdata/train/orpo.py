"""ORPO (odds-ratio preference optimisation) on pairs. EXPERIMENTAL: TRL 1.16 keeps its ORPO
trainer in `trl.experimental.orpo`, whose API may change or go without a deprecation period.

Input: a pairs table; TRL sees conversational rows (prompt, chosen, rejected) and applies the
tokenizer's chat template itself. ORPO needs no reference model: its loss is the chosen
response's language-model loss plus `beta` times an odds-ratio term. Every report says
`experimental: true` and carries a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import polars as pl

from prefdata.train.data import read_data, select_split, to_dataset
from prefdata.train.hardware import Hardware, detect_hardware
from prefdata.train.models import load_models
from prefdata.train.outputs import Prepared
from prefdata.train.recipe import MethodSpec, Recipe, apply_overrides, build_config

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


def prepare(
    recipe: Recipe,
    data: str | Path | pl.DataFrame,
    *,
    model: str | Path = "smollm2",
    out: str | Path,
    eval_data: str | Path | pl.DataFrame | None = None,
    hardware: Hardware | None = None,
) -> Prepared:
    """Build the (experimental) ORPO trainer from a resolved recipe and a pairs table."""
    hw = hardware or detect_hardware()
    recipe = apply_overrides(recipe, [])
    table, source, _ = read_data(data, SPEC.data_contracts)
    notes: list[str] = []
    table = select_split(table, recipe.prefdata["split"], notes)
    rows = orpo_rows(table)
    if "remove_unused_columns" not in recipe.user_fields:
        # ORPO's collator needs the raw columns; TRL would switch this off itself, with a warning.
        recipe.trl["remove_unused_columns"] = False
    config = build_config(recipe, SPEC, out)
    models = load_models(recipe, SPEC, hw, model, config)
    eval_dataset = None
    if eval_data is not None:
        eval_table, _, _ = read_data(eval_data, SPEC.data_contracts)
        eval_dataset = to_dataset(orpo_rows(eval_table))
    trainer = _import_orpo().ORPOTrainer(
        model=models.policy,
        args=config,
        train_dataset=to_dataset(rows),
        eval_dataset=eval_dataset,
        processing_class=models.tokenizer,
        peft_config=models.peft_config,
    )
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    report: dict[str, Any] = {
        "model": models.path,
        "data": source,
        "pairs": rows.height,
        "beta": config.beta,
        "weights_dtype": models.dtype,
        "finetune": "full" if recipe.prefdata["full_finetune"] else "lora",
        "reference": "none (ORPO needs none)",
        "trainable_parameters": int(trainable),
        "notes": notes,
        "warnings": [EXPERIMENTAL_WARNING],
    }
    return Prepared(trainer, SPEC, recipe, hw, report)

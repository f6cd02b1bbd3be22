"""What every training method's `prepare` shares, declared once: the run it prepares
(`MethodRun`), reading its table, building its TRL trainer and the report lines they all write.

A method module's `prepare(recipe, data, run)` takes a resolved recipe, its data (a path or a
table) and a MethodRun: the model training starts from, the output folder, the optional
held-out data and the hardware. prefdata.train.prepare builds the MethodRun from its keyword
arguments; rlhf builds one per stage. Keeping the four in one object keeps the eight methods'
signatures from drifting apart (they had been copied into each).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from prefdata.train.hardware import Hardware
    from prefdata.train.models import Models
    from prefdata.train.recipe import MethodSpec, Recipe

__all__ = ["Data", "MethodRun", "build_trainer", "read_training_table"]

Data = str | Path | pl.DataFrame
"""A method's data: a table file or a polars DataFrame."""


@dataclass(frozen=True)
class MethodRun:
    """Where and on what a method trains, beside its recipe and data: `model` ("smollm2", a
    model folder or a previous training output), `out` (the output folder), `eval_data`
    (held-out data, or None) and the `hardware` it runs on."""

    out: str | Path
    hardware: Hardware
    model: str | Path = "smollm2"
    eval_data: Data | None = None

    def load(self, recipe: Recipe, spec: MethodSpec) -> tuple[Any, Models]:
        """The method's TRL config, then the models (after the config, so DeepSpeed ZeRO-3 can
        partition the weights as they load; see prefdata.train.models.load_models)."""
        from prefdata.train.models import load_models
        from prefdata.train.recipe import build_config

        config = build_config(recipe, spec, self.out)
        return config, load_models(recipe, spec, self.hardware, self.model, config)

    def eval_rows(
        self, spec: MethodSpec, rows: Callable[[pl.DataFrame, str], pl.DataFrame]
    ) -> pl.DataFrame | None:
        """`rows(table, contract)` of the held-out data (read and checked against the method's
        contracts, every split kept), or None without held-out data."""
        from prefdata.train.data import read_data

        if self.eval_data is None:
            return None
        table, _, contract = read_data(self.eval_data, spec.data_contracts)
        return rows(table, contract)


def read_training_table(
    data: Data, spec: MethodSpec, recipe: Recipe, notes: list[str]
) -> tuple[pl.DataFrame, str | None, str]:
    """The method's table (checked against its contracts), cut to the recipe's
    `prefdata.split`; its source path and the contract it met. Notes what the split kept."""
    from prefdata.train.data import read_data, select_split

    table, source, contract = read_data(data, spec.data_contracts)
    return select_split(table, recipe.prefdata["split"], notes), source, contract


def build_trainer(
    trainer_class: Any,
    config: Any,
    models: Models,
    rows: pl.DataFrame,
    eval_rows: pl.DataFrame | None,
    **extra: Any,
) -> Any:
    """`trainer_class` (a TRL trainer) on the training rows and held-out rows, with the loaded
    policy, tokenizer and LoRA config; `extra` adds the method's own arguments (ref_model,
    reward_funcs, data_collator, callbacks)."""
    from prefdata.train.data import to_dataset

    return trainer_class(
        model=models.policy,
        args=config,
        train_dataset=to_dataset(rows),
        eval_dataset=None if eval_rows is None else to_dataset(eval_rows),
        processing_class=models.tokenizer,
        peft_config=models.peft_config,
        **extra,
    )

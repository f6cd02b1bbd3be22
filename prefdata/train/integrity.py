"""The token-level pair check before the first training step (prefdata.quality.token_integrity).

DPO, KTO (on pairs) and reward training run it on the rows they will train on, with the
trainer's own tokenizer, chat template, `max_length` and truncation mode. More than
`prefdata.max_degenerate_share` (default 0.05) of degenerate pairs refuses the run with one
line naming the share, the reasons and the fixes (`--allow-degenerate` sets the share to 1).
Otherwise the degenerate pairs are left out before TRL sees them (they carry no gradient, or
TRL would drop them itself) and the report's `token_integrity` says which and why.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from prefdata.errors import InputError
from prefdata.quality.token_integrity import (
    Budget,
    degenerate_ids,
    pair_token_integrity,
    refusal,
)
from prefdata.train.recipe import MethodSpec, Recipe, RecipeError, build_config

__all__ = ["CHECKED_METHODS", "budget_of", "check_pairs"]

CHECKED_METHODS = ("dpo", "kto", "reward")
"""Methods whose trainer renders and cuts pairs the way the check mirrors (TRL 1.16)."""
_LISTED_IDS = 1000


def budget_of(spec: MethodSpec, recipe: Recipe) -> Budget:
    """The length budget TRL's config for the method of `spec` gets from a resolved recipe."""
    with tempfile.TemporaryDirectory() as tmp:
        config = build_config(recipe, spec, tmp)
    mode = getattr(config, "truncation_mode", "keep_start")
    return Budget(spec.name, config.max_length, mode)  # type: ignore[arg-type]


def check_pairs(
    spec: MethodSpec | None, recipe: Recipe, data: str | Path | pl.DataFrame, model: str | Path
) -> tuple[str | Path | pl.DataFrame, dict[str, Any] | None]:
    """(the data to train on, the report part) after the check; InputError when too many
    pairs are degenerate. Data that is not a pairs table (KTO rows) passes unchecked."""
    from prefdata.models.loader import load_tokenizer
    from prefdata.train.data import read_data, select_split

    if spec is None or spec.name not in CHECKED_METHODS:
        return data, None
    limit = recipe.prefdata["max_degenerate_share"]
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 <= limit <= 1:
        raise RecipeError(
            f"prefdata.max_degenerate_share must be a share between 0 and 1, got {limit!r}",
            source=recipe.source,
            column="prefdata.max_degenerate_share",
        )
    table, source, contract = read_data(data, spec.data_contracts)
    if contract != "pairs":
        return data, None
    rows = select_split(table, recipe.prefdata["split"], [])
    budget = budget_of(spec, recipe)
    tokenizer = load_tokenizer(model, need_chat_template=True)
    details, report = pair_token_integrity(rows, tokenizer, budget)
    line = refusal(report, float(limit))
    if line is not None:
        raise InputError(line, source=source)
    dropped = degenerate_ids(details)
    report.update(max_degenerate_share=float(limit), dropped=len(dropped))
    if not dropped:
        return data, report
    report["dropped_pair_ids"] = dropped[:_LISTED_IDS]
    if len(dropped) > _LISTED_IDS:
        report["dropped_pair_ids_listed"] = f"the first {_LISTED_IDS} of {len(dropped)}"
    return table.filter(~pl.col("pair_id").is_in(dropped)), report

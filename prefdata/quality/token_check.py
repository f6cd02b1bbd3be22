"""The token-level pair check as an option group of `prefdata audit` (TokenCheck), defaulting
to a training recipe's budget; the check itself is prefdata.quality.token_integrity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import polars as pl

from prefdata.quality.token_integrity import (
    Budget,
    integrity_issues,
    load_check_tokenizer,
    pair_token_integrity,
)
from prefdata.stage import File

__all__ = ["TokenCheck", "token_check"]


@dataclass(frozen=True)
class TokenCheck:
    """Pair integrity at the token level: render each pair as the TRL trainer will (its chat
    template and truncation) and flag the pairs it would see as identical, empty or cut. Off
    unless `max_length` or `recipe` is given.

    Args:
        max_length: the trainer's max_length in tokens; turns the token check on (default:
            the recipe's)
        truncation_mode: keep_start or keep_end, as TRL's DPO cuts (default: the recipe's,
            else keep_start; KTO always keeps the start, the reward trainer drops instead)
        tokenizer: smollm2 (the embedded model's) or a local model folder: the tokenizer and
            chat template the trainer uses
        train_method: the trainer whose rendering to mirror: dpo, kto or reward (default: the
            recipe's method, else dpo)
        recipe: a training recipe (YAML) whose max_length and truncation_mode are the defaults
    """

    max_length: int | None = None
    truncation_mode: Literal["keep_start", "keep_end"] | None = None
    tokenizer: str = "smollm2"
    train_method: Literal["dpo", "kto", "reward"] | None = None
    recipe: Annotated[str | None, File(mapping=True)] = None

    @property
    def wanted(self) -> bool:
        return self.max_length is not None or self.recipe is not None

    def budget(self) -> Budget:
        """The budget: the options given, else the recipe's (read as `prefdata train` reads
        it), else TRL's keep_start."""
        method = self.train_method
        max_length, mode = self.max_length, self.truncation_mode
        if self.recipe is not None:
            from prefdata.train import load_recipe, spec
            from prefdata.train.integrity import budget_of
            from prefdata.train.recipe import read_recipe

            method = method or read_recipe(self.recipe).method  # type: ignore[assignment]
            assert method is not None
            from_recipe = budget_of(spec(method), load_recipe(method, self.recipe))
            max_length = max_length if max_length is not None else from_recipe.max_length
            mode = mode or from_recipe.truncation_mode
        return Budget(method or "dpo", max_length, mode or "keep_start")


def token_check(pairs: pl.DataFrame, options: TokenCheck) -> tuple[pl.DataFrame, dict[str, Any]]:
    """(issue rows, report) of the token-level check on `pairs` with `options`."""
    budget = options.budget()
    tok, name = load_check_tokenizer(options.tokenizer)
    details, report = pair_token_integrity(pairs, tok, budget)
    report["tokenizer"] = name
    return integrity_issues(details, budget), report

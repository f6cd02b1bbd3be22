"""Hold out prompts for evaluation: a seeded share of the prompts (every pair of each) marked
`split = "test"`, so a later evaluation scores pairs whose prompts training never saw."""

from __future__ import annotations

import hashlib
import math
from typing import Annotated

import polars as pl

from prefdata.errors import InputError
from prefdata.stage import StageResult, Table, stage


def split_by_prompt(pairs: pl.DataFrame, *, heldout: float, seed: int = 0) -> pl.DataFrame:
    """Pairs with a `split` column: "test" for a seeded share `heldout` of the prompts (every
    pair of a held-out prompt, so training never sees its prompt), "train" for the rest.

    Input: a pairs table (`prompt_id`). Output: the same rows and columns plus `split`. At
    least one prompt stays in each split when there are two or more prompts and heldout > 0.
    The choice is a hash of (seed, prompt_id): stable across runs, and adding prompts never
    moves another prompt between the splits.
    """
    if not 0 <= heldout < 1:
        raise InputError(f"heldout must be a share in [0, 1), got {heldout}")
    prompts = pairs["prompt_id"].unique().to_list()
    ranked = sorted(prompts, key=lambda p: hashlib.sha256(f"{seed}/{p}".encode()).hexdigest())
    n_test = 0
    if heldout > 0 and len(ranked) > 1:
        n_test = min(max(1, math.floor(heldout * len(ranked) + 0.5)), len(ranked) - 1)
    test = ranked[:n_test]
    split = pl.when(pl.col("prompt_id").is_in(pl.Series(test, dtype=pl.String).implode()))
    return pairs.with_columns(split.then(pl.lit("test")).otherwise(pl.lit("train")).alias("split"))


@stage("split", outputs=("pairs", "heldout"))
def split_heldout(
    pairs: Annotated[pl.DataFrame, Table("pairs")], *, heldout: float = 0.2, seed: int = 0
) -> StageResult:
    """Hold out a seeded share of the prompts for evaluation: `pairs` gets a `split` column
    ("test" / "train"), `heldout` holds the test pairs alone.

    Example: prefdata split pairs.parquet --heldout 0.2 -o split.parquet

    Args:
        pairs: the pairs
        heldout: the share of prompts held out (at least one prompt on each side when there
            are two or more)
        seed: which prompts are held out (a hash of seed and prompt id: stable across runs)
    """
    marked = split_by_prompt(pairs, heldout=heldout, seed=seed)
    test = marked.filter(pl.col("split") == "test")
    report = {
        "pairs": marked.height,
        "train_pairs": marked.height - test.height,
        "heldout_pairs": test.height,
        "heldout_prompts": test["prompt_id"].n_unique(),
    }
    return StageResult(tables={"pairs": marked, "heldout": test}, report=report)

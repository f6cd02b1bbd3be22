"""Synthetic pairs: score each prompt's candidates with a scorer (a reward model, or any
function) and pair the best against the worst.

    pairs = synthetic_pairs(candidates, reward_model="path/to/rm").tables["pairs"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import polars as pl

from prefdata.errors import InputError
from prefdata.label.scorers import RewardModelScorer, Scorer
from prefdata.stage import Input, StageResult, Table, stage

__all__ = ["synthetic_pairs"]


@stage("synthetic-pairs", outputs=("pairs", "rejected"))
def synthetic_pairs(
    candidates: Annotated[pl.DataFrame, Table("candidates")],
    *,
    reward_model: Annotated[Path | None, Input("model", auto=False)] = None,
    scorer: str | Scorer | None = None,
    min_margin: float = 0.0,
    device: str = "cpu",
    source: str = "synthetic",
) -> StageResult:
    """Score each candidate with a reward model (or any scorer) and pair each prompt's best
    with its worst: the synthetic-data loop of "sample N, score, best vs worst".

    Output: `pairs` (pairs contract, one pair per prompt whose top and bottom scores differ by
    more than `min_margin`: chosen = the top completion, rejected = the bottom one, margin =
    the score gap, n_votes = 1, confidence and agreement null (one scorer's gap is not a
    probability), provenance = both scores, both generators and the scorer's name); a prompt
    whose candidates all tie (or that has a single candidate) gives no pair; `rejected`: the
    candidates the scorer gave no score (NaN or None). Report: candidates, prompts,
    prompts_all_tied, pairs_below_margin, pairs, scorer. The same scoring and pairing as
    `prefdata rule-label --pairing best-vs-worst`.

    Example: prefdata synthetic-pairs candidates.parquet --reward-model rm/ -o pairs.parquet

    Args:
        candidates: the candidates (several per prompt)
        reward_model: a reward-model folder (a `prefdata train reward` output, or any
            sequence-classification model with one output)
        scorer: instead of a reward model: a scorer spec as in `prefdata rule-label`
            (vader, length, module:function), or in Python any callable
            (prompt messages, completion) -> float (one with `score_batch` is called once)
        min_margin: the smallest score gap that makes a pair
        device: where the reward model runs (cpu, cuda)
        source: the `source` column of the pairs
    """
    # One implementation of scoring and pairing: the programmatic labeller's.
    from prefdata.label.programmatic import label_with

    if (reward_model is None) == (scorer is None):
        raise InputError("give either a reward model (--reward-model) or a scorer (--scorer)")
    chosen_scorer = RewardModelScorer(reward_model, device=device) if reward_model else scorer
    labelled = label_with(
        candidates, chosen_scorer, pairing="best-vs-worst", min_margin=min_margin, source=source
    )
    return StageResult(
        tables={"pairs": labelled.tables["pairs"]},
        rejected=labelled.rejected,
        report=labelled.report,
    )

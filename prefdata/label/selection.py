"""Which pairs a judge sees when the input has N candidates per prompt.

- "all": every unordered pair of distinct completions (optionally a seeded subset of K).
- "best-vs-worst": the highest- vs the lowest-scored completion by a `score` column; without
  one, `prefdata.label.judge.judge` first scores each candidate alone
  (`prefdata.label.pointwise`).
- "tournament": the pairs are chosen while judging, round by round, within a budget of K
  comparisons per prompt (`prefdata.label.tournament`); `select_pairs` cannot list them in
  advance.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from prefdata.errors import InputError
from prefdata.schema import with_messages

__all__ = [
    "SELECTIONS",
    "CandidateGroup",
    "Selection",
    "candidate_groups",
    "is_candidates",
    "select_pairs",
]

Selection = Literal["all", "best-vs-worst", "tournament"]
SELECTIONS: tuple[str, ...] = ("all", "best-vs-worst", "tournament")


def is_candidates(table: pl.DataFrame) -> bool:
    """A candidates table (completions to pair up), not a pairs table."""
    return "completion" in table.columns and "chosen" not in table.columns


def _check_candidates(table: pl.DataFrame, what: str) -> None:
    for col in ("prompt_id", "prompt", "completion"):
        if col not in table.columns:
            raise InputError(f"{what} needs column '{col}'", column=col)


@dataclass(frozen=True)
class CandidateGroup:
    """One prompt's candidates: `texts` are its distinct non-blank completions, in input order."""

    prompt_id: str
    prompt: list[dict[str, Any]]  # chat messages
    reference: str | None  # the `answer` column, when the input has one
    texts: tuple[str, ...]


def candidate_groups(
    candidates: pl.DataFrame, *, what: str = "pair selection"
) -> list[CandidateGroup]:
    """The candidates grouped by `prompt_id` (first-seen order); a completion repeated within a
    prompt counts once, a blank one not at all (a pair with it would teach nothing).

    Input: candidates (`prompt_id`, `prompt`, `completion`; optional `answer`).
    """
    _check_candidates(candidates, what)
    table = with_messages(candidates)
    has_answer = "answer" in table.columns
    out = []
    for (pid,), group in table.group_by("prompt_id", maintain_order=True):
        first = group.row(0, named=True)
        texts = [t for t in dict.fromkeys(group["completion"].to_list()) if t and t.strip()]
        out.append(
            CandidateGroup(
                prompt_id=str(pid),
                prompt=list(first["prompt"]),
                reference=first["answer"] if has_answer else None,
                texts=tuple(texts),
            )
        )
    return out


def select_pairs(
    candidates: pl.DataFrame,
    *,
    selection: Selection = "all",
    max_pairs_per_prompt: int | None = None,
    score_column: str = "score",
    seed: int = 0,
) -> pl.DataFrame:
    """Pairs to judge from N candidates per prompt.

    Input: candidates (`prompt_id`, `prompt`, `completion`; `score` for best-vs-worst).
    Output: `prompt_id`, `prompt`, `chosen`, `rejected` (just the two sides: which is better
    is for the judge to say) and `answer` when the input has it. "all": every unordered pair
    of distinct completions; "best-vs-worst": the highest- vs the lowest-scored completion
    (candidates with a null score left out; no pair when fewer than two have a score or
    they all score the same). `max_pairs_per_prompt` keeps a seeded random subset
    of each prompt's pairs (every prompt keeps up to K; the subset is stable across runs).
    "tournament" is refused: its pairs depend on the verdicts (`prefdata.label.tournament`).
    """
    _check_candidates(candidates, "select_pairs")
    if selection == "tournament":
        raise InputError(
            "a tournament picks its pairs from the verdicts as it goes: run it with "
            "judge(..., selection='tournament') or prefdata.label.tournament.tournament"
        )
    if selection not in SELECTIONS:
        raise InputError(f"selection must be one of {', '.join(SELECTIONS)}; got {selection!r}")
    if selection == "best-vs-worst" and score_column not in candidates.columns:
        raise InputError(
            f"best-vs-worst needs a pointwise score per candidate in column '{score_column}' "
            "(prefdata.label.pointwise.score_candidates writes one)",
            column=score_column,
        )
    if max_pairs_per_prompt is not None and max_pairs_per_prompt < 1:
        raise InputError(f"max_pairs_per_prompt must be >= 1, got {max_pairs_per_prompt}")
    table = with_messages(candidates)
    rows: list[dict[str, Any]] = []
    has_answer = "answer" in table.columns
    for (pid,), group in table.group_by("prompt_id", maintain_order=True):
        texts = [t for t in dict.fromkeys(group["completion"].to_list()) if t and t.strip()]
        first = group.row(0, named=True)
        if selection == "best-vs-worst":
            scored = group.filter(
                pl.col(score_column).is_not_null()
                & pl.col("completion").is_not_null()
                & (pl.col("completion").str.strip_chars() != "")
            ).sort(score_column, descending=True, maintain_order=True)
            if scored.height < 2 or scored[score_column][0] == scored[score_column][-1]:
                continue
            best, worst = scored["completion"][0], scored["completion"][-1]
            combos = [(best, worst)] if best != worst else []
        else:
            combos = list(itertools.combinations(texts, 2))
        if max_pairs_per_prompt is not None and len(combos) > max_pairs_per_prompt:
            # Seeded per prompt: adding prompts never changes another prompt's subset.
            rng = random.Random(f"{seed}/{pid}")
            combos = rng.sample(combos, max_pairs_per_prompt)
        for x, y in combos:
            row = {"prompt_id": pid, "prompt": first["prompt"], "chosen": x, "rejected": y}
            if has_answer:
                row["answer"] = first["answer"]
            rows.append(row)
    schema: dict[str, Any] = {
        "prompt_id": pl.String,
        "prompt": table.schema["prompt"],
        "chosen": pl.String,
        "rejected": pl.String,
    }
    if has_answer:
        schema["answer"] = pl.String
    return pl.DataFrame(rows, schema=schema)

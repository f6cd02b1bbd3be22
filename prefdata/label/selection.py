"""Which pairs a judge sees when the input has N candidates per prompt.

- "all": every unordered pair of distinct completions (optionally a seeded subset of K).
- "best-vs-worst": the highest- vs the lowest-scored completion by a `score` column; without
  one, `prefdata.label.judge.judge` first scores each candidate alone
  (`prefdata.label.pointwise`).
- "tournament": the pairs are chosen while judging, round by round, within a budget of K
  comparisons per prompt (`prefdata.label.tournament`); `select_pairs_with_report` cannot
  list them in advance.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from prefdata import ids
from prefdata.errors import InputError
from prefdata.schema import MESSAGES, with_messages

__all__ = [
    "SELECTIONS",
    "SKIP_REASONS",
    "CandidateGroup",
    "Selection",
    "candidate_groups",
    "is_candidates",
    "pair_items",
    "select_pairs_with_report",
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


SKIP_REASONS: tuple[str, ...] = ("fewer_than_two_distinct", "fewer_than_two_scored", "all_equal")


def select_pairs_with_report(
    candidates: pl.DataFrame,
    *,
    selection: Selection = "all",
    max_pairs_per_prompt: int | None = None,
    score_column: str = "score",
    seed: int = 0,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Pairs to judge from N candidates per prompt, and how many prompts gave none (and why).

    Input: candidates (`prompt_id`, `prompt`, `completion`; `score` for best-vs-worst).
    Output: `prompt_id` (as text), `prompt`, `chosen`, `rejected` (just the two sides: which
    is better is for the judge to say) and `answer` when the input has it. Prompts and
    completions as `candidate_groups` gives them (a repeat counts once, a blank not at all).
    "all": every unordered pair of distinct completions; "best-vs-worst": the highest- vs
    the lowest-scored completion (a null score left out; a completion repeated with several
    scores has their mean; the first of tied best, the last of tied worst, in input order).
    `max_pairs_per_prompt` keeps a seeded random subset of each prompt's pairs (every
    prompt keeps up to K; the subset is stable across runs). "tournament" is refused: its
    pairs depend on the verdicts (`prefdata.label.tournament`).
    Report: selection, prompts, prompts_with_pairs, pairs, and `skipped`: the prompts that
    gave no pair, by reason (each of SKIP_REASONS, 0 when none): fewer_than_two_distinct
    (under two distinct non-blank completions), fewer_than_two_scored (best-vs-worst: under
    two of them with a score), all_equal (best-vs-worst: they all score the same).
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
    groups = candidate_groups(candidates, what="select_pairs")
    scores: dict[tuple[str, str], list[float]] = {}
    if selection == "best-vs-worst":
        for pid, text, score in zip(
            candidates["prompt_id"], candidates["completion"], candidates[score_column], strict=True
        ):
            if score is not None:
                scores.setdefault((str(pid), text), []).append(float(score))
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    rows: list[dict[str, Any]] = []
    has_answer = "answer" in candidates.columns
    for g in groups:
        if len(g.texts) < 2:
            skipped["fewer_than_two_distinct"] += 1
            continue
        if selection == "best-vs-worst":
            rated = [
                (sum(got) / len(got), text)
                for text in g.texts
                if (got := scores.get((g.prompt_id, text)))
            ]
            if len(rated) < 2:
                skipped["fewer_than_two_scored"] += 1
                continue
            # Stable: the first of tied best comes first, the last of tied worst last.
            rated.sort(key=lambda r: r[0], reverse=True)
            if rated[0][0] == rated[-1][0]:
                skipped["all_equal"] += 1
                continue
            combos = [(rated[0][1], rated[-1][1])]
        else:
            combos = list(itertools.combinations(g.texts, 2))
        if max_pairs_per_prompt is not None and len(combos) > max_pairs_per_prompt:
            # Seeded per prompt: adding prompts never changes another prompt's subset.
            rng = random.Random(f"{seed}/{g.prompt_id}")
            combos = rng.sample(combos, max_pairs_per_prompt)
        for x, y in combos:
            row: dict[str, Any] = {
                "prompt_id": g.prompt_id,
                "prompt": g.prompt,
                "chosen": x,
                "rejected": y,
            }
            if has_answer:
                row["answer"] = g.reference
            rows.append(row)
    schema: dict[str, Any] = {
        "prompt_id": pl.String,
        "prompt": MESSAGES,
        "chosen": pl.String,
        "rejected": pl.String,
    }
    if has_answer:
        schema["answer"] = pl.String
    pairs = pl.DataFrame(rows, schema=schema)
    report = {
        "selection": selection,
        "prompts": len(groups),
        "prompts_with_pairs": len(groups) - sum(skipped.values()),
        "pairs": pairs.height,
        "skipped": skipped,
    }
    return pairs, report


def pair_items(table: pl.DataFrame, **selection: Any) -> pl.DataFrame:
    """The pairs to judge: `item_id` (pair_id), `prompt`, `a`, `b` (canonical sides),
    `reference` (null unless the input has `answer`). Input: pairs or candidates (see module)."""
    if "completion" in table.columns and "chosen" not in table.columns:
        table, _ = select_pairs_with_report(table, **selection)
    for col in ("prompt", "chosen", "rejected"):
        if col not in table.columns:
            raise InputError(
                f"the judge needs a pairs table (prompt, chosen, rejected) or candidates "
                f"(prompt_id, prompt, completion); missing '{col}'",
                column=col,
            )
    table = ids.with_pair_ids(with_messages(table))
    sides = [
        ids.canonical_sides(c, r) for c, r in zip(table["chosen"], table["rejected"], strict=True)
    ]
    ref = (
        table["answer"]
        if "answer" in table.columns
        else pl.repeat(None, table.height, dtype=pl.String, eager=True)
    )
    out = pl.DataFrame(
        {
            "item_id": table["pair_id"],
            "prompt_id": table["prompt_id"],
            "prompt": table["prompt"],
            "a": [s[0] for s in sides],
            "b": [s[1] for s in sides],
            "reference": ref.cast(pl.String),
        }
    )
    # The same pair twice would be judged twice and counted twice in every figure.
    return out.unique("item_id", keep="first", maintain_order=True)

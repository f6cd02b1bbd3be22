"""Reading a judge's answer: a vote on a pair in one order, or a score of one candidate.

Never by looking for a letter or a number in free text:
- next-token probabilities (`Response.choice_probs`): pairwise, p(first shown) renormalised
  over "A" / "B", mapped onto canonical side a (`p_a`); pointwise, the expected rating
  sum(k * p_k) over the digits 1-9;
- anything else: the tool's input (`Response.tool_input`), checked against the schema (a
  verdict outside A / B / tie, a confidence outside 0-1, a score that is not an integer
  1-9 is an error, never a guessed label).
A reply without a valid reading is a row with `error` set and no label (or score).
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from prefdata.label.rubric import RATINGS, Rubric
from prefdata.llm.base import Response
from prefdata.schema import CONTRACTS

__all__ = [
    "VOTE_SCHEMA",
    "read_score",
    "read_vote",
    "valid_score",
    "valid_verdict",
    "verdict_problem",
    "votes_frame",
]

# The annotations contract's columns (a vote has no source record) plus the judge's own.
VOTE_SCHEMA: dict[str, pl.DataType] = {
    **{k: v for k, v in CONTRACTS["annotations"].columns.items() if k != "record_id"},
    "cache_read_tokens": pl.Int64(),
    "cache_write_tokens": pl.Int64(),
    "p_a": pl.Float64(),
    "template_version": pl.String(),
    "rubric": pl.String(),
}


def votes_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Vote rows (from `read_vote`) as a table with VOTE_SCHEMA."""
    return pl.DataFrame(rows, schema=VOTE_SCHEMA)


def read_vote(
    response: Response, order: str, annotator: str, item_id: str, rubric: Rubric, now: str
) -> dict[str, Any]:
    """One vote row (VOTE_SCHEMA) from a pairwise judge's reply in `order` ("ab": side a was
    shown first as Response A). `label` is a / b / tie on canonical sides, or null with
    `error` set. `created_at`: when the answer came (`now` for one that carries no time)."""
    row: dict[str, Any] = {
        "item_id": item_id,
        "annotator": annotator,
        "annotator_kind": "llm",
        "label": None,
        "confidence": None,
        "rationale": None,
        "raw": None,
        "error": response.error,
        "order": order,
        # All prompt tokens; the cached part of them is in the two cache columns.
        "input_tokens": response.input_tokens
        + response.cache_read_tokens
        + response.cache_write_tokens,
        "output_tokens": response.output_tokens,
        "cache_read_tokens": response.cache_read_tokens,
        "cache_write_tokens": response.cache_write_tokens,
        "cost_usd": response.cost_usd,
        "created_at": response.created_at or now,
        "p_a": None,
        "template_version": rubric.version,
        "rubric": rubric.name,
    }
    shown = {"A": "a", "B": "b"} if order == "ab" else {"A": "b", "B": "a"}
    if response.error is not None:
        if response.text:
            row["raw"] = response.text
        return row
    if response.choice_probs is not None:
        p_first = float(response.choice_probs[rubric.reading.choices[0]])
        p_a = p_first if order == "ab" else 1.0 - p_first
        row["raw"] = json.dumps({**response.choice_probs, "mass": response.choice_mass})
        row["p_a"] = p_a
        row["label"] = "a" if p_a > 0.5 else "b" if p_a < 0.5 else "tie"
        row["confidence"] = max(p_a, 1.0 - p_a)
        return row
    data = response.tool_input
    if data is None:
        row["raw"] = response.text
        row["error"] = "no verdict: the reply is not the verdict tool's input"
        return row
    row["raw"] = json.dumps(data, ensure_ascii=False, sort_keys=True)
    rationale = data.get("rationale")
    row["rationale"] = rationale if isinstance(rationale, str) else None
    problem = verdict_problem(data)
    if problem is not None:
        row["error"] = problem
        return row
    confidence = data.get("confidence")
    if confidence is not None:
        row["confidence"] = float(confidence)
    verdict = str(data["verdict"]).strip()
    row["label"] = "tie" if verdict == "tie" else shown[verdict]
    return row


def verdict_problem(data: dict[str, Any]) -> str | None:
    """Why a verdict tool's input is not a valid verdict (None when it is)."""
    verdict = data.get("verdict")
    if not isinstance(verdict, str) or verdict.strip() not in ("A", "B", "tie"):
        return f"verdict must be one of A, B, tie; got {verdict!r}"
    confidence = data.get("confidence")
    if confidence is not None and (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not (0 <= confidence <= 1)
    ):
        return f"confidence must be a number in 0-1; got {confidence!r}"
    return None


def valid_verdict(response: Response) -> bool:
    """Whether a pairwise reply is a verdict (what the call cache may keep): choice
    probabilities, or a verdict tool input with A / B / tie and a confidence in 0-1."""
    if response.error is not None:
        return False
    if response.choice_probs is not None:
        return True
    return response.tool_input is not None and verdict_problem(response.tool_input) is None


def valid_score(response: Response) -> bool:
    """Whether a pointwise reply is a rating (what the call cache may keep)."""
    return read_score(response)[2] is None


def read_score(response: Response) -> tuple[float | None, Any, str | None]:
    """(score 0-1, raw, error) of one pointwise reply: exactly one of score and error is
    set. The score is (rating - 1) / 8 (the project's 0-1 convention, lower is worse); raw is
    what the judge returned: the digit probabilities with their raw mass before
    renormalising ("mass") and the expected rating ("expected"), the tool input, or the
    text."""
    if response.error is not None:
        return None, response.text, response.error
    if response.choice_probs is not None:
        probs = {k: float(response.choice_probs[k]) for k in RATINGS}
        expected = sum(int(k) * p for k, p in probs.items())
        raw = {**probs, "mass": response.choice_mass, "expected": expected}
        return (expected - 1.0) / 8.0, raw, None
    data = response.tool_input
    if data is None:
        return None, response.text, "no score: the reply is not the score tool's input"
    raw = data
    value = data.get("score")
    rating: float | None = None
    # bool is an int in Python; a JSON true is no rating.
    if isinstance(value, int | float) and not isinstance(value, bool) and value == int(value):
        rating = float(value)
    if rating is None or not 1 <= rating <= 9:
        return None, raw, f"score must be an integer 1-9; got {value!r}"
    return (rating - 1.0) / 8.0, raw, None

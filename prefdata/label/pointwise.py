"""Pointwise scoring: an LLM judge rates each candidate alone against a rubric, so
best-vs-worst can pick its pair without a score column.

    scored, report = score_candidates(candidates, judges=["local:smollm2"], cache=CallCache())

How a rating is read (never by looking for a number in free text):
- local: no generation. One forward pass gives the next-token probabilities of the digits
  "1".."9" (`Request.choices`), renormalised over the nine; the rating is their expectation,
  sum(k * p_k). Nine and not ten: "10" is two tokens ("1", "0") in the usual tokenizers, and
  a reading by next token needs every rating to be one token of its own.
- anthropic: forced tool use with `SCORE_TOOL` (`rationale`, then `score`: integer 1-9).
- openai (OpenAI-compatible servers): the same schema as JSON output.
A reply without a valid rating (not the tool's input, a score that is not an integer 1-9, a
refusal, a backend error) gives a null score and `score_error`, never a guessed one.

Calls go through the SQLite call cache (`complete_cached`, or the Message Batches API with
`batch_state`) in chunks, so an interrupted run resumes and a re-run makes no model call.

Input: candidates (`prompt_id`, `prompt`, `completion`; optional `answer`, the reference
shown to the math rubric).
Output: the same rows and columns plus (replacing any of the same name)
- `score`: Float64 in 0-1, lower is worse ((rating - 1) / 8, the project's score
  convention); with several judges the mean over those that gave a valid rating; null
  when none did or the completion is blank.
- `score_error`: null when scored; else why not ("judge: error; judge: error", or
  "empty completion").
- `score_raw`: JSON {judge: what the judge returned}: local the nine probabilities, their
  raw mass before renormalising ("mass") and the expected rating ("expected"); others the
  tool input.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from prefdata import ids
from prefdata.errors import InputError
from prefdata.label.judge import (
    BUILTIN_RUBRICS,
    Answerer,
    Rubric,
    make_answerer,
    open_clients,
    parse_template,
    reading_request,
    reference_block,
    render_conversation,
)
from prefdata.label.selection import candidate_groups
from prefdata.llm.base import Client, Request, Response
from prefdata.llm.cache import CallCache

__all__ = [
    "RATINGS",
    "SCORE_TOOL",
    "PointwiseRubric",
    "ascore_candidates",
    "build_score_request",
    "load_pointwise_rubric",
    "pointwise_rubric_for",
    "read_score",
    "score_candidates",
]

RATINGS: tuple[str, ...] = tuple(str(k) for k in range(1, 10))
SCORE_TOOL: dict[str, Any] = {
    "name": "record_score",
    "description": "Record how good the response is, from 1 (worst) to 9 (best).",
    "input_schema": {
        "type": "object",
        "properties": {
            "rationale": {
                "type": "string",
                "description": "Two or three sentences of reasoning, written before scoring.",
            },
            "score": {"type": "integer", "minimum": 1, "maximum": 9},
        },
        "required": ["rationale", "score"],
    },
}
_TOOL_ASK = "Reason briefly, then record your score with the record_score tool."
# The local judge reads the next token, so its prompt ends by asking for exactly one digit.
_LOCAL_ASK = "Answer with a single digit from 1 (worst) to 9 (best)."
_FIELDS = ("conversation", "response", "reference_block")


@dataclass(frozen=True)
class PointwiseRubric:
    """A pointwise judge template: `system` (criteria, the cacheable prefix) and `user` with
    the fields {conversation}, {response}, {reference_block} (literal braces: {{ }})."""

    name: str
    system: str
    user: str

    @property
    def version(self) -> str:
        """Hash of the template, the score schema and the asks: a changed one never reuses
        a cached answer."""
        material = json.dumps([self.system, self.user, SCORE_TOOL, _TOOL_ASK, _LOCAL_ASK])
        return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]


def load_pointwise_rubric(rubric: str | Path | PointwiseRubric) -> PointwiseRubric:
    """A built-in pointwise rubric by name (the names of BUILTIN_RUBRICS; the files are
    rubrics/<name>.pointwise.txt) or a template file of one's own."""
    if isinstance(rubric, PointwiseRubric):
        return rubric
    name = str(rubric)
    if name in BUILTIN_RUBRICS:
        file = resources.files("prefdata.label").joinpath(f"rubrics/{name}.pointwise.txt")
        text, source = file.read_text("utf-8"), f"built-in pointwise rubric {name}"
    else:
        path = Path(rubric)
        if not path.is_file():
            raise InputError(
                f"no pointwise rubric {name!r}: not a built-in ({', '.join(BUILTIN_RUBRICS)}) "
                "nor a file"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"cannot read the rubric: {err}", source=path) from None
        name, source = path.stem, str(path)
    system, user = parse_template(
        text, source, fields=_FIELDS, required=("conversation", "response")
    )
    return PointwiseRubric(name, system, user)


def pointwise_rubric_for(rubric: str | Path | Rubric) -> PointwiseRubric:
    """The pointwise counterpart of a pairwise rubric: built-ins have one of the same name;
    a rubric of one's own needs its pointwise template named explicitly."""
    name = rubric.name if isinstance(rubric, Rubric) else str(rubric)
    if name not in BUILTIN_RUBRICS:
        raise InputError(
            f"rubric {name!r} has no built-in pointwise version: give a pointwise template "
            "(--pointwise-rubric FILE with {conversation} and {response})"
        )
    return load_pointwise_rubric(name)


def build_score_request(
    rubric: PointwiseRubric,
    item: Mapping[str, Any],
    *,
    backend: str,
    max_new_tokens: int = 400,
) -> Request:
    """The request that rates one candidate (`item`: `prompt` messages, `completion`,
    optional `reference`, `item_id`)."""
    user = rubric.user.format(
        conversation=render_conversation(item["prompt"]),
        response=item["completion"],
        reference_block=reference_block(item),
    )
    return reading_request(
        user,
        system=rubric.system,
        template_version=rubric.version,
        backend=backend,
        asks=(_LOCAL_ASK, _TOOL_ASK),
        tool=SCORE_TOOL,
        choices=RATINGS,
        custom_id=f"{item['item_id']}-score",
        max_new_tokens=max_new_tokens,
    )


def read_score(response: Response) -> tuple[float | None, Any, str | None]:
    """(score 0-1, raw, error) of one reply: exactly one of score and error is set. raw is
    what the judge returned: the digit probabilities (local), the tool input, or the text."""
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


@dataclass
class _JudgeFigures:
    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    scores: list[float] = field(default_factory=list)
    masses: list[float] = field(default_factory=list)
    error_examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "calls": self.calls,
            "errors": self.errors,
            "mean_score": sum(self.scores) / len(self.scores) if self.scores else None,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "error_examples": self.error_examples,
        }
        if self.masses:
            # How much of the next-token probability the nine digits held: low means the
            # model was not answering with a rating at all.
            out["mean_choice_mass"] = sum(self.masses) / len(self.masses)
        return out


async def ascore_candidates(
    candidates: pl.DataFrame,
    *,
    judges: Sequence[str | Client],
    cache: CallCache,
    rubric: str | Path | PointwiseRubric = "helpfulness",
    max_new_tokens: int = 400,
    client_options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_state: str | Path | None = None,
    poll_interval: float = 30.0,
    chunk_size: int = 256,
    progress: bool = False,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The async version of `score_candidates` (same arguments)."""
    if not judges:
        raise InputError("no judge given (e.g. --judge local:smollm2)")
    the_rubric = load_pointwise_rubric(rubric)
    groups = candidate_groups(candidates, what="pointwise scoring")
    # One call per distinct (prompt, completion): a text repeated in a prompt is rated once.
    items: list[dict[str, Any]] = []
    for g in groups:
        pid = ids.prompt_id(g.prompt)
        for text in g.texts:
            items.append(
                {
                    "key": (g.prompt_id, text),
                    "item_id": ids.completion_id(pid, text),
                    "prompt": g.prompt,
                    "completion": text,
                    "reference": g.reference,
                }
            )
    if batch_state:
        chunk_size = max(1, len(items))
    answer: Answerer = make_answerer(batch_state, poll_interval)
    hits_before, misses_before = cache.stats.hits, cache.stats.misses
    # per item key: judge name -> (score, raw, error)
    results: dict[tuple[str, str], dict[str, tuple[float | None, Any, str | None]]] = {}
    figures: dict[str, _JudgeFigures] = {}
    from prefdata.progress import progress_bar

    async with open_clients(judges, client_options) as clients:
        with progress_bar(len(items) * len(clients), progress, "scoring") as tick:
            for client in clients:
                name = f"{client.backend}:{client.model}"
                fig = figures.setdefault(name, _JudgeFigures())
                for start in range(0, len(items), chunk_size):
                    chunk = items[start : start + chunk_size]
                    requests = [
                        build_score_request(
                            the_rubric, it, backend=client.backend, max_new_tokens=max_new_tokens
                        )
                        for it in chunk
                    ]
                    responses = await answer(client, requests, cache)
                    for it, response in zip(chunk, responses, strict=True):
                        score, raw, error = read_score(response)
                        results.setdefault(it["key"], {})[name] = (score, raw, error)
                        fig.calls += 1
                        fig.input_tokens += (
                            response.input_tokens
                            + response.cache_read_tokens
                            + response.cache_write_tokens
                        )
                        fig.output_tokens += response.output_tokens
                        fig.cost_usd += response.cost_usd
                        if score is None:
                            fig.errors += 1
                            if len(fig.error_examples) < 3:
                                fig.error_examples.append(str(error))
                        else:
                            fig.scores.append(score)
                        if response.choice_mass is not None:
                            fig.masses.append(response.choice_mass)
                    tick(len(chunk))
    scores: list[float | None] = []
    errors: list[str | None] = []
    raws: list[str | None] = []
    for pid, text in zip(candidates["prompt_id"], candidates["completion"], strict=True):
        # The keys hold str(prompt_id), as candidate_groups does: an integer prompt_id
        # would otherwise match no result and read as unscored.
        got = results.get((str(pid), text))
        if got is None:
            scores.append(None)
            errors.append("empty completion")
            raws.append(None)
            continue
        valid = [s for s, _, _ in got.values() if s is not None]
        scores.append(sum(valid) / len(valid) if valid else None)
        errors.append(
            None if valid else "; ".join(f"{name}: {e}" for name, (_, _, e) in got.items())
        )
        raws.append(
            json.dumps(
                {name: r for name, (_, r, _) in got.items()}, ensure_ascii=False, sort_keys=True
            )
        )
    out = candidates.with_columns(
        pl.Series("score", scores, dtype=pl.Float64),
        pl.Series("score_error", errors, dtype=pl.String),
        pl.Series("score_raw", raws, dtype=pl.String),
    )
    report = {
        "candidates": out.height,
        "scored": int(out["score"].is_not_null().sum()),
        "not_scored": int(out["score"].is_null().sum()),
        "rubric": the_rubric.name,
        "template_version": the_rubric.version,
        "judges": {name: fig.as_dict() for name, fig in figures.items()},
        "new_calls": cache.stats.misses - misses_before,
        "cache_hits": cache.stats.hits - hits_before,
        "cache": cache.stats.line(),
    }
    return out, report


def score_candidates(
    candidates: pl.DataFrame,
    *,
    judges: Sequence[str | Client],
    cache: CallCache,
    rubric: str | Path | PointwiseRubric = "helpfulness",
    max_new_tokens: int = 400,
    client_options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_state: str | Path | None = None,
    poll_interval: float = 30.0,
    chunk_size: int = 256,
    progress: bool = False,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Rate every candidate alone with every judge; returns (scored candidates, report).

    judges: "backend:model" strings (client_options[backend] go to make_client) or clients.
    rubric: a built-in name (the pointwise version of that pairwise rubric) or a template
        file with {conversation} and {response} (optional {reference_block}).
    batch_state: a path turns on the Anthropic Message Batches API (see `judge`).
    Output columns `score`, `score_error`, `score_raw`: see the module docstring.
    Report: candidates, scored, not_scored, rubric, template_version, new_calls,
    cache_hits, cache, and per judge calls, errors, error_examples, mean_score, tokens,
    cost_usd (local: mean_choice_mass).
    """
    from prefdata.progress import run_sync

    return run_sync(
        ascore_candidates(
            candidates,
            judges=judges,
            cache=cache,
            rubric=rubric,
            max_new_tokens=max_new_tokens,
            client_options=client_options,
            batch_state=batch_state,
            poll_interval=poll_interval,
            chunk_size=chunk_size,
            progress=progress,
        )
    )

"""Pointwise scoring: an LLM judge rates each candidate alone against a rubric, so
best-vs-worst can pick its pair without a score column.

    scored, report = score_candidates(candidates, judges=["local:smollm2"], cache=CallCache())

How a rating is read (prefdata.label.verdicts.read_score; never by looking for a number in
free text):
- a judge that reads next-token probabilities (local): no generation. One forward pass gives
  the probabilities of the digits "1".."9" (`Request.choices`), renormalised over the nine;
  the rating is their expectation, sum(k * p_k).
- a judge with structured output (anthropic: forced tool use; openai-compatible servers:
  JSON output) fills `SCORE_TOOL` (`rationale`, then `score`: integer 1-9).
A reply without a valid rating (not the tool's input, a score that is not an integer 1-9, a
refusal, a backend error) gives a null score and `score_error`, never a guessed one.

Calls go through the SQLite call cache (`complete_cached`, or the Message Batches API with
`options.batch`), so an interrupted run resumes and a re-run makes no model call.

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

import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from prefdata import ids
from prefdata.label.requests import build_score_request
from prefdata.label.rubric import load_pointwise_rubric
from prefdata.label.runner import (
    JudgeOptions,
    judge_name,
    make_answerer,
    open_clients,
    pairs_per_chunk,
)
from prefdata.label.selection import candidate_groups
from prefdata.label.verdicts import read_score, valid_score
from prefdata.llm.base import CallUsage, Client
from prefdata.llm.cache import CallCache
from prefdata.progress import progress_bar, synced

__all__ = ["ascore_candidates", "score_candidates"]


@dataclass
class _JudgeFigures(CallUsage):
    calls: int = 0
    scores: list[float] = field(default_factory=list)
    masses: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "calls": self.calls,
            "errors": self.errors,
            "mean_score": sum(self.scores) / len(self.scores) if self.scores else None,
            **self.usage(),
        }
        if self.masses:
            # How much of the next-token probability the nine digits held: low means the
            # model was not answering with a rating at all.
            out["mean_choice_mass"] = sum(self.masses) / len(self.masses)
        return out


async def ascore_candidates(
    candidates: pl.DataFrame,
    *,
    judges: list[str | Client],
    cache: CallCache,
    options: JudgeOptions = JudgeOptions(),  # noqa: B008 - frozen, so one shared default is safe
    client_options: dict[str, dict[str, Any]] | None = None,
    progress: bool = False,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Rate every candidate alone with every judge; returns (scored candidates, report).
    `score_candidates` is the same without async.

    Args:
        judges: backend:model, e.g. local:smollm2 (repeat to average several); or clients
        options: how the calls are made and read (JudgeOptions; rubric: see below)
        client_options: library only: make_client options per backend, over those of `options`
        progress: a progress bar on stderr

    `options.rubric` is a built-in name (its pointwise version) or a pointwise template file
    with {conversation} and {response} (optional {reference_block}); `orders` does not apply.
    Output columns `score`, `score_error`, `score_raw`: see the module docstring.
    Report: candidates, scored, not_scored, rubric, template_version, new_calls,
    cache_hits, cache, and per judge calls, errors, error_examples, mean_score, tokens,
    cost_usd (local: mean_choice_mass).
    """
    the_rubric = load_pointwise_rubric(options.rubric)
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
    answer = make_answerer(options)
    hits_before, misses_before = cache.stats.hits, cache.stats.misses
    # per item key: judge name -> (score, raw, error)
    results: dict[tuple[str, str], dict[str, tuple[float | None, Any, str | None]]] = {}
    figures: dict[str, _JudgeFigures] = {}
    async with open_clients(judges, options, client_options) as clients:
        with progress_bar(len(items) * len(clients), progress, "scoring") as tick:
            for client in clients:
                name = judge_name(client)
                fig = figures.setdefault(name, _JudgeFigures())
                size = pairs_per_chunk(options, len(items), client)
                for start in range(0, len(items), size):
                    chunk = items[start : start + size]
                    requests = [
                        build_score_request(
                            the_rubric,
                            it,
                            capabilities=client.capabilities,
                            max_new_tokens=options.max_new_tokens,
                        )
                        for it in chunk
                    ]
                    responses = await answer(client, requests, cache, valid_score)
                    for it, response in zip(chunk, responses, strict=True):
                        score, raw, error = read_score(response)
                        results.setdefault(it["key"], {})[name] = (score, raw, error)
                        fig.calls += 1
                        fig.add(
                            response.input_tokens
                            + response.cache_read_tokens
                            + response.cache_write_tokens,
                            response.output_tokens,
                            response.cost_usd,
                        )
                        if score is None:
                            fig.failed(error)
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


score_candidates = synced(ascore_candidates)

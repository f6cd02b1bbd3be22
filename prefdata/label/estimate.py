"""What a judge run would cost, before spending anything: calls, tokens and USD.

    plan = estimate(pairs, judges=["anthropic:claude-sonnet-4-6"])

No client is created and no call is made. Tokens are approximate (characters / 4), priced
per judge from the price table (prefdata.llm.prices) when its backend bills per token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from prefdata.label.requests import build_request, build_score_request
from prefdata.label.rubric import (
    SCORE_TOOL,
    VERDICT_TOOL,
    Rubric,
    load_pointwise_rubric,
    load_rubric,
    pointwise_rubric_for,
)
from prefdata.label.runner import JudgeOptions
from prefdata.label.selection import Selection, candidate_groups, is_candidates, pair_items
from prefdata.llm.base import Capabilities
from prefdata.llm.factory import capabilities, parse_spec

__all__ = ["estimate"]

# Calls are counted as a remote judge with structured output sends them (the tool ask, the
# rubric as the system prefix): the only kind of judge whose tokens cost money.
_PRICED_READER = Capabilities(structured_output=True, takes_sampling_params=False, priced=True)


def _approx_tokens(text: str) -> int:
    # ~4 characters per token for English with the Claude / GPT tokenizers; an estimate is
    # for deciding whether to spend, so it is labelled approximate.
    return max(1, round(len(text) / 4))


@dataclass
class _Phase:
    """One kind of call in an estimate: how many, their own tokens, the cached prefix each."""

    calls: int = 0
    user_tokens: int = 0
    system_tokens: int = 0


def _candidate_phases(
    table: pl.DataFrame,
    rubric: Rubric,
    orders: Sequence[str],
    selection: Selection,
    max_pairs_per_prompt: int | None,
    pointwise_rubric: str | None,
) -> tuple[_Phase, _Phase, int]:
    """(pairwise phase, pointwise phase, pairs) for selections whose pairs are only known
    once judged: upper bounds (tournament: `max_comparisons`, capped; best-vs-worst without
    a score: one call per candidate, then at most one pair per prompt)."""
    from prefdata.label.tournament import max_comparisons

    groups = candidate_groups(table)
    pair = _Phase(
        system_tokens=_approx_tokens(rubric.system) + _approx_tokens(json.dumps(VERDICT_TOOL))
    )
    point = _Phase()
    if selection == "best-vs-worst":
        prub = (
            load_pointwise_rubric(pointwise_rubric)
            if pointwise_rubric
            else pointwise_rubric_for(rubric)
        )
        point.system_tokens = _approx_tokens(prub.system) + _approx_tokens(json.dumps(SCORE_TOOL))
        for g in groups:
            for text in g.texts:
                item = {"item_id": "", "prompt": g.prompt, "completion": text}
                req = build_score_request(
                    prub, {**item, "reference": g.reference}, capabilities=_PRICED_READER
                )
                point.calls += 1
                point.user_tokens += _approx_tokens(str(req.messages[0]["content"]))
    pairs = 0
    for g in groups:
        n = len(g.texts)
        if selection == "best-vs-worst":
            m = 1 if n >= 2 else 0
        else:
            m = min(max_comparisons(n), max_pairs_per_prompt or n * n)
        if not m:
            continue
        # Which pairs meet depends on the verdicts: price each as two candidates of the
        # prompt's mean length (tokens are counted from characters anyway).
        filler = "x" * round(sum(len(t) for t in g.texts) / n)
        item = {"item_id": "", "prompt": g.prompt, "a": filler, "b": filler}
        req = build_request(
            rubric, {**item, "reference": g.reference}, "ab", capabilities=_PRICED_READER
        )
        pairs += m
        pair.calls += m * len(orders)
        pair.user_tokens += m * len(orders) * _approx_tokens(str(req.messages[0]["content"]))
    return pair, point, pairs


def estimate(
    table: pl.DataFrame,
    *,
    judges: Sequence[str],
    options: JudgeOptions = JudgeOptions(),  # noqa: B008 - frozen, so one shared default is safe
    selection: Selection = "all",
    max_pairs_per_prompt: int | None = None,
    pointwise_rubric: str | None = None,
    seed: int = 0,
    output_tokens: int = 150,
    prices: Any = None,
    min_cache_tokens: int = 1024,
) -> dict[str, Any]:
    """Calls and USD of `judge` with the same arguments, before spending anything.

    Tokens are approximate (characters / 4); `output_tokens` per call is the expected reply
    (a rationale plus the verdict or score). For each judge whose backend bills per token,
    three prices: online, batch (the Message Batches discount) and batch + prompt caching
    (the rubric, sent as the cached system prefix, billed at the cache-read price after the
    first call). Anthropic caches only prefixes of at least `min_cache_tokens` (1,024 for
    Sonnet / Opus, 2,048 for Haiku); a shorter rubric gets no caching and the report says
    so. Judges that are not billed (local) cost 0. Candidates with selection "tournament",
    or "best-vs-worst" without a `score` column (which first rates every candidate:
    `pointwise_calls_per_judge`), give upper bounds (`pairs_upper_bound` true): the pairs
    are only known once judged. `calls_per_judge` counts every call; `all_pairs`
    (candidates input) is what "all" would judge.
    """
    from prefdata.llm.prices import load_prices

    the_rubric = load_rubric(options.rubric)
    orders = options.order_list
    table_prices = load_prices(prices)
    adaptive = is_candidates(table) and (
        selection == "tournament" or (selection == "best-vs-worst" and "score" not in table.columns)
    )
    if adaptive:
        pair, point, n_pairs = _candidate_phases(
            table, the_rubric, orders, selection, max_pairs_per_prompt, pointwise_rubric
        )
    else:
        items = pair_items(
            table, selection=selection, max_pairs_per_prompt=max_pairs_per_prompt, seed=seed
        )
        system = _approx_tokens(the_rubric.system) + _approx_tokens(json.dumps(VERDICT_TOOL))
        pair, point, n_pairs = _Phase(system_tokens=system), _Phase(), items.height
        for r in items.to_dicts():
            for o in orders:
                req = build_request(the_rubric, r, o, capabilities=_PRICED_READER)
                pair.calls += 1
                pair.user_tokens += _approx_tokens(str(req.messages[0]["content"]))
    phases = [p for p in (pair, point) if p.calls]
    calls = pair.calls + point.calls
    out: dict[str, Any] = {
        "pairs": n_pairs,
        "pairs_upper_bound": adaptive,
        "orders": list(orders),
        "calls_per_judge": calls,
        "pointwise_calls_per_judge": point.calls,
        "approx_input_tokens_per_judge": sum(
            p.user_tokens + p.calls * p.system_tokens for p in phases
        ),
        "approx_output_tokens_per_judge": calls * output_tokens,
        "cached_prefix_tokens": pair.system_tokens,
        "judges": {},
    }
    if is_candidates(table):
        out["all_pairs"] = sum(
            len(g.texts) * (len(g.texts) - 1) // 2 for g in candidate_groups(table)
        )
    for spec in judges:
        backend, model, _ = parse_spec(spec)
        entry: dict[str, Any] = {"calls": calls}
        if not capabilities(backend).priced:
            entry["usd"] = 0.0
        elif table_prices.lookup(model) is None:
            entry["usd"] = None
            entry["note"] = f"no price known for {model!r} (add one with a prices file)"
        else:

            def usd(batch: bool, cache: bool, model: str = model) -> float:
                total = 0.0
                for p in phases:
                    cacheable = cache and p.system_tokens >= min_cache_tokens and p.calls > 1
                    total += table_prices.cost(
                        model,
                        input_tokens=p.user_tokens
                        + (0 if cacheable else p.calls * p.system_tokens),
                        output_tokens=p.calls * output_tokens,
                        cache_write_tokens=p.system_tokens if cacheable else 0,
                        cache_read_tokens=(p.calls - 1) * p.system_tokens if cacheable else 0,
                        batch=batch,
                    )
                return total

            entry["usd_online"] = round(usd(False, True), 6)
            entry["usd_online_no_cache"] = round(usd(False, False), 6)
            entry["usd_batch"] = round(usd(True, False), 6)
            entry["usd_batch_cached"] = round(usd(True, True), 6)
            entry["prompt_caching_applies"] = pair.system_tokens >= min_cache_tokens
        out["judges"][spec] = entry
    return out

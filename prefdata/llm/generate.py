"""Candidate generation: N samples per prompt from one or several models.

    result = generate(prompts, models=["smollm2"], n=4, cache=CallCache())
    candidates, rejected = result.tables["candidates"], result.rejected

Seeds: sample k of a prompt gets the seed `derive_seed(base, prompt_id, k)` (base = params.seed,
0 when unset), so every sample is a different draw, a re-run draws the same samples, and each
sample has its own call-cache key (without distinct seeds, N identical requests would share one
key and the cache would answer all N with the first). Remote backends that ignore seeds still
get distinct keys, so a resumed run never repeats their calls either.

Several models (UltraFeedback style): `n` is the number of samples per prompt in total, spread
over the models in turn (`mix="spread"`, the default); the model taking sample 0 rotates from
prompt to prompt (by a hash of the prompt id), so with n < len(models) every model still gets
its share of prompts, like UltraFeedback drawing 4 of its 17 models per prompt. `mix="each"`
asks every model for `n` samples (n * len(models) per prompt).

Resuming: every answer is in the call cache the moment it arrives, so an interruption loses
only the calls in flight and the re-run answers everything before them from the cache.
Prompts are sent in chunks of `chunk_size` (the progress bar's steps).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import polars as pl

from prefdata import ids
from prefdata.errors import InputError, PrefdataError
from prefdata.llm.base import Client, Message, Params, Request, Response
from prefdata.llm.cache import CacheStats, CallCache, complete_cached
from prefdata.llm.factory import Backend
from prefdata.progress import progress_bar, synced
from prefdata.schema import MESSAGES, conform, contract_of, split_problems, with_messages
from prefdata.stage import Resource, StageResult, Table, stage

__all__ = [
    "REJECTED_SCHEMA",
    "agenerate",
    "assign_models",
    "derive_seed",
    "generate",
]

Mix = Literal["spread", "each"]

REJECTED_SCHEMA: dict[str, pl.DataType] = {
    "prompt_id": pl.String(),
    "prompt": MESSAGES,
    "generator": pl.String(),
    "sample": pl.Int64(),
    "seed": pl.Int64(),
    "completion": pl.String(),
    "reason": pl.String(),  # one of _REJECT_REASONS
    "error": pl.String(),
}
"""Columns of the rejected table `generate` returns beside the candidates."""

_REJECT_REASONS = ("error", "empty", "duplicate", "invalid_prompt")

# --- seeds and model assignment ---


def derive_seed(base: int, prompt_id: str, sample: int) -> int:
    """The seed of sample `sample` of `prompt_id`: a 63-bit hash of the three.

    63 bits: torch, numpy and the OpenAI API all take it as a non-negative int64.
    """
    digest = hashlib.blake2b(f"{base}\x1f{prompt_id}\x1f{sample}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") >> 1


def assign_models(
    prompt_id: str, n: int, n_models: int, *, base: int = 0, mix: Mix = "spread"
) -> list[int]:
    """Model index for each sample of one prompt (see the module docstring for `mix`)."""
    if mix == "each":
        return [m for m in range(n_models) for _ in range(n)]
    if mix != "spread":
        raise InputError(f"mix must be 'spread' or 'each', got {mix!r}")
    start = derive_seed(base, prompt_id, -1) % n_models
    return [(start + k) % n_models for k in range(n)]


# --- generation ---


@dataclass
class _Sample:
    prompt_id: str
    prompt: list[Message]
    model: int
    sample: int
    request: Request


# answers for samples, in order, with the cache (plain calls, or the Batches API)
Answerer = Callable[[Sequence[Client], Sequence[_Sample], CallCache], Awaitable[list[Response]]]


def _prompt_table(prompts: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(good prompts, rejected rows) from the prompts contract or any table with `prompt`."""
    if "prompt" not in prompts.columns:
        raise InputError(
            f"the prompts table needs a 'prompt' column (text or chat messages); it has "
            f"{prompts.columns}",
            column="prompt",
        )
    if prompts.height == 0:
        raise InputError("no prompts: the prompts table is empty")
    table = with_messages(prompts)
    if "prompt_id" not in table.columns:
        table = ids.with_prompt_ids(table)
    table = conform(table.select("prompt_id", "prompt"), "prompts")
    good, bad = split_problems(table, "prompts")
    rejected = pl.DataFrame(
        {
            "prompt_id": bad["prompt_id"],
            "prompt": bad["prompt"],
            "reason": pl.Series(["invalid_prompt"] * bad.height, dtype=pl.String),
            "error": bad["reason"],
        }
    )
    return good, _rejected_frame(rejected.to_dicts())


def _rejected_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        [{k: r.get(k) for k in REJECTED_SCHEMA} for r in rows], schema=REJECTED_SCHEMA
    )


def _stats_delta(before: CacheStats, after: CacheStats) -> CacheStats:
    return CacheStats(
        hits=after.hits - before.hits,
        misses=after.misses - before.misses,
        stored=after.stored - before.stored,
        errors=after.errors - before.errors,
    )


# The async function is the stage (declared here, so awaiting it converts and checks the
# tables as the sync one does); `generate` runs it to completion.
@stage("generate", outputs=("candidates", "rejected"))
async def agenerate(
    prompts: Annotated[pl.DataFrame, Table("prompts", check=False)],
    *,
    models: Sequence[str | Client] = ("smollm2",),
    backend: Backend = "local",
    n: int = 4,
    params: Params = Params(),  # noqa: B008 - frozen, so one shared default is safe
    cache: Annotated[CallCache, Resource("cache")],
    base_url: str | None = None,
    max_concurrency: int | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    client_options: Mapping[str, Any] | None = None,
    mix: Mix = "spread",
    chunk_size: int = 32,
    max_prompts: int | None = None,
    batch: bool = False,
    batch_poll_interval: float = 30.0,
    progress: Annotated[bool, Resource("progress")] = True,
) -> StageResult:
    """N candidate completions per prompt from one or several models, resumable from the call
    cache; identical, empty and failed completions go to `rejected` with a reason.
    `generate` is the same without async (use this one inside a running event loop: a
    notebook, a server).

    Input: the prompts contract, or any table with a `prompt` column (text or chat messages;
    `prompt_id` is computed when missing). Prompts that break the contract (blank, duplicate
    id) are not sent and go to `rejected` as `invalid_prompt`.

    Output: table `candidates` (prompt_id, prompt, completion_id, completion, generator,
    params; `completion` is the reply with surrounding whitespace removed; `params` is JSON
    with the backend and its endpoint, the sampling parameters with the sample's own seed,
    the sample index and the finish_reason, "length" marking a reply cut at
    max_new_tokens); `rejected`
    (REJECTED_SCHEMA rows with reason `error` (the call failed; not cached, so a re-run tries
    again), `empty`, `duplicate` (the same text as an earlier sample of the same prompt) or
    `invalid_prompt`); report: counts (prompts, requests, candidates, dropped_<reason>,
    truncated_at_max_new_tokens), the tokens and cost of the new calls, `new_calls`,
    `cache_hits` and the cache statistics line (`cache`).

    Raises InputError for a bad prompts table or options, PrefdataError when every call of the
    first chunk fails (a dead server, a wrong model).

    Example: prefdata generate prompts.parquet -o candidates.parquet --model smollm2 --n 4

    Args:
        prompts: the prompts (or any table with a `prompt` column)
        models: model names for `backend` (repeat to mix generators); in Python a ready Client
            object may stand in (used as it is and not closed here)
        backend: local | openai | anthropic | vllm (vLLM in this process, on a GPU)
        n: samples per prompt ("spread": n in total over the models; "each": n per model)
        params: sampling parameters of every call; `seed` is the base seed (0 when unset)
            from which each sample's own seed is derived
        cache: the call cache
        base_url: server URL (openai-compatible, or a proxy for anthropic)
        max_concurrency: server models: calls in flight at once
        device: local models: cpu | cuda | auto
        batch_size: local models: prompts per forward pass
        client_options: other client settings, e.g. timeout=30
            (prefdata.llm.factory.make_client)
        mix: spread (n in all, across the models) or each (n per model)
        chunk_size: prompts per chunk (progress steps; every answer is cached as it comes)
        max_prompts: use only the first N prompts
        batch: anthropic: the Message Batches API (half price; resumable: its state is kept
            in a `batches` folder beside the call cache, so an interrupted run collects its
            batches instead of submitting again)
        batch_poll_interval: seconds between Message Batches polls
        progress: a progress bar over prompts, on stderr
    """
    started = time.monotonic()
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    if chunk_size < 1:
        raise InputError(f"chunk_size must be at least 1, got {chunk_size}")
    if not models:
        raise InputError("no models: give at least one")
    base = params.seed if params.seed is not None else 0
    if max_prompts is not None:
        prompts = prompts.head(max_prompts)
    good, rejected_prompts = _prompt_table(prompts)

    owned: list[Client] = []
    clients: list[Client] = []
    try:
        for m in models:
            if isinstance(m, str):
                from prefdata.llm.factory import make_client

                named = {
                    "base_url": base_url,
                    "max_concurrency": max_concurrency,
                    "device": device,
                    "batch_size": batch_size,
                }
                options = {
                    **dict(client_options or {}),
                    **{k: v for k, v in named.items() if v is not None},
                }
                client = make_client(backend, m, **options)
                owned.append(client)
            else:
                client = m
            clients.append(client)
        names = [c.model for c in clients]
        where = [(c.backend, getattr(c, "endpoint", None), c.model) for c in clients]
        if len(set(where)) < len(names):
            raise InputError(f"the same model is listed twice: {names}")
        answer: Answerer = _answer
        if batch:
            answer = _batch_answerer(clients, _batch_state(cache, clients), batch_poll_interval)
            # One submission for everything: the Batches API is for bulk work, and each
            # batch takes minutes to hours; the state file makes it resumable instead.
            chunk_size = max(1, good.height)
        elif all(c.capabilities.whole_table for c in clients):
            # An engine that batches by itself (vLLM) is fed the whole table at once.
            chunk_size = max(1, good.height)

        before = replace(cache.stats)
        kept: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        spent = {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
        finish_length = 0
        errors_seen: dict[str, int] = {}
        rows = good.select("prompt_id", "prompt").to_dicts()
        succeeded = 0
        with progress_bar(len(rows), progress, "generating") as advance:
            for start in range(0, len(rows), chunk_size):
                chunk = rows[start : start + chunk_size]
                samples = _chunk_samples(chunk, clients, n, params, base, mix)
                answers = await answer(clients, samples, cache)
                by_prompt: dict[str, set[str]] = {}
                for s, r in zip(samples, answers, strict=True):
                    if not r.cached:
                        spent["input_tokens"] += r.input_tokens
                        spent["output_tokens"] += r.output_tokens
                        spent["cost_usd"] += r.cost_usd
                    row = {
                        "prompt_id": s.prompt_id,
                        "prompt": s.prompt,
                        "generator": names[s.model],
                        "sample": s.sample,
                        "seed": s.request.params.seed,
                    }
                    text = (r.text or "").strip()
                    if r.error is not None:
                        errors_seen[r.error] = errors_seen.get(r.error, 0) + 1
                        rejected.append({**row, "reason": "error", "error": r.error})
                        continue
                    succeeded += 1
                    if not text:
                        rejected.append({**row, "reason": "empty", "completion": r.text})
                        continue
                    seen = by_prompt.setdefault(s.prompt_id, set())
                    if text in seen:
                        rejected.append({**row, "reason": "duplicate", "completion": text})
                        continue
                    seen.add(text)
                    finish_length += r.finish_reason == "length"
                    kept.append(
                        {
                            "prompt_id": s.prompt_id,
                            "prompt": s.prompt,
                            "completion_id": ids.completion_id(s.prompt_id, text),
                            "completion": text,
                            "generator": names[s.model],
                            "params": ids.canonical_json(
                                {
                                    "backend": clients[s.model].backend,
                                    "endpoint": getattr(clients[s.model], "endpoint", None),
                                    **asdict(s.request.params),
                                    "sample": s.sample,
                                    "finish_reason": r.finish_reason,
                                }
                            ),
                        }
                    )
                if start == 0 and succeeded == 0 and errors_seen:
                    # A backend that fails every call of the first chunk (server down, wrong
                    # model) would fail the rest too; stopping costs nothing (errors are not
                    # cached, nothing was paid for).
                    first = next(iter(errors_seen))
                    raise PrefdataError(
                        f"every call in the first chunk failed ({sum(errors_seen.values())} "
                        f"calls); first error: {first}"
                    )
                advance(len(chunk))
    finally:
        for client in owned:
            await client.aclose()

    columns = contract_of("candidates").required
    candidates = conform(pl.DataFrame(kept, schema=columns), "candidates")
    all_rejected = pl.concat([rejected_prompts, _rejected_frame(rejected)])
    stats = _stats_delta(before, cache.stats)
    reasons = all_rejected["reason"].value_counts()
    report: dict[str, Any] = {
        "prompts": prompts.height,
        "prompts_used": good.height,
        "backend": sorted({c.backend for c in clients}),
        "models": names,
        "n": n,
        "mix": mix,
        "base_seed": base,
        "batches_api": batch,
        "requests": stats.hits + stats.misses,
        "candidates": candidates.height,
        **{f"dropped_{r}": 0 for r in _REJECT_REASONS},
        **{f"dropped_{r}": int(c) for r, c in reasons.iter_rows()},
        "truncated_at_max_new_tokens": finish_length,
        "new_calls": stats.misses,
        "cache_hits": stats.hits,
        "cache": stats.line() if cache.enabled else "call cache: off (--no-cache)",
        **spent,
        "error_examples": dict(sorted(errors_seen.items(), key=lambda kv: -kv[1])[:3]),
        "seconds": round(time.monotonic() - started, 3),
    }
    return StageResult(tables={"candidates": candidates}, rejected=all_rejected, report=report)


def _batch_state(cache: CallCache, clients: Sequence[Client]) -> Path:
    """Where a Batches run keeps its state: beside the call cache, keyed by the models, so a
    re-run with the same cache collects the batches it submitted instead of paying again."""
    digest = hashlib.sha256("|".join(c.model for c in clients).encode()).hexdigest()[:12]
    folder = cache.path.parent / "batches"
    return folder / f"generate.{digest}.json"


def _chunk_samples(
    chunk: list[dict[str, Any]],
    clients: Sequence[Client],
    n: int,
    params: Params,
    base: int,
    mix: Mix,
) -> list[_Sample]:
    samples = []
    for row in chunk:
        pid = str(row["prompt_id"])
        prompt = [{"role": m["role"], "content": m["content"]} for m in row["prompt"]]
        for k, m in enumerate(assign_models(pid, n, len(clients), base=base, mix=mix)):
            seed = derive_seed(base, pid, k)
            request = Request(
                messages=tuple(prompt),
                params=replace(params, seed=seed),
                # Batch APIs key results on it; [a-zA-Z0-9_-]{1,64} as Anthropic requires.
                custom_id=f"{pid}-{m}-{k}",
            )
            samples.append(_Sample(pid, prompt, m, k, request))
    return samples


async def _answer(
    clients: Sequence[Client], samples: Sequence[_Sample], cache: CallCache
) -> list[Response]:
    """Answers for `samples` in order: one cached call per model, the models concurrently."""
    by_model = _by_model(samples)
    results = await asyncio.gather(
        *(
            complete_cached(clients[m], [samples[i].request for i in idx], cache)
            for m, idx in by_model.items()
        )
    )
    return _in_order(len(samples), zip(by_model.values(), results, strict=True))


def _by_model(samples: Sequence[_Sample]) -> dict[int, list[int]]:
    """The positions of the samples of each model (one call or batch per model)."""
    by_model: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_model.setdefault(s.model, []).append(i)
    return by_model


def _in_order(n: int, answered: Iterable[tuple[list[int], list[Response]]]) -> list[Response]:
    """The answers of the models' (positions, responses) put back in sample order."""
    out: list[Response | None] = [None] * n
    for idx, responses in answered:
        for i, r in zip(idx, responses, strict=True):
            out[i] = r
    return [r if r is not None else Response(error="internal: no answer") for r in out]


def _batch_answerer(clients: Sequence[Client], state: Path, poll_interval: float) -> Answerer:
    """Answers through the Anthropic Message Batches API (prefdata.llm.batches.run_batch),
    one state file per model: `state` itself for one model, `<stem>.<i><suffix>` for model i
    of several."""
    from prefdata.llm.anthropic import AnthropicClient
    from prefdata.llm.batches import run_batch

    for c in clients:
        if not c.capabilities.message_batches:
            raise InputError(
                f"the Batches API (--batch) needs the anthropic backend (or another with "
                f"message batches); "
                f"{c.model!r} uses {c.backend!r}"
            )
    paths = (
        [state]
        if len(clients) == 1
        else [state.with_name(f"{state.stem}.{i}{state.suffix}") for i in range(len(clients))]
    )

    async def answer(
        clients: Sequence[Client], samples: Sequence[_Sample], cache: CallCache
    ) -> list[Response]:
        by_model = _by_model(samples)
        results = []
        for m, idx in by_model.items():
            results.append(
                await run_batch(
                    cast(AnthropicClient, clients[m]),
                    [samples[i].request for i in idx],
                    cache=cache,
                    state_path=paths[m],
                    poll_interval=poll_interval,
                )
            )
        return _in_order(len(samples), zip(by_model.values(), results, strict=True))

    return answer


generate = synced(agenerate)

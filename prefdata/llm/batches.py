"""Anthropic Message Batches: bulk work at half the price, resumable.

    responses = await run_batch(client, requests, cache=cache, state_path="gen.batches.json")

1. Requests already in the call cache are answered from it and never submitted.
2. The rest are submitted (custom_id = the request's cache key, so a result finds its
   request and its cache entry on any later run; the caller's `Request.custom_id` is kept in
   the state file beside it). Right after each submission the batch id and its custom_ids
   are written to `state_path` (atomically).
3. Every batch in the state file is polled until it ends, then its results are streamed
   into the cache as they arrive (successes only).
4. A run that finds a state file (an earlier run was interrupted) does not resubmit what is
   in it: it polls and collects those batches, and submits only requests that are in none.
   When every batch of the state file is collected, the file is removed.

Errored, expired and canceled items come back as that item's `Response.error` and are not
cached, so the next run resubmits them. Costs use the batch price (PriceTable.batch_discount,
50%). Not covered: an interruption in the instant between the server accepting a batch and
the state file being written (the batch then runs, unrecorded, and is paid once more).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefdata.errors import InputError
from prefdata.io.tables import atomic_path
from prefdata.llm.anthropic import AnthropicClient
from prefdata.llm.base import Request, Response
from prefdata.llm.cache import Accept, CallCache, call_key
from prefdata.llm.retry import BackendError, CallFailed

log = logging.getLogger(__name__)

STATE_VERSION = 1
# The API takes up to 100,000 requests or 256 MB per batch; smaller batches end sooner and
# lose less if one fails to submit.
MAX_BATCH_REQUESTS = 10_000
MAX_BATCH_BYTES = 100_000_000


@dataclass(frozen=True)
class BatchProgress:
    """One poll of one batch: what the server reports."""

    batch_id: str
    status: str  # in_progress / canceling / ended
    total: int
    processing: int
    succeeded: int
    errored: int
    expired: int
    canceled: int


ProgressFn = Callable[[BatchProgress], None]


@dataclass
class _State:
    path: Path
    model: str
    batches: list[dict[str, Any]]

    @classmethod
    def load(cls, path: Path, model: str) -> _State:
        if not path.exists():
            return cls(path, model, [])
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InputError(
                f"unreadable batch state file ({err}); it records batches already "
                "paid for, so it is not overwritten: fix or remove it",
                source=path,
            ) from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise InputError("not a prefdata batch state file (version 1)", source=path)
        if data.get("model") != model:
            raise InputError(
                f"this state file belongs to model {data.get('model')!r}, not "
                f"{model!r}; use another state path",
                source=path,
            )
        return cls(path, model, list(data.get("batches", [])))

    def save(self) -> None:
        data = {
            "version": STATE_VERSION,
            "backend": "anthropic",
            "model": self.model,
            "batches": self.batches,
        }
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")

    def pending(self) -> list[dict[str, Any]]:
        return [b for b in self.batches if not b.get("collected")]


def _chunks(items: list[tuple[str, dict[str, Any]]], max_requests: int) -> list[list[Any]]:
    out: list[list[Any]] = []
    size = 0
    for item in items:
        n = len(json.dumps(item[1]))
        if not out or len(out[-1]) >= max_requests or size + n > MAX_BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(item)
        size += n
    return out


async def _call(client: AnthropicClient, what: str, fn: Callable[[], Any]) -> Any:
    try:
        return await client.retrier.call(fn)
    except CallFailed as failed:
        raise BackendError(f"anthropic batches: {what}: {failed.failure.message}") from None


async def _wait_and_collect(
    client: AnthropicClient,
    state: _State,
    entry: dict[str, Any],
    by_key: dict[str, Request],
    results: dict[str, Response],
    cache: CallCache,
    poll_interval: float,
    progress: ProgressFn | None,
    deadline: float | None,
    accept: Accept | None,
) -> None:
    batch_id = entry["id"]
    batches = client.sdk.messages.batches
    while True:
        try:
            batch = await client.retrier.call(lambda: batches.retrieve(batch_id))
        except CallFailed as failed:
            if failed.failure.status == 404:
                client.retrier.fatal = None  # the batch is gone, the client is fine
                raise BackendError(
                    f"batch {batch_id} recorded in {state.path} is unknown to the server "
                    "(results are kept 29 days, and only for the account that made it); "
                    "remove the state file to submit its requests again"
                ) from None
            raise BackendError(
                f"anthropic batches: polling {batch_id}: {failed.failure.message}"
            ) from None
        counts = batch.request_counts
        if progress is not None:
            progress(
                BatchProgress(
                    batch_id,
                    batch.processing_status,
                    len(entry["custom_ids"]),
                    counts.processing,
                    counts.succeeded,
                    counts.errored,
                    counts.expired,
                    counts.canceled,
                )
            )
        if batch.processing_status == "ended":
            break
        if deadline is not None and time.monotonic() > deadline:
            raise BackendError(
                f"batch {batch_id} is still {batch.processing_status}; it keeps "
                f"running: run again later to collect it ({state.path})"
            )
        await asyncio.sleep(poll_interval)

    got: dict[str, Response] = {}

    async def fetch() -> None:
        decoder = await batches.results(batch_id)
        async for item in decoder:
            cid = item.custom_id
            result = item.result
            if result.type == "succeeded":
                response = client.to_response(result.message, by_key.get(cid), batch=True)
                response.created_at = datetime.now(UTC).isoformat(timespec="seconds")
                if response.ok and (accept is None or accept(response)):
                    cache.put(cid, client.backend, client.model, response)
            elif result.type == "errored":
                err = result.error.error
                response = Response(error=f"batch item errored: {err.type}: {err.message}")
            elif result.type == "expired":
                response = Response(
                    error="batch item expired before it was processed (24 h "
                    "limit); run again to resubmit it"
                )
            else:
                response = Response(error=f"batch item {result.type}; run again to resubmit it")
            got[cid] = response

    await _call(client, f"collecting results of {batch_id}", fetch)
    missing = set(entry["custom_ids"]) - set(got)
    for cid in missing:
        got[cid] = Response(error=f"batch {batch_id} returned no result for this request")
    results.update(got)
    entry["collected"] = True
    entry["collected_at"] = datetime.now(UTC).isoformat()
    state.save()
    log.info("batch %s collected: %d results", batch_id, len(got))


async def run_batch(
    client: AnthropicClient,
    requests: Sequence[Request],
    *,
    cache: CallCache,
    state_path: str | Path,
    poll_interval: float = 30.0,
    progress: ProgressFn | None = None,
    max_batch_requests: int = MAX_BATCH_REQUESTS,
    max_wait: float | None = None,
    accept: Accept | None = None,
) -> list[Response]:
    """One Response per request, in order, through the Message Batches API (see the module
    docstring). `max_wait`: seconds to poll before giving up with a BackendError (the
    batches keep running; run again to collect them); None waits as long as it takes.
    `accept`: only answers it takes are cached (as in `complete_cached`)."""
    state_path = Path(state_path)
    state = _State.load(state_path, client.model)
    keys = [call_key(client, r) for r in requests]
    out: dict[str, Response] = {}
    by_key: dict[str, Request] = {}
    for key, request in zip(keys, requests, strict=True):
        by_key.setdefault(key, request)
        if key not in out and (hit := cache.get(key)) is not None:
            out[key] = hit
    cache.stats.hits += sum(1 for k in keys if k in out)
    cache.stats.misses += sum(1 for k in keys if k not in out)

    in_flight = {cid for b in state.pending() for cid in b["custom_ids"]}
    todo: list[tuple[str, dict[str, Any]]] = []
    for key, request in by_key.items():
        if key in out or key in in_flight:
            continue
        try:
            todo.append((key, client.message_params(request)))
        except ValueError as err:
            out[key] = Response(error=str(err))
    if in_flight:
        log.info("resuming %d batch(es) from %s", len(state.pending()), state_path)

    for chunk in _chunks(todo, max_batch_requests):
        body: list[Any] = [{"custom_id": key, "params": params} for key, params in chunk]

        async def submit(body: list[Any] = body) -> Any:
            return await client.sdk.messages.batches.create(requests=body)

        batch = await _call(client, "submitting a batch", submit)
        # Recorded before anything else can be interrupted: a resumed run finds it here.
        state.batches.append(
            {
                "id": batch.id,
                "custom_ids": [key for key, _ in chunk],
                "labels": {key: by_key[key].custom_id for key, _ in chunk if by_key[key].custom_id},
                "submitted_at": datetime.now(UTC).isoformat(),
                "collected": False,
            }
        )
        state.save()
        log.info("submitted batch %s with %d requests", batch.id, len(chunk))

    deadline = None if max_wait is None else time.monotonic() + max_wait
    results: dict[str, Response] = {}
    for entry in state.pending():
        await _wait_and_collect(
            client, state, entry, by_key, results, cache, poll_interval, progress, deadline, accept
        )
    if not state.pending() and state_path.exists():
        state_path.unlink()

    responses = []
    for key in keys:
        response = out.get(key) or results.get(key)
        if response is None:  # only if the state file named it collected but it is not cached
            response = Response(error="no batch result for this request; run again")
        responses.append(response)
    cache.stats.errors += sum(1 for r in responses if not r.ok)
    return responses

"""The call runner every judging operation shares: its options, its clients, and the loop
that sends pairs to a judge and reads the votes.

    options = JudgeOptions(rubric="helpfulness", orders="both")
    async with open_clients(["anthropic:claude-sonnet-4-6"], options) as clients:
        rows = await judge_pairs(clients[0], items, rubric, options, cache, answer=...)

`JudgeOptions` is the one set of judge settings (judge, tournament, pointwise scoring and
critique take it). Every call goes through the call cache (`complete_cached`), or, with
`batch`, through the Anthropic Message Batches API (`run_batch`), so an interrupted run
resumes and a re-run pays nothing twice.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast

from prefdata.errors import InputError
from prefdata.label.requests import build_request
from prefdata.label.rubric import BUILTIN_RUBRICS, Rubric
from prefdata.label.verdicts import read_vote, valid_verdict
from prefdata.llm.base import Client, Request, Response
from prefdata.llm.cache import Accept, CallCache, call_key, complete_cached
from prefdata.llm.factory import backend_options, client_for
from prefdata.stage import File

__all__ = [
    "ORDER_CHOICES",
    "Answerer",
    "JudgeOptions",
    "failures",
    "judge_name",
    "judge_pairs",
    "make_answerer",
    "open_clients",
    "pairs_per_chunk",
]

Orders = Literal["both", "ab", "ba"]
ORDER_CHOICES: dict[str, tuple[str, ...]] = {"both": ("ab", "ba"), "ab": ("ab",), "ba": ("ba",)}


@dataclass(frozen=True)
class JudgeOptions:
    """How judge calls are made and read; shared by judge, tournament, pointwise scoring and
    critique.

    Args:
        rubric: a built-in rubric (helpfulness, honesty, math, ...) or a template file
        orders: both | ab | ba: orders each pair is shown in (both cancels position bias)
        max_new_tokens: reply budget of a judge call (local judges read one token)
        base_url: server URL of the judges (openai-compatible; a proxy for anthropic)
        max_concurrency: server judges: calls in flight at once
        device: local judges: cpu | cuda | auto
        batch_size: local judges: requests per forward pass
        batch: anthropic: the Message Batches API (half price; resumable, its state is
            kept beside the call cache)
        poll_interval: seconds between Message Batches polls
        chunk_size: pairs sent together (with the Batches API: one submission for all)
        order_retries: times a failed order is asked again when the other order answered
            (a pair still judged in one order only is set aside by consensus)
        max_failed_share: the run fails (exit 1, after writing its outputs) when more than
            this share of the judge calls failed; it always fails when every call failed
    """

    rubric: Annotated[str, File(names=BUILTIN_RUBRICS)] = "helpfulness"
    orders: Orders = "both"
    max_new_tokens: int = 400
    base_url: str | None = None
    max_concurrency: int | None = None
    device: str | None = None
    batch_size: int | None = None
    batch: bool = False
    poll_interval: float = 30.0
    chunk_size: int = 256
    order_retries: int = 1
    max_failed_share: float = 0.05

    def __post_init__(self) -> None:
        if self.orders not in ORDER_CHOICES:
            raise InputError(f"orders must be both, ab or ba; got {self.orders!r}")
        for name in ("max_new_tokens", "chunk_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.poll_interval < 0:
            raise InputError(f"poll_interval must be >= 0, got {self.poll_interval}")
        if self.order_retries < 0:
            raise InputError(f"order_retries must be >= 0, got {self.order_retries}")
        if not 0 <= self.max_failed_share <= 1:
            raise InputError(f"max_failed_share must be in 0-1, got {self.max_failed_share}")

    @property
    def order_list(self) -> tuple[str, ...]:
        """The orders as a tuple of "ab" / "ba"."""
        return ORDER_CHOICES[self.orders]

    def client_options(
        self, extra: Mapping[str, Mapping[str, Any]] | None = None
    ) -> dict[str, dict[str, Any]]:
        """make_client options per backend: these settings, then `extra[backend]` over them
        (library callers: API keys, retry policies, price tables)."""
        out = backend_options(
            base_url=self.base_url,
            max_concurrency=self.max_concurrency,
            device=self.device,
            batch_size=self.batch_size,
        )
        for backend, options in (extra or {}).items():
            out.setdefault(backend, {}).update(options)
        return out


def judge_name(client: Client) -> str:
    """The annotator name of a judge's votes: "backend:model", and "@endpoint" for a backend
    that is a server of one's own (its URL says which model answered: two servers may serve
    one model name; the name is also the judge spec that asks it again)."""
    name = f"{client.backend}:{client.model}"
    endpoint = getattr(client, "endpoint", None)
    return f"{name}@{endpoint}" if endpoint and client.capabilities.needs_base_url else name


def failures(
    votes_or_calls: int, failed: int, options: JudgeOptions
) -> tuple[dict[str, Any], str | None]:
    """(the report's `failures` block, the failure line or None): a run fails when every
    call failed, or when more than `options.max_failed_share` of them did."""
    share = failed / votes_or_calls if votes_or_calls else 0.0
    block = {
        "calls": votes_or_calls,
        "failed": failed,
        "failed_share": round(share, 6),
        "max_failed_share": options.max_failed_share,
    }
    if votes_or_calls and failed == votes_or_calls:
        return block, f"every judge call failed ({failed} of {votes_or_calls})"
    if share > options.max_failed_share:
        return block, (
            f"{failed} of {votes_or_calls} judge calls failed ({share:.1%}, more than the "
            f"{options.max_failed_share:.0%} allowed by max_failed_share); the votes are "
            "written, a re-run asks only the failed calls again"
        )
    return block, None


@contextlib.asynccontextmanager
async def open_clients(
    judges: Sequence[str | Client],
    options: JudgeOptions,
    client_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> AsyncIterator[list[Client]]:
    """Clients for "backend:model" specs (built with `options.client_options(client_options)`)
    or the clients given; on exit closes the ones it made (a client passed in is the
    caller's to close)."""
    if not judges:
        raise InputError("no judge given (e.g. --judge anthropic:claude-sonnet-4-6)")
    per_backend = options.client_options(client_options)
    clients: list[Client] = []
    try:
        for spec in judges:
            clients.append(client_for(spec, per_backend))
        yield clients
    finally:
        for spec, client in zip(judges, clients, strict=False):
            if isinstance(spec, str):
                await client.aclose()


# How a judge's requests get answered: (client, requests, cache, accept) -> responses in
# order; only answers `accept` takes are cached.
Answerer = Callable[[Client, Sequence[Request], CallCache, Accept], Awaitable[list[Response]]]


async def _online(
    client: Client, requests: Sequence[Request], cache: CallCache, accept: Accept
) -> list[Response]:
    return await complete_cached(client, requests, cache, accept=accept)


async def _batches(
    client: Client, requests: Sequence[Request], cache: CallCache, accept: Accept, poll: float
) -> list[Response]:
    if not client.capabilities.message_batches:
        raise InputError(
            f"the Batches API (--batch) needs the anthropic backend (or another with "
            f"message batches); {judge_name(client)} has not"
        )
    from prefdata.llm.anthropic import AnthropicClient
    from prefdata.llm.batches import run_batch

    # One state file per set of requests, beside the cache: the same run resumed finds its
    # submitted batches there (run_batch collects them instead of submitting again), and two
    # different runs never share one.
    keys = "".join(call_key(client, r) for r in requests)
    digest = hashlib.sha256(keys.encode()).hexdigest()[:16]
    state = cache.path.parent / "batches" / f"{client.model}.{digest}.json"
    return await run_batch(
        cast(AnthropicClient, client),
        requests,
        cache=cache,
        state_path=state,
        poll_interval=poll,
        accept=accept,
    )


def make_answerer(options: JudgeOptions) -> Answerer:
    """How requests get answered: online through the call cache, or with `options.batch`
    through the Anthropic Message Batches API (its state files in a `batches` folder beside
    the call cache, removed once collected)."""
    if not options.batch:
        return _online

    async def answer(
        client: Client, requests: Sequence[Request], cache: CallCache, accept: Accept
    ) -> list[Response]:
        return await _batches(client, requests, cache, accept, options.poll_interval)

    return answer


def pairs_per_chunk(options: JudgeOptions, items: int, client: Client | None = None) -> int:
    """Pairs per chunk: with the Batches API one submission for everything (a batch takes
    minutes to hours, so chunks would wait one after another; its state file already makes
    the run resumable); an engine that batches by itself (vLLM) gets everything too."""
    whole = client is not None and client.capabilities.whole_table
    return max(1, items) if options.batch or whole else options.chunk_size


async def judge_pairs(
    client: Client,
    items: Sequence[Mapping[str, Any]],
    rubric: Rubric,
    options: JudgeOptions,
    cache: CallCache,
    *,
    answer: Answerer,
    tick: Callable[[int], None] = lambda _n: None,
) -> list[dict[str, Any]]:
    """Votes (rows of `prefdata.label.verdicts.VOTE_SCHEMA`) of one judge on `items` (from
    `pair_items`: item_id, prompt, a, b, reference) in every order of `options`, in chunks
    (`chunk_size`); `tick(n)` after each chunk's n calls. Only valid verdicts are cached.

    An order that failed while the other order of its pair answered is asked again (up to
    `options.order_retries` times): one order alone would let position bias decide."""
    name = judge_name(client)
    orders = options.order_list
    size = pairs_per_chunk(options, len(items), client)
    out: list[dict[str, Any]] = []
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        jobs = [(r, o) for r in chunk for o in orders]
        requests = [
            build_request(
                rubric,
                r,
                o,
                capabilities=client.capabilities,
                max_new_tokens=options.max_new_tokens,
            )
            for r, o in jobs
        ]
        responses = await answer(client, requests, cache, valid_verdict)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        rows = [
            read_vote(response, o, name, r["item_id"], rubric, now)
            for (r, o), response in zip(jobs, responses, strict=True)
        ]
        for _ in range(options.order_retries if len(orders) > 1 else 0):
            lone = _one_order_failed(rows, len(orders))
            if not lone:
                break
            again = await answer(client, [requests[i] for i in lone], cache, valid_verdict)
            for i, response in zip(lone, again, strict=True):
                r, o = jobs[i]
                rows[i] = read_vote(response, o, name, r["item_id"], rubric, now)
        out += rows
        tick(len(jobs))
    return out


def _one_order_failed(rows: Sequence[Mapping[str, Any]], n_orders: int) -> list[int]:
    """Indices of failed votes whose pair has a valid vote in another order (`rows` hold each
    pair's orders next to each other, `n_orders` of them)."""
    out = []
    for start in range(0, len(rows), n_orders):
        group = range(start, start + n_orders)
        failed = [i for i in group if rows[i]["label"] is None]
        if failed and len(failed) < n_orders:
            out += failed
    return out

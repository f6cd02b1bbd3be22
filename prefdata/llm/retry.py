"""Retries, concurrency and rate limits shared by the remote backends.

The SDKs' own retries are switched off (max_retries=0) so these are the only ones: one
policy for both SDKs, and one that tests can observe. The policy:

- 429, 529 / other 5xx, 408 / 409 and timeouts are retried; a `retry-after-ms` or
  `retry-after` header (seconds or an HTTP date) sets the wait, otherwise exponential
  backoff with full jitter, uniform(0, min(max_delay, base_delay * 2**attempt)).
- A 429 pauses every call of the client for the server's retry-after (a rate limit is the
  account's, not one request's), so a storm of 429s is not answered with a storm of retries.
- 401 / 402 / 403 / 404 are configuration errors ("fatal"): no retries, and the client
  stops sending; so is a server that stays unreachable after all retries.
- Anything else (400 bad request, a malformed answer) fails that one call only.

`Gate` holds the concurrency limit (asyncio.Semaphore) and the optional client-side rate
limit (requests/second, a token bucket, applied as an httpx request hook right before each
request is sent); the semaphore is released while a call sleeps before its retry so other
calls keep the connection slots busy.

`SDKClient` is the part the SDK-backed clients share: the SDK's client wired to the Gate
and the Retrier, its errors classified, a list of requests answered, closing.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prefdata.errors import MissingExtraError, OptionError, PrefdataError
from prefdata.llm.base import OnAnswer, Request, Response

log = logging.getLogger(__name__)

T = TypeVar("T")


class BackendError(PrefdataError):
    """A remote backend cannot be used at all: no or wrong API key, server unreachable,
    unknown model. Raised instead of returning per-row errors for every item."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    # A server asking for a longer wait than this is obeyed only up to it; the call is
    # retried then and gets a fresh retry-after if the limit still holds.
    max_retry_after: float = 120.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: spreads the retries of many calls that failed together."""
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2.0**attempt))


@dataclass
class Failure:
    """What went wrong with one call, and what to do about it."""

    message: str
    retryable: bool = False
    fatal: bool = False  # stop the whole client (auth, unknown model)
    fatal_when_exhausted: bool = False  # e.g. connection refused: fatal after all retries
    retry_after: float | None = None  # seconds, from the server
    pause_all: bool = False  # a rate limit: every call of the client waits
    status: int | None = None  # the HTTP status, when there was an answer


class CallFailed(Exception):
    """One call failed for good (after the retries it deserved)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass
class CallStats:
    """Counters over a client's lifetime (for run summaries and the benchmark)."""

    attempts: int = 0  # HTTP calls started, retries included
    retries: int = 0
    rate_limited: int = 0  # 429 answers
    waited_s: float = 0.0  # time spent sleeping before retries
    failures: dict[str, int] = field(default_factory=dict)


def retry_after_seconds(
    headers: Mapping[str, str] | None, now: float | None = None
) -> float | None:
    """The server's requested wait: `retry-after-ms`, else `retry-after` (seconds or an
    HTTP date). None when absent or unreadable."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RateLimiter:
    """Token bucket: at most `rate` requests per second, with bursts of up to `burst`.

    Waiters go one at a time (a lock, so in arrival order), and the next slot is counted
    from the moment a request really left: when the event loop was busy and wakes a waiter
    late, the requests it held back do not leave together (a burst the server would answer
    with 429s); at most `burst - 1` intervals are made up.
    """

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        if rate <= 0:
            raise OptionError(f"must be > 0 requests/second, got {rate}", option="rate")
        self.interval = 1.0 / rate
        self.burst = max(1.0, burst)
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            wait = self._next - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            now = time.monotonic()
            self._next = max(self._next, now - (self.burst - 1.0) * self.interval) + self.interval


class Gate:
    """Concurrency limit + optional rate limit + a shared pause after a 429."""

    def __init__(
        self, max_concurrency: int, rate_limit: float | None = None, rate_burst: float = 2.0
    ) -> None:
        if max_concurrency < 1:
            raise OptionError(f"must be >= 1, got {max_concurrency}", option="max_concurrency")
        self.semaphore = asyncio.Semaphore(max_concurrency)
        # A burst of 2 makes up for timer lateness (strict spacing loses ~5% of the rate to
        # late wake-ups) while never sending more than two requests back to back.
        self.rate = RateLimiter(rate_limit, rate_burst) if rate_limit else None
        self.paused_until = 0.0

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self.semaphore:
            while (wait := self.paused_until - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            yield

    async def pace(self, request: object = None) -> None:
        """The rate limit, as an httpx "request" event hook: it runs just before the bytes
        go out, so the SDK's own work in between (the first call's lazy set-up can hold the
        event loop for tens of ms) cannot bunch paced requests together again. It covers
        every HTTP request of the client (batch polls included), retries too."""
        if self.rate is not None:
            await self.rate.acquire()

    def http_hooks(self) -> dict[str, list[Callable[[Any], Awaitable[None]]]]:
        """event_hooks for the SDK's httpx client."""
        return {"request": [self.pace]} if self.rate is not None else {}


class Retrier:
    """Runs calls through a Gate with the retry policy; remembers a fatal failure so the
    client stops sending once its configuration is known to be wrong."""

    def __init__(
        self,
        policy: RetryPolicy,
        gate: Gate,
        classify: Callable[[BaseException], Failure],
        *,
        redact: Callable[[str], str] = lambda s: s,
        seed: int | None = None,
    ) -> None:
        self.policy = policy
        self.gate = gate
        self.classify = classify
        self.redact = redact
        self.stats = CallStats()
        self.fatal: Failure | None = None
        self._rng = random.Random(seed)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """`fn()` with retries. Raises CallFailed (message already redacted)."""
        attempt = 0
        while True:
            if self.fatal is not None:
                raise CallFailed(self.fatal)
            try:
                async with self.gate.slot():
                    if self.fatal is not None:  # set while this call waited for its slot
                        raise CallFailed(self.fatal)  # noqa: TRY301 (passed on just below)
                    self.stats.attempts += 1
                    return await fn()
            except CallFailed:
                raise
            except Exception as err:  # every failure is classified (cancellation is not one)
                failure = self.classify(err)
            failure.message = self.redact(failure.message)
            self.stats.failures[failure.message[:80]] = (
                self.stats.failures.get(failure.message[:80], 0) + 1
            )
            if failure.pause_all:
                self.stats.rate_limited += 1
            if failure.fatal:
                self.fatal = failure
                raise CallFailed(failure)
            if not failure.retryable or attempt >= self.policy.max_retries:
                if failure.retryable and failure.fatal_when_exhausted:
                    self.fatal = failure
                if failure.retryable:
                    failure.message = f"{failure.message} (gave up after {attempt + 1} attempts)"
                raise CallFailed(failure)
            if failure.retry_after is not None:
                delay = min(failure.retry_after, self.policy.max_retry_after)
            else:
                delay = self.policy.backoff(attempt, self._rng)
            if failure.pause_all:
                self.gate.pause(delay)
            log.debug("retrying in %.3fs after: %s", delay, failure.message)
            self.stats.retries += 1
            self.stats.waited_s += delay
            attempt += 1
            await asyncio.sleep(delay)


def error_detail(body: object) -> tuple[str, str]:
    """(type, message) from an error body: Anthropic {"error": {"type", "message"}}, or the
    inner {"type", "message"} object the OpenAI SDK keeps."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("type") or "error"), str(inner.get("message") or "")
        return "error", str(inner)[:300]
    return "error", "" if body is None else str(body)[:300]


def classify_sdk_error(
    err: BaseException,
    sdk: Any,
    *,
    where: str,
    timeout: float,
    fatal_hints: Mapping[int, str],
) -> Failure:
    """The retry decision for an exception of the anthropic or openai SDK (both generated by
    the same tool: APITimeoutError < APIConnectionError, APIStatusError with .status_code,
    .body and .response). `fatal_hints`: status -> what to tell the user; those statuses
    stop the client."""
    if isinstance(err, sdk.APITimeoutError):
        return Failure(f"no answer within {timeout:g}s (timeout)", retryable=True)
    if isinstance(err, sdk.APIConnectionError):
        cause = err.__cause__ or err
        return Failure(
            f"cannot reach {where}: {type(cause).__name__}: {cause}",
            retryable=True,
            fatal_when_exhausted=True,
        )
    if isinstance(err, sdk.APIStatusError):
        code = int(err.status_code)
        etype, message = error_detail(err.body)
        text = f"HTTP {code} {etype}: {message}" if message else f"HTTP {code} {etype}"
        retry_after = retry_after_seconds(err.response.headers)
        if code in fatal_hints:
            return Failure(f"{where}: {fatal_hints[code]} ({text})", fatal=True, status=code)
        if code == 429:
            return Failure(
                text, retryable=True, retry_after=retry_after, pause_all=True, status=code
            )
        if code in (408, 409) or code >= 500:  # 529 = Anthropic overloaded
            return Failure(text, retryable=True, retry_after=retry_after, status=code)
        return Failure(text, status=code)  # 400 / 413 / 422: this request is at fault
    # A 200 answer whose body is not valid JSON or not the documented shape.
    return Failure(f"malformed answer from the server: {type(err).__name__}: {err}"[:500])


def make_redactor(*secrets: str | None) -> Callable[[str], str]:
    """Replaces every secret (API keys) in a text; used on every message we produce."""
    found = [s for s in secrets if s and len(s) >= 4]

    def redact(text: str) -> str:
        for secret in found:
            text = text.replace(secret, "[redacted]")
        return text

    return redact


async def run_requests(
    requests: Sequence[Request],
    one: Callable[[Request], Awaitable[Response]],
    retrier: Retrier,
    backend: str,
    on_answer: Callable[[int, Response], None] | None = None,
) -> list[Response]:
    """Answer every request concurrently (the Gate bounds it), in input order; each answer
    goes to `on_answer(index, response)` as soon as it is in.

    When the client hit a fatal failure and not a single call succeeded, raise it as a
    BackendError (wrong key, server down); when some calls did succeed they are returned
    with the failure as the others' `error`, so answers already paid for reach the cache.
    """

    async def answered(index: int, request: Request) -> Response:
        response = await one(request)
        if on_answer is not None:
            on_answer(index, response)
        return response

    responses = list(await asyncio.gather(*(answered(i, r) for i, r in enumerate(requests))))
    if retrier.fatal is not None and requests and not any(r.ok for r in responses):
        raise BackendError(f"{backend}: {retrier.fatal.message}")
    return responses


class SDKClient(ABC):
    """What the two SDK-backed clients (anthropic, openai) share: the SDK's async client with
    its own retries off and the Gate on its HTTP client, the Retrier, the classification of
    the SDK's errors, answering a list of requests, closing. A subclass sets `backend` and
    `fatal_hints`, calls `_connect` in its constructor and answers one request in `_one`."""

    backend: str
    fatal_hints: Mapping[int, str]
    sdk: Any
    retrier: Retrier
    timeout: float

    def _connect(
        self,
        package: str,
        client_class: str,
        *,
        api_key: str,
        secret: str | None,
        base_url: str | None,
        where: str,
        timeout: float,
        max_concurrency: int,
        rate_limit: float | None,
        retry_policy: RetryPolicy | None,
        max_retries: int,
    ) -> None:
        """Import the SDK `package` and set `sdk` (its `client_class`) and `retrier`.
        `secret`: redacted from every error text. `where`: how errors name the server."""
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise MissingExtraError(
                f"the {package} backend needs the `{package}` package: pip install {package}"
            ) from None
        self._module = module
        self._where = where
        self.timeout = timeout
        gate = Gate(max_concurrency, rate_limit)
        self.sdk = getattr(module, client_class)(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            # A host that does not answer at all is known within 10 s, not `timeout`.
            timeout=module.Timeout(timeout, connect=min(timeout, 10.0)),
            http_client=module.DefaultAsyncHttpxClient(event_hooks=gate.http_hooks()),
        )
        policy = retry_policy or RetryPolicy(max_retries=max_retries)
        self.retrier = Retrier(policy, gate, self.classify, redact=make_redactor(secret))

    def classify(self, err: BaseException) -> Failure:
        """Turn an SDK exception into a retry decision."""
        return classify_sdk_error(
            err, self._module, where=self._where, timeout=self.timeout, fatal_hints=self.fatal_hints
        )

    @abstractmethod
    async def _one(self, request: Request) -> Response:
        """The answer to one request (its error when it failed)."""

    async def complete(
        self, requests: Sequence[Request], on_answer: OnAnswer | None = None
    ) -> list[Response]:
        """One Response per request, in order; see run_requests."""
        return await run_requests(requests, self._one, self.retrier, self.backend, on_answer)

    async def aclose(self) -> None:
        await self.sdk.close()

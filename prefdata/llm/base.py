"""The client interface every backend implements, and the request / response types.

A backend turns a batch of `Request`s into `Response`s (same order). It never raises for a
single bad call: the response carries `error` instead, so one failure cannot lose a batch
that was already paid for. Configuration errors (no API key, server unreachable after all
retries, unknown model) raise prefdata errors before or instead of any work.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from prefdata.ids import canonical_json

Message = dict[str, Any]  # {"role": ..., "content": ...}


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, so callers ask the client instead of comparing backend names.

    reads_choice_probs: answers `Request.choices` with next-token probabilities (no text).
    structured_output: answers `Request.tool` with the tool's input (forced tool use, or JSON
        output checked against the schema).
    takes_sampling_params: honours temperature / top_p / seed (the Anthropic API rejects them).
    token_logprobs: returns per-token log-probabilities for `Request.logprobs`.
    message_batches: has the Anthropic Message Batches API (half price, resumable).
    priced: calls are billed per token (an estimate prices them from the price table).
    needs_base_url: the client cannot be made without a server URL.
    whole_table: an engine that batches by itself (vLLM): callers send it every request of a
        table in one call instead of in chunks (it caches each answer as it finishes).
    """

    reads_choice_probs: bool = False
    structured_output: bool = False
    takes_sampling_params: bool = True
    token_logprobs: bool = False
    message_batches: bool = False
    priced: bool = False
    needs_base_url: bool = False
    whole_table: bool = False


@dataclass(frozen=True)
class Params:
    """Sampling parameters. `seed` makes local sampling reproducible (servers: best effort).

    Args:
        temperature: sampling temperature (0: greedy)
        top_p: nucleus sampling mass
        max_new_tokens: the longest reply, in tokens
        seed: base seed of the samples (each sample derives its own)
        stop: stop strings (repeat for several)
    """

    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def problem(self) -> str | None:
        """Why a model in this process cannot sample with these parameters (None: it can);
        the in-process backends answer a request with it as the request's error."""
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            return f"temperature must be >= 0, got {self.temperature}"
        if not (0 < self.top_p <= 1):
            return f"top_p must be in (0, 1], got {self.top_p}"
        if self.max_new_tokens < 1:
            return f"max_new_tokens must be at least 1, got {self.max_new_tokens}"
        return None


@dataclass(frozen=True)
class Request:
    """One call.

    messages: the chat (user / assistant turns; a leading system message is allowed).
    system: a long shared instruction (rubric, constitution) sent as a cacheable prefix
        (Anthropic prompt caching; other backends prepend it as a system message).
    tool: a JSON schema {"name", "description", "input_schema"} the model must answer with
        (Anthropic forced tool use; OpenAI-compatible: JSON output checked against it).
    choices: for the local backend, candidate next tokens (e.g. ("A", "B")) whose
        probabilities are returned in `Response.choice_probs` instead of generating text.
    logprobs: return per-token log-probabilities of the generated text (local backend).
    template_version: the hash of the prompt template that built the messages, so a changed
        template never reuses an old cached answer.
    """

    messages: tuple[Message, ...]
    params: Params = field(default_factory=Params)
    system: str | None = None
    tool: dict[str, Any] | None = None
    choices: tuple[str, ...] = ()
    logprobs: bool = False
    template_version: str = ""
    custom_id: str | None = None  # the caller's id for the item (batch APIs key on it)

    def cache_key(self, backend: str, endpoint: str | None, model: str) -> str:
        """Hash of everything that determines the answer (never the API key): the backend,
        the endpoint (one model name behind two servers may be two models), the model, the
        sampling parameters and the whole request."""
        payload = {
            "backend": backend,
            "endpoint": endpoint,
            "model": model,
            "messages": list(self.messages),
            "params": asdict(self.params),
            "system": self.system,
            "tool": self.tool,
            "choices": list(self.choices),
            "logprobs": self.logprobs,
            "template_version": self.template_version,
        }
        # sha256 rather than the short content ids: a cache key collision would return a
        # wrong answer, so it gets the full 256 bits.
        return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


@dataclass
class Response:
    """One answer. Exactly one of (text / tool_input / choice_probs) or `error` is set."""

    text: str | None = None
    tool_input: dict[str, Any] | None = None
    choice_probs: dict[str, float] | None = None
    # choices mode: the raw probability the choices' first tokens hold together (before
    # choice_probs was renormalised over them); low means the model was not answering.
    choice_mass: float | None = None
    token_logprobs: list[float] | None = None
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    cached: bool = False  # served from prefdata's call cache (no new request made)
    # When the answer came (ISO 8601, UTC): kept in the cache, so a replayed answer keeps the
    # time it was made and a re-run writes the same votes.
    created_at: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Response:
        return cls(**data)


@dataclass
class CallUsage:
    """Tokens, cost and failures summed over a judge's answers (its line in a report)."""

    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    error_examples: list[str] = field(default_factory=list)

    def add(self, input_tokens: int, output_tokens: int, cost_usd: float) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost_usd += cost_usd

    def failed(self, error: object) -> None:
        """Count one failed answer; the first three errors are kept as examples."""
        self.errors += 1
        if len(self.error_examples) < 3:
            self.error_examples.append(str(error))

    def usage(self) -> dict[str, Any]:
        """The tokens, cost (rounded to 1e-6 USD) and error examples, as a report shows them."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "error_examples": self.error_examples,
        }


# Called with (index in the call, response) as each answer arrives, before `complete` returns.
OnAnswer = Callable[[int, Response], None]


class Client(Protocol):
    """What every backend offers. `complete` keeps the order of its input, and hands each
    answer to `on_answer` as soon as it has it (so the call cache stores it at once: a run
    killed mid-call loses only the calls in flight).

    backend: the backend's name (prefdata.llm.factory.BACKENDS); endpoint: where the model
    answers (a server URL; a local model's device and dtype), part of every cache key.
    """

    capabilities: Capabilities
    backend: str
    model: str

    @property
    def endpoint(self) -> str | None: ...

    async def complete(
        self, requests: Sequence[Request], on_answer: OnAnswer | None = None
    ) -> list[Response]: ...

    async def aclose(self) -> None: ...


class InProcessClient(ABC):
    """A client whose model runs in this process (local transformers, vLLM's offline engine):
    `complete` runs the blocking `_complete` in a worker thread, one request list at a time
    (the model is not re-entrant), and closing releases nothing (the weights stay loaded for
    other clients of this process)."""

    def __init__(self) -> None:
        self._run_lock = threading.Lock()

    @abstractmethod
    def _complete(self, requests: Sequence[Request], on_answer: OnAnswer) -> list[Response]:
        """The answers to `requests`, in order; `on_answer(i, response)` as each is done."""

    async def complete(
        self, requests: Sequence[Request], on_answer: OnAnswer | None = None
    ) -> list[Response]:
        """Answer `requests` in order; `on_answer` gets each answer as it is done (from the
        worker thread)."""
        if not requests:
            return []
        return await asyncio.to_thread(self.complete_sync, list(requests), on_answer)

    async def aclose(self) -> None:
        return None

    def complete_sync(
        self, requests: Sequence[Request], on_answer: OnAnswer | None = None
    ) -> list[Response]:
        """The blocking version of `complete` (for scripts and benchmarks)."""
        with self._run_lock:
            return self._complete(requests, on_answer or (lambda _i, _r: None))

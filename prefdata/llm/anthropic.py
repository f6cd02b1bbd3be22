"""Anthropic backend: the official `anthropic` SDK (AsyncAnthropic), Messages API.

- The API key comes from `api_key=` or ANTHROPIC_API_KEY. It is handed to the SDK and
  nowhere else: it is not part of cache keys or cached values, and every error text we
  build is scrubbed of it.
- `Request.system` is sent as a system block with `cache_control: ephemeral`, so the long
  shared part of many prompts (a rubric, a constitution) is billed at the cache price after
  the first call.
- Sampling parameters (temperature, top_p, seed) are not sent: API version 2026-10-21
  rejects them. Only max_new_tokens and stop apply.
- `Request.tool` becomes forced tool use (tool_choice {"type": "tool", "name": ...}); the
  tool's input lands in `Response.tool_input`.
- Token counts and cost (prefdata.llm.prices) from each answer's `usage`.
- Retries, concurrency and rate limits: prefdata.llm.retry (the SDK's own retries are off).
- One bad item gives that item's `Response.error`; a wrong key, an unknown model or an
  unreachable server raise BackendError.

Bulk work at half the price: prefdata.llm.batches.run_batch with this client.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prefdata.errors import InputError
from prefdata.llm.base import Capabilities, Params, Request, Response
from prefdata.llm.prices import PriceTable, load_prices
from prefdata.llm.retry import BackendError, CallFailed, RetryPolicy, SDKClient

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import Message

log = logging.getLogger(__name__)

BACKEND = "anthropic"
DEFAULT_ENDPOINT = "https://api.anthropic.com"
# A status that means the configuration is wrong, so every call would fail the same way.
_FATAL = {
    401: "the API key was rejected (check ANTHROPIC_API_KEY)",
    402: "billing problem on the account",
    403: "the API key is not allowed to do this",
    404: "not found (is the model name right?)",
}


class AnthropicClient(SDKClient):
    """Client for the Anthropic Messages API (see the module docstring).

    model: e.g. "claude-sonnet-4-6". base_url: another endpoint (tests: a local server).
    max_concurrency: calls in flight at once. max_retries: per call, for retryable errors.
    prices: a PriceTable, a dict or a .json / .toml file (prefdata.llm.prices).
    timeout: seconds per HTTP call. rate_limit: requests/second, client side.
    """

    backend = BACKEND
    capabilities = Capabilities(
        structured_output=True, takes_sampling_params=False, message_batches=True, priced=True
    )
    fatal_hints = _FATAL
    sdk: AsyncAnthropic

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_concurrency: int = 8,
        max_retries: int = 6,
        prices: PriceTable | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        rate_limit: float | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise BackendError(
                "no Anthropic API key: set the ANTHROPIC_API_KEY environment variable "
                "(it is read from there and never written to caches, logs or outputs)"
            )
        self.model = model
        self.base_url = base_url
        self.endpoint = (base_url or DEFAULT_ENDPOINT).rstrip("/")
        self.prices = load_prices(prices)
        self._warned_sampling = False
        self._connect(
            "anthropic",
            "AsyncAnthropic",
            api_key=key,
            secret=key,
            base_url=base_url,
            where=base_url or "the Anthropic API",
            timeout=timeout,
            max_concurrency=max_concurrency,
            rate_limit=rate_limit,
            retry_policy=retry_policy,
            max_retries=max_retries,
        )

    def __repr__(self) -> str:
        return f"AnthropicClient(model={self.model!r}, base_url={self.base_url!r})"

    # ---- request / response mapping --------------------------------------------------

    def message_params(self, request: Request) -> dict[str, Any]:
        """The Messages API parameters for one request (also used for batch items).

        Raises ValueError for a request this backend cannot answer (turned into that
        item's error, no call made)."""
        if request.choices or request.logprobs:
            raise InputError("choice probabilities and log-probabilities need the local backend")
        system: list[dict[str, Any]] = []
        if request.system:
            # The shared long part goes first and carries the cache breakpoint, so every
            # request that shares it reads it from the prompt cache.
            system.append(
                {"type": "text", "text": request.system, "cache_control": {"type": "ephemeral"}}
            )
        messages = list(request.messages)
        while messages and messages[0].get("role") == "system":
            system.append({"type": "text", "text": str(messages.pop(0).get("content", ""))})
        if not messages:
            raise InputError("empty prompt: no user message")
        if any(m.get("role") not in ("user", "assistant") for m in messages):
            raise InputError("only a leading system message is allowed; then user/assistant turns")
        if not str(messages[-1].get("content") or "").strip():
            raise InputError("empty prompt: the last message has no text")
        p = request.params
        if not self._warned_sampling and (
            p.temperature != Params().temperature or p.top_p != 1.0 or p.seed is not None
        ):
            self._warned_sampling = True
            log.warning(
                "anthropic: temperature, top_p and seed are not sent (API version 2026-10-21 "
                "rejects sampling parameters); the model samples with its own settings"
            )
        # No temperature / top_p / seed: API version 2026-10-21 (the one SDK 2.x sends)
        # rejects every sampling parameter with HTTP 400, and the SDK has no arguments for
        # them. They still take part in the cache key, so N samples with N seeds are N calls.
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": p.max_new_tokens,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        }
        if p.stop:
            params["stop_sequences"] = list(p.stop)
        if system:
            params["system"] = system
        if request.tool:
            tool = request.tool
            params["tools"] = [
                {
                    "name": tool["name"],
                    "description": tool.get("description", ""),
                    "input_schema": tool["input_schema"],
                }
            ]
            params["tool_choice"] = {"type": "tool", "name": tool["name"]}
        return params

    def to_response(
        self, message: Message, request: Request | None, *, batch: bool = False
    ) -> Response:
        """Our Response for an SDK Message: text or tool input, tokens, cost."""
        usage = message.usage
        write = usage.cache_creation_input_tokens or 0
        read = usage.cache_read_input_tokens or 0
        cost = self.prices.cost(
            self.model if self.prices.lookup(self.model) else str(message.model),
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_write_tokens=write,
            cache_read_tokens=read,
            batch=batch,
        )
        response = Response(
            finish_reason=message.stop_reason,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_write_tokens=write,
            cache_read_tokens=read,
            cost_usd=cost,
        )
        tool = request.tool if request is not None else None
        wanted = tool["name"] if tool else None
        for block in message.content:
            if block.type == "tool_use" and (wanted is None or block.name == wanted):
                response.tool_input = dict(block.input) if isinstance(block.input, dict) else None
        if tool is None and response.tool_input is None:
            response.text = "".join(b.text for b in message.content if b.type == "text")
        elif response.tool_input is None:
            response.error = f"the model did not call the tool {wanted!r}"
        return response

    # ---- calls -----------------------------------------------------------------------

    async def _one(self, request: Request) -> Response:
        try:
            params = self.message_params(request)
        except ValueError as err:
            return Response(error=str(err))
        try:
            message = await self.retrier.call(lambda: self.sdk.messages.create(**params))
        except CallFailed as failed:
            return Response(error=failed.failure.message)
        return self.to_response(message, request)

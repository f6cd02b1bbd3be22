"""OpenAI-compatible backend: any server speaking the chat-completions API (vLLM, llama.cpp
server, Ollama, TGI), through the official `openai` SDK (AsyncOpenAI) with `base_url`.

- `Request.system` (and a leading system message) become one system message, the shared
  part first so servers with prefix caching (vLLM) reuse it.
- `Request.tool` asks for JSON output: response_format json_schema with the tool's input
  schema; a server that rejects json_schema (older llama.cpp, Ollama) is asked again with
  json_object, and the client remembers that. The answer is parsed into
  `Response.tool_input`; unparseable output gives `error` with the raw text kept in `text`.
- A vLLM server (found once per client from /v1/models: `owned_by` "vllm") gets the tool's
  schema as a whitespace-free regular expression instead (`structured_outputs.regex`, the
  fields in schema order, strings bounded by their maxLength): JSON-schema decoding lets a
  model emit free whitespace between fields, and a small model did so until max tokens
  (vLLM takes `disable_any_whitespace` only as a server-wide setting). llama.cpp and
  Ollama bound that whitespace in their own grammars; they get the schema as it is.
- temperature, top_p, seed, stop and max_tokens are sent as given (seed: best effort, as
  the server implements it). `Request.logprobs` asks for per-token log-probabilities.
- The key: `api_key=`, else OPENAI_API_KEY, else "EMPTY" (local servers usually ignore it).
  It is redacted from every error text. Costs are 0: these are your own GPUs.
- Retries, concurrency and rate limits: prefdata.llm.retry (the SDK's own retries are off).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from typing import TYPE_CHECKING, Any

from prefdata.errors import InputError
from prefdata.llm.base import Capabilities, Request, Response
from prefdata.llm.retry import CallFailed, RetryPolicy, SDKClient

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletion

BACKEND = "openai"
SCHEMA_MARKER = "JSON schema:"
_FATAL = {
    401: "the server rejected the API key (pass api_key or set OPENAI_API_KEY)",
    403: "the API key is not allowed to do this",
    404: "not found (check the model name, and that base_url ends in /v1)",
}
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
# The next way to ask for JSON when a server refuses one (HTTP 400 / 422).
_FALLBACK = {"vllm_regex": "json_schema", "json_schema": "json_object"}
# A string without a quote, a backslash or a line break: what a rationale needs, and a
# character class every regex engine compiles small.
_STRING_CHARS = r'[^"\\\n]'


def _value_regex(schema: Any) -> str | None:
    """A whitespace-free regular expression for one JSON value of `schema`, for the kinds a
    tool uses (string enums, bounded strings, numbers in 0-1, small integer ranges); None
    for anything else."""
    if not isinstance(schema, dict):
        return None
    if schema.get("enum") and all(isinstance(v, str) for v in schema["enum"]):
        return '"(?:' + "|".join(re.escape(v) for v in schema["enum"]) + ')"'
    kind = schema.get("type")
    if kind == "string":
        return f'"{_STRING_CHARS}{{0,{int(schema.get("maxLength", 200))}}}"'
    if kind == "number" and schema.get("minimum") == 0 and schema.get("maximum") == 1:
        return r"(?:0(?:\.[0-9]{1,4})?|1(?:\.0{1,4})?)"
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if kind == "integer" and isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi <= 9:
        return f"[{lo}-{hi}]"
    return None


def schema_regex(schema: dict[str, Any]) -> str | None:
    """The JSON objects of a flat tool schema as one regular expression with no free
    whitespace: every property in schema order, `{"a": 1, "b": "x"}`. None when a property
    has no regex form (the caller asks for the schema itself)."""
    properties = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(properties, dict) or not properties:
        return None
    fields = []
    for name, sub in properties.items():
        value = _value_regex(sub)
        if value is None:
            return None
        fields.append(f'"{re.escape(name)}": {value}')
    return r"\{" + ", ".join(fields) + r"\}"


def tool_instruction(tool: dict[str, Any]) -> str:
    """The system text that asks for the tool's JSON (json_object servers see no schema)."""
    description = str(tool.get("description") or "").strip()
    schema = json.dumps(tool["input_schema"], ensure_ascii=False, sort_keys=True)
    lead = "Answer with one JSON object and nothing else."
    return f"{lead} {description}\n{SCHEMA_MARKER} {schema}".replace("  ", " ")


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in a model's answer: the whole text, a ```json fence, or the first
    {...} in it. None when there is no object."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except ValueError:
        start = text.find("{")
        if start < 0:
            return None
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


class OpenAICompatClient(SDKClient):
    """Client for an OpenAI-compatible chat-completions server (see the module docstring).

    base_url: the server's API root, e.g. http://localhost:8000/v1 (vLLM),
    http://localhost:11434/v1 (Ollama). max_concurrency: calls in flight at once.
    max_retries: per call, for retryable errors. timeout: seconds per HTTP call.
    rate_limit: requests/second, client side.
    """

    backend = BACKEND
    capabilities = Capabilities(
        structured_output=True, token_logprobs=True, priced=True, needs_base_url=True
    )
    fatal_hints = _FATAL
    sdk: AsyncOpenAI

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        max_concurrency: int = 16,
        max_retries: int = 6,
        timeout: float = 60.0,
        rate_limit: float | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.model = model
        self.base_url = base_url
        # Part of every cache key: two servers may serve different weights under one model
        # name, and must never share cached answers.
        self.endpoint = base_url.rstrip("/")
        # How a tool's JSON is asked for: "vllm_regex" (a vLLM server), "json_schema", or
        # "json_object" after the server rejected json_schema once. None until the first
        # structured call has looked at the server.
        self.json_mode: str | None = None
        self._json_object_works = False
        self._detect_lock: asyncio.Lock | None = None
        self._connect(
            "openai",
            "AsyncOpenAI",
            api_key=key,
            secret=key if key != "EMPTY" else None,
            base_url=base_url,
            where=base_url,
            timeout=timeout,
            max_concurrency=max_concurrency,
            rate_limit=rate_limit,
            retry_policy=retry_policy,
            max_retries=max_retries,
        )

    def __repr__(self) -> str:
        return f"OpenAICompatClient(model={self.model!r}, base_url={self.base_url!r})"

    # ---- request / response mapping --------------------------------------------------

    def chat_params(self, request: Request, json_mode: str | None = None) -> dict[str, Any]:
        """chat.completions.create arguments. ValueError for a request this backend cannot
        answer (it becomes that item's error; no call is made)."""
        if request.choices:
            raise InputError("choice probabilities need the local backend")
        messages = [dict(m) for m in request.messages]
        system: list[str] = []
        if request.system:
            system.append(request.system)
        if request.tool:
            system.append(tool_instruction(request.tool))
        if messages and messages[0].get("role") == "system":
            system.append(str(messages.pop(0).get("content") or ""))
        if not messages or not str(messages[-1].get("content") or "").strip():
            raise InputError("empty prompt: the last message has no text")
        if system:
            messages.insert(0, {"role": "system", "content": "\n\n".join(system)})
        p = request.params
        params: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": p.max_new_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
        }
        if p.seed is not None:
            params["seed"] = p.seed
        if p.stop:
            params["stop"] = list(p.stop)
        if request.logprobs:
            params["logprobs"] = True
        if request.tool:
            mode = json_mode or self.json_mode or "json_schema"
            regex = schema_regex(request.tool["input_schema"]) if mode == "vllm_regex" else None
            if regex is not None:
                params["extra_body"] = {"structured_outputs": {"regex": regex}}
            elif mode in ("json_schema", "vllm_regex"):
                params["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": re.sub(r"[^A-Za-z0-9_-]", "_", request.tool["name"])[:64],
                        "schema": request.tool["input_schema"],
                    },
                }
            else:
                params["response_format"] = {"type": "json_object"}
        return params

    def to_response(self, completion: ChatCompletion, request: Request) -> Response:
        usage = completion.usage
        response = Response(
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
        )
        if not completion.choices:
            response.error = "the server returned no choices"
            return response
        choice = completion.choices[0]
        response.finish_reason = choice.finish_reason
        text = choice.message.content or ""
        if request.logprobs:
            content = choice.logprobs.content if choice.logprobs else None
            if content:
                response.token_logprobs = [t.logprob for t in content]
            else:
                response.error = "the server returned no log-probabilities"
        if request.tool is None:
            response.text = text
            return response
        parsed = parse_json_object(text)
        missing = [
            k for k in request.tool["input_schema"].get("required", []) if k not in (parsed or {})
        ]
        if parsed is None or missing:
            response.text = text  # kept so a bad answer can be inspected
            cut = " (cut off at max_new_tokens)" if choice.finish_reason == "length" else ""
            response.error = (
                f"the answer is not a JSON object{cut}"
                if parsed is None
                else f"the JSON answer lacks required fields {missing}"
            )
        else:
            response.tool_input = parsed
        return response

    # ---- calls -----------------------------------------------------------------------

    async def _detect_server(self) -> None:
        """Set `json_mode` from what the server is (once): vLLM says so in /v1/models."""
        if self._detect_lock is None:
            self._detect_lock = asyncio.Lock()
        async with self._detect_lock:
            if self.json_mode is not None:
                return
            mode = "json_schema"
            # No model list (or no such route): a server of another kind, plain JSON.
            with contextlib.suppress(Exception):
                page = await self.sdk.models.list()
                if any(getattr(m, "owned_by", None) == "vllm" for m in page.data):
                    mode = "vllm_regex"
            self.json_mode = mode

    async def _one(self, request: Request) -> Response:
        try:
            self.chat_params(request)  # a request we cannot send fails here, unsent
        except ValueError as err:
            return Response(error=str(err))
        if request.tool and self.json_mode is None:
            await self._detect_server()
        sent: list[str] = []

        async def send(json_mode: str | None = None) -> ChatCompletion:
            # Built at send time, so calls queued behind the one that found a mode
            # unsupported go out in the next mode straight away.
            params = self.chat_params(request, json_mode)
            structured = "structured_outputs" in params.get("extra_body", {})
            sent.append(
                "vllm_regex" if structured else params.get("response_format", {}).get("type", "")
            )
            return await self.sdk.chat.completions.create(**params)

        try:
            completion = await self.retrier.call(send)
        except CallFailed as failed:
            tried = sent[-1] if sent else ""
            # vLLM answers a regex it cannot compile in time with a 500.
            refused = (400, 422, 500) if tried == "vllm_regex" else (400, 422)
            rejected = failed.failure.status in refused
            fallback = _FALLBACK.get(tried)
            if not (request.tool and rejected and fallback):
                return Response(error=failed.failure.message)
            # Many servers (older llama.cpp, Ollama) know only json_object; a vLLM that cannot
            # compile the regex still takes the schema: switch at once (so queued calls do
            # not hit the same 400) and ask once more.
            self.json_mode = fallback
            try:
                completion = await self.retrier.call(lambda: send(fallback))
            except CallFailed as again:
                if not self._json_object_works:  # the 400 was about something else
                    self.json_mode = tried
                return Response(error=again.failure.message)
        if sent[-1:] == ["json_object"]:
            self._json_object_works = True
        return self.to_response(completion, request)

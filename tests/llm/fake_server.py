"""A local HTTP server that speaks the real wire protocols of the remote backends: the
test double at the network edge. Our clients reach it through the real SDKs (`base_url`).

Endpoints (JSON in, JSON out, as the vendors document them):
    POST /v1/messages                        Anthropic Messages (text, forced tool use,
                                             prompt-cache usage for cache_control blocks)
    POST /v1/messages/batches                Anthropic Message Batches: create
    GET  /v1/messages/batches/{id}           retrieve (in_progress -> ended after
                                             `batch_delay` seconds)
    GET  /v1/messages/batches/{id}/results   results as JSONL (succeeded / errored /
                                             expired / canceled per request)
    POST /v1/messages/batches/{id}/cancel
    POST /v1/chat/completions                OpenAI chat completions (response_format
                                             json_schema / json_object, seed, logprobs)

Answers are deterministic: derived from a hash of the request's content, so a test can
assert values (`answer_text`, `value_for`). Like a sampling model, a request repeated with
identical content gets a different answer each time (its n-th repeat hashes content + [n]),
except chat completions with a seed, which always get the same answer for the same seed.

Faults, for the next requests to an endpoint (`fail_next`) or for every request whose
prompt contains a marker: `[[fault:malformed]]` (200 with broken JSON), `[[fault:hang]]`
(no answer until the client gives up), `[[fault:<status>]]` (e.g. 400, 529), and for chat
completions `[[fault:notjson]]` (prose where JSON was asked for). A requests/
second limit (`rate_limit`) answers 429 with retry-after above it. Every request is
counted per endpoint and logged with its status and server-side monotonic timestamps, so
tests measure what the client did without timing our own code.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ENDPOINTS = (
    "messages",
    "batches.create",
    "batches.retrieve",
    "batches.results",
    "batches.cancel",
    "chat.completions",
)
_FAULT = re.compile(r"\[\[fault:([a-z0-9]+)\]\]")
_BATCH_ID = re.compile(r"^/v1/messages/batches/([A-Za-z0-9_]+)(/results|/cancel)?$")
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_SCHEMA_MARKER = "JSON schema:"


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def count_tokens(text: str) -> int:
    """The server's tokenizer: whitespace words (deterministic and easy to check)."""
    return len(text.split())


def answer_text(material: Any, max_tokens: int) -> tuple[str, bool]:
    """(text, truncated): 6-13 words derived from a hash of the request content."""
    h = digest(material)
    n_words = 6 + int(h[:2], 16) % 8
    words = [f"answer-{h[:8]}"] + [f"w{h[2 + 4 * i : 6 + 4 * i]}" for i in range(n_words - 1)]
    truncated = len(words) > max_tokens
    return " ".join(words[: max(1, max_tokens)]), truncated


def value_for(schema: Any, seed: str) -> Any:
    """A deterministic value that fits a JSON schema (objects, arrays, enums, scalars)."""
    if not isinstance(schema, dict):
        return None
    h = hashlib.sha256(seed.encode()).hexdigest()
    if schema.get("enum"):
        return schema["enum"][int(h[:4], 16) % len(schema["enum"])]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: value_for(sub, f"{seed}/{name}") for name, sub in props.items()}
    if kind == "array":
        return [value_for(schema.get("items", {}), f"{seed}/{i}") for i in range(2)]
    if kind == "integer":
        lo, hi = int(schema.get("minimum", 0)), int(schema.get("maximum", 100))
        return lo + int(h[:8], 16) % (hi - lo + 1)
    if kind == "number":
        low, high = float(schema.get("minimum", 0.0)), float(schema.get("maximum", 1.0))
        return round(low + (high - low) * int(h[:8], 16) / 0xFFFFFFFF, 6)
    if kind == "boolean":
        return int(h[:2], 16) % 2 == 0
    return f"text-{h[:10]}"


def _blocks_text(content: Any) -> list[tuple[str, bool]]:
    """(text, has cache_control) for an Anthropic content value (str or list of blocks)."""
    if isinstance(content, str):
        return [(content, False)]
    out = []
    for block in content or []:
        if isinstance(block, dict):
            text = block.get("text")
            if text is None and block.get("type") == "tool_result":
                text = json.dumps(block.get("content"))
            out.append((str(text or ""), "cache_control" in block))
    return out


@dataclass
class Served:
    endpoint: str
    status: int
    received: float  # time.monotonic() when the request arrived
    answered: float  # time.monotonic() when the answer was written
    body: Any = None


@dataclass
class Fault:
    kind: str  # "status" | "hang" | "malformed"
    status: int = 500
    retry_after: float | None = None
    error_type: str = "api_error"
    message: str | None = None


@dataclass
class _Batch:
    id: str
    created: datetime
    ready_at: float
    requests: list[dict[str, Any]]
    outcomes: dict[str, str]
    canceled: bool = False
    results: list[dict[str, Any]] | None = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.server.fake.handle(self, "POST")

    def do_GET(self) -> None:
        self.server.fake.handle(self, "GET")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeLLMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) closes its socket: expected here. Anything else is
        # a bug in this server and must be seen.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            traceback.print_exc()


@dataclass
class FakeLLMServer:
    """Run with `with FakeLLMServer(...) as server:`; `server.url` is the base URL
    (Anthropic SDK: base_url=server.url; OpenAI SDK: base_url=server.url + "/v1")."""

    api_key: str | None = "test-key"
    latency: float = 0.0  # seconds added to every answer
    rate_limit: float | None = None  # requests/second over all endpoints; 429 above
    rate_burst: float | None = None  # bucket size; default max(2, rate_limit / 10)
    batch_delay: float = 0.2  # seconds a batch stays in_progress
    hang_seconds: float = 30.0  # how long a "hang" fault holds the answer back
    json_schema_supported: bool = True  # False: 400 for response_format json_schema
    min_cache_tokens: int = 0  # prompt caching applies from this prefix length
    batch_outcomes: dict[str, str] = field(default_factory=dict)  # prompt substring -> outcome
    # Scripted model habits for forced tool use (Messages API, batch items too): called with
    # the request body; a dict is the tool input, a str is answered as text with stop_reason
    # "refusal" (a model declining), None falls back to the hash-derived default.
    tool_answer: Callable[[dict[str, Any]], dict[str, Any] | str | None] | None = None

    counts: Counter[str] = field(default_factory=Counter, init=False)
    log: list[Served] = field(default_factory=list, init=False)
    batches: dict[str, _Batch] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, list[Fault]] = {}
        self._prompt_cache: set[str] = set()
        self._repeats: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._tokens = 0.0
        self._bucket_at = time.monotonic()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        # A short poll interval: shutdown() waits for it, and tests start many servers.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        burst = self.rate_burst or max(2.0, (self.rate_limit or 0) / 10)
        self._tokens = burst
        return self

    def stop(self) -> None:
        self._stop.set()  # releases hanging handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # ---- test controls ---------------------------------------------------------------

    def fail_next(
        self,
        endpoint: str,
        kind: str = "status",
        *,
        status: int = 500,
        retry_after: float | None = None,
        times: int = 1,
        error_type: str | None = None,
        message: str | None = None,
    ) -> None:
        """The next `times` requests to `endpoint` fail: kind "status" (with `status`, e.g.
        429 / 529 / 500, an optional retry-after and error message), "hang" or "malformed"."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {ENDPOINTS}")
        etype = error_type or {
            429: "rate_limit_error",
            529: "overloaded_error",
            400: "invalid_request_error",
        }.get(status, "api_error")
        with self._lock:
            self._faults.setdefault(endpoint, []).extend(
                Fault(kind, status, retry_after, etype, message) for _ in range(times)
            )

    def count(self, endpoint: str | None = None, *, status: int | None = None) -> int:
        """Requests received (all statuses, or only `status`), for one endpoint or all."""
        with self._lock:
            return sum(
                1
                for s in self.log
                if (endpoint is None or s.endpoint == endpoint)
                and (status is None or s.status == status)
            )

    def served(self, endpoint: str | None = None) -> int:
        """Requests answered 200."""
        return self.count(endpoint, status=200)

    def entries(self, endpoint: str | None = None) -> list[Served]:
        with self._lock:
            return [s for s in self.log if endpoint is None or s.endpoint == endpoint]

    # ---- request handling ------------------------------------------------------------

    def handle(self, h: _Handler, method: str) -> None:
        received = time.monotonic()
        path = h.path.split("?", 1)[0]
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        endpoint, batch_id = self._route(method, path)
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        # Logged on arrival (status 0 until answered), so a hanging request counts at once.
        entry = Served(endpoint or "unknown", 0, received, math.nan, body)
        with self._lock:
            self.counts[entry.endpoint] += 1
            self.log.append(entry)
        status, payload = 404, b""
        headers: dict[str, str] = {}
        if endpoint is None:
            payload = self._error("not_found_error", f"no route {method} {path}")
        elif raw and body is None:
            status, payload = 400, self._error("invalid_request_error", "body is not JSON")
        else:
            status, headers, payload = self._dispatch(h, endpoint, batch_id, body)
        entry.status, entry.answered = status, time.monotonic()
        if status < 0:  # hang: the client gave up; nothing to write
            return
        try:
            h.send_response(status)
            ctype = headers.pop("content-type", "application/json")
            h.send_header("content-type", ctype)
            h.send_header("content-length", str(len(payload)))
            h.send_header("request-id", f"req_{next(self._ids)}")
            for name, value in headers.items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(payload)
            h.wfile.flush()
        except OSError:
            pass

    def _route(self, method: str, path: str) -> tuple[str | None, str | None]:
        if method == "POST" and path == "/v1/messages":
            return "messages", None
        if method == "POST" and path == "/v1/messages/batches":
            return "batches.create", None
        if method == "POST" and path == "/v1/chat/completions":
            return "chat.completions", None
        m = _BATCH_ID.match(path)
        if m:
            tail = m.group(2)
            if method == "GET" and tail is None:
                return "batches.retrieve", m.group(1)
            if method == "GET" and tail == "/results":
                return "batches.results", m.group(1)
            if method == "POST" and tail == "/cancel":
                return "batches.cancel", m.group(1)
        return None, None

    def _openai_style(self, endpoint: str) -> bool:
        return endpoint == "chat.completions"

    def _error(self, etype: str, message: str, *, openai: bool = False) -> bytes:
        if openai:
            return json.dumps({"error": {"message": message, "type": etype, "code": None}}).encode()
        return json.dumps(
            {"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_x"}
        ).encode()

    def _take_rate_token(self) -> float | None:
        """None when the request may pass, else the seconds until a token is free."""
        if not self.rate_limit:
            return None
        burst = self.rate_burst or max(2.0, self.rate_limit / 10)
        with self._lock:
            now = time.monotonic()
            self._tokens = min(burst, self._tokens + (now - self._bucket_at) * self.rate_limit)
            self._bucket_at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            return (1.0 - self._tokens) / self.rate_limit

    def _dispatch(
        self, h: _Handler, endpoint: str, batch_id: str | None, body: Any
    ) -> tuple[int, dict[str, str], bytes]:
        openai = self._openai_style(endpoint)
        if self.api_key is not None:
            bearer = h.headers.get("authorization") == f"Bearer {self.api_key}"
            if openai:
                ok = bearer
            elif h.headers.get("x-api-key") is not None:
                # The Anthropic API reads x-api-key when both headers are sent.
                ok = h.headers.get("x-api-key") == self.api_key
            else:
                ok = bearer  # the Anthropic SDK 2.x sends the key as a bearer token
            if not ok:
                # Like the real APIs: the answer never echoes the key that was sent.
                return (
                    401,
                    {},
                    self._error("authentication_error", "invalid x-api-key", openai=openai),
                )
        if not openai and not h.headers.get("anthropic-version"):
            return 400, {}, self._error("invalid_request_error", "anthropic-version missing")
        wait = self._take_rate_token()
        if wait is not None:
            headers = {"retry-after": f"{wait:.3f}"}
            msg = f"rate limit of {self.rate_limit} requests per second exceeded"
            return 429, headers, self._error("rate_limit_error", msg, openai=openai)
        with self._lock:
            queue = self._faults.get(endpoint) or []
            fault = queue.pop(0) if queue else None
        if fault is None:
            fault = self._prompt_fault(body)
        if self.latency:
            self._stop.wait(self.latency)
        if fault is not None:
            if fault.kind == "hang":
                self._stop.wait(self.hang_seconds)
                return -1, {}, b""
            if fault.kind == "malformed":
                return 200, {}, b'{"id": "msg_broken", "content": [{"type": "te'
            headers = {}
            if fault.retry_after is not None:
                headers["retry-after"] = f"{fault.retry_after:g}"
            return (
                fault.status,
                headers,
                self._error(
                    fault.error_type, fault.message or f"injected {fault.status}", openai=openai
                ),
            )
        if endpoint == "messages":
            status, payload = self._messages(body)
        elif endpoint == "chat.completions":
            status, payload = self._chat(body)
        elif endpoint == "batches.create":
            status, payload = self._batch_create(body)
        elif endpoint == "batches.retrieve":
            status, payload = self._batch_retrieve(batch_id or "")
        elif endpoint == "batches.cancel":
            status, payload = self._batch_cancel(batch_id or "")
        else:
            return self._batch_results(batch_id or "")
        return (
            status,
            {},
            json.dumps(payload).encode() if not isinstance(payload, bytes) else payload,
        )

    def _prompt_fault(self, body: Any) -> Fault | None:
        m = _FAULT.search(json.dumps(body.get("messages", []))) if isinstance(body, dict) else None
        if not m:
            return None
        kind = m.group(1)
        if kind == "notjson":  # not a protocol fault: a model ignoring the JSON format
            return None
        if kind in ("hang", "malformed"):
            return Fault(kind)
        status = int(kind)
        etype = {400: "invalid_request_error", 529: "overloaded_error", 429: "rate_limit_error"}
        return Fault("status", status, None, etype.get(status, "api_error"))

    # ---- Anthropic Messages ----------------------------------------------------------

    def _message(self, body: Any) -> tuple[int, Any]:
        """A Messages API answer for `body` (shared by /v1/messages and batch items)."""
        if not isinstance(body, dict):
            return 400, json.loads(self._error("invalid_request_error", "body must be an object"))
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return 400, json.loads(
                    self._error("invalid_request_error", f"{name}: Field required")
                )
        for name in ("temperature", "top_p", "top_k"):
            if name in body:  # API version 2026-10-21 removed the sampling parameters
                return 400, json.loads(
                    self._error("invalid_request_error", f"{name}: Extra inputs are not permitted")
                )
        messages = body["messages"]
        if not messages or messages[0].get("role") != "user":
            return 400, json.loads(
                self._error(
                    "invalid_request_error", "messages: first message must use the user role"
                )
            )
        segments: list[tuple[str, bool]] = []
        for tool in body.get("tools") or []:
            segments.append((json.dumps(tool, sort_keys=True), "cache_control" in tool))
        system = body.get("system")
        if system is not None:
            segments += _blocks_text(system)
        for message in messages:
            segments += _blocks_text(message.get("content"))
        if any(not text.strip() for text, _ in _blocks_text(messages[-1].get("content"))):
            return 400, json.loads(
                self._error(
                    "invalid_request_error", "messages: text content blocks must be non-empty"
                )
            )
        last_break = max((i for i, (_, cc) in enumerate(segments) if cc), default=-1)
        total = sum(count_tokens(t) for t, _ in segments)
        prefix = sum(count_tokens(t) for t, _ in segments[: last_break + 1])
        cache_write = cache_read = 0
        if last_break >= 0 and prefix >= self.min_cache_tokens:
            key = digest([body["model"], segments[: last_break + 1]])
            with self._lock:
                hit = key in self._prompt_cache
                self._prompt_cache.add(key)
            cache_read, cache_write = (prefix, 0) if hit else (0, prefix)
        input_tokens = total - cache_read - cache_write
        material = self._sampled(
            [body["model"], system, messages, body.get("tools"), body.get("tool_choice")]
        )
        choice = body.get("tool_choice") or {}
        content: list[dict[str, Any]]
        if choice.get("type") == "tool":
            tool = next(
                (t for t in body.get("tools") or [] if t.get("name") == choice.get("name")), None
            )
            if tool is None:
                return 400, json.loads(
                    self._error(
                        "invalid_request_error", "tool_choice names a tool that is not in tools"
                    )
                )
            scripted = self.tool_answer(body) if self.tool_answer is not None else None
            if isinstance(scripted, str):
                content = [{"type": "text", "text": scripted}]
                output_tokens, stop = count_tokens(scripted), "refusal"
            else:
                tool_input = (
                    scripted
                    if scripted is not None
                    else value_for(tool.get("input_schema", {}), digest(material))
                )
                content = [
                    {
                        "type": "tool_use",
                        "id": f"toolu_{digest(material)[:20]}",
                        "name": tool["name"],
                        "input": tool_input,
                    }
                ]
                output_tokens, stop = count_tokens(json.dumps(tool_input)), "tool_use"
        else:
            text, truncated = answer_text(material, int(body["max_tokens"]))
            content = [{"type": "text", "text": text}]
            output_tokens, stop = count_tokens(text), "max_tokens" if truncated else "end_turn"
        return 200, {
            "id": f"msg_{digest(material)[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": cache_write,
                "cache_read_input_tokens": cache_read,
            },
        }

    def _sampled(self, material: list[Any]) -> list[Any]:
        """Like a sampling model, the same request asked again gets another answer: the
        n-th repeat (n > 0) of identical content answers from content + [n]. The first
        answer depends on the content alone, so tests can compute it."""
        key = digest(material)
        with self._lock:
            n = self._repeats[key]
            self._repeats[key] += 1
        return [*material, n] if n else material

    def _messages(self, body: Any) -> tuple[int, Any]:
        return self._message(body)

    # ---- Anthropic Message Batches ---------------------------------------------------

    def _batch_create(self, body: Any) -> tuple[int, Any]:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not requests:
            return 400, json.loads(self._error("invalid_request_error", "requests: empty"))
        seen: set[str] = set()
        for item in requests:
            cid = item.get("custom_id", "")
            if not _CUSTOM_ID.match(cid) or cid in seen:
                msg = f"custom_id {cid!r} must be unique and match ^[a-zA-Z0-9_-]{{1,64}}$"
                return 400, json.loads(self._error("invalid_request_error", msg))
            seen.add(cid)
        outcomes = {}
        for item in requests:
            text = json.dumps(item.get("params", {}).get("messages", []))
            for needle, outcome in self.batch_outcomes.items():
                if needle in text:
                    outcomes[item["custom_id"]] = outcome
        batch = _Batch(
            id=f"msgbatch_{next(self._ids):06d}{digest(sorted(seen))[:12]}",
            created=datetime.now(UTC),
            ready_at=time.monotonic() + self.batch_delay,
            requests=requests,
            outcomes=outcomes,
        )
        with self._lock:
            self.batches[batch.id] = batch
        return 200, self._batch_json(batch)

    def _batch_json(self, batch: _Batch) -> dict[str, Any]:
        ended = batch.canceled or time.monotonic() >= batch.ready_at
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if ended:
            for line in self._batch_lines(batch):
                counts[line["result"]["type"]] += 1
        else:
            counts["processing"] = len(batch.requests)
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts,
            "created_at": batch.created.isoformat().replace("+00:00", "Z"),
            "expires_at": (batch.created + timedelta(hours=24)).isoformat().replace("+00:00", "Z"),
            "ended_at": datetime.now(UTC).isoformat().replace("+00:00", "Z") if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    def _batch_lines(self, batch: _Batch) -> list[dict[str, Any]]:
        if batch.results is not None:
            return batch.results
        lines = []
        for item in batch.requests:
            cid = item["custom_id"]
            outcome = "canceled" if batch.canceled else batch.outcomes.get(cid, "succeeded")
            result: dict[str, Any] = {"type": outcome}
            if outcome == "succeeded":
                status, message = self._message(item.get("params"))
                if status == 200:
                    message["usage"]["service_tier"] = "batch"
                    result["message"] = message
                else:
                    result = {"type": "errored", "error": message}
            elif outcome == "errored":
                result["error"] = json.loads(self._error("api_error", "injected batch item error"))
            lines.append({"custom_id": cid, "result": result})
        # Results come in no particular order in the real API: reverse them so clients
        # that assume request order fail here too.
        batch.results = lines[::-1]
        return batch.results

    def _get_batch(self, batch_id: str) -> _Batch | None:
        with self._lock:
            return self.batches.get(batch_id)

    def _batch_retrieve(self, batch_id: str) -> tuple[int, Any]:
        batch = self._get_batch(batch_id)
        if batch is None:
            return 404, json.loads(self._error("not_found_error", f"no batch {batch_id}"))
        return 200, self._batch_json(batch)

    def _batch_cancel(self, batch_id: str) -> tuple[int, Any]:
        batch = self._get_batch(batch_id)
        if batch is None:
            return 404, json.loads(self._error("not_found_error", f"no batch {batch_id}"))
        if time.monotonic() < batch.ready_at:
            batch.canceled = True
        return 200, self._batch_json(batch)

    def _batch_results(self, batch_id: str) -> tuple[int, dict[str, str], bytes]:
        batch = self._get_batch(batch_id)
        if batch is None:
            return 404, {}, self._error("not_found_error", f"no batch {batch_id}")
        if not (batch.canceled or time.monotonic() >= batch.ready_at):
            return 400, {}, self._error("invalid_request_error", "batch is still processing")
        payload = "".join(json.dumps(line) + "\n" for line in self._batch_lines(batch))
        return 200, {"content-type": "application/binary"}, payload.encode()

    # ---- OpenAI chat completions -----------------------------------------------------

    def _chat(self, body: Any) -> tuple[int, Any]:
        def bad(message: str) -> tuple[int, Any]:
            return 400, json.loads(self._error("invalid_request_error", message, openai=True))

        if not isinstance(body, dict) or "model" not in body or not body.get("messages"):
            return bad("model and messages are required")
        messages = body["messages"]
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema" and not self.json_schema_supported:
            return bad("response_format type 'json_schema' is not supported by this server")
        prompt_tokens = sum(count_tokens(str(m.get("content") or "")) for m in messages)
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 256)
        material = [body["model"], messages, body.get("seed"), fmt]
        if body.get("seed") is None:
            material = self._sampled(material)
        finish = "stop"
        if "[[fault:notjson]]" in json.dumps(messages):
            content = "Sure! The winner is (a), because it is more helpful."
        elif fmt.get("type") == "json_schema":
            schema = fmt.get("json_schema", {}).get("schema", {})
            content = json.dumps(value_for(schema, digest(material)))
        elif fmt.get("type") == "json_object":
            content = json.dumps(value_for(self._schema_in(messages), digest(material)))
        else:
            content, truncated = answer_text(material, max_tokens)
            finish = "length" if truncated else "stop"
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": finish,
            "logprobs": None,
        }
        if body.get("logprobs"):
            h = digest(material)
            choice["logprobs"] = {
                "content": [
                    {
                        "token": tok,
                        "logprob": -int(h[i % 60 : i % 60 + 2], 16) / 64.0,
                        "bytes": list(tok.encode()),
                        "top_logprobs": [],
                    }
                    for i, tok in enumerate(content.split(" "))
                ]
            }
        return 200, {
            "id": f"chatcmpl-{digest(material)[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": f"seed-{body.get('seed')}",
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": count_tokens(content),
                "total_tokens": prompt_tokens + count_tokens(content),
            },
        }

    def _schema_in(self, messages: list[dict[str, Any]]) -> Any:
        """json_object mode has no schema: follow the one the client wrote in the prompt,
        as a model would; without one answer {"text": ...}."""
        for message in messages:
            text = str(message.get("content") or "")
            at = text.find(_SCHEMA_MARKER)
            if at >= 0:
                try:
                    schema, _ = json.JSONDecoder().raw_decode(
                        text[at + len(_SCHEMA_MARKER) :].lstrip()
                    )
                    return schema  # noqa: TRY300
                except json.JSONDecodeError:
                    break
        return {"type": "object", "properties": {"text": {"type": "string"}}}


def served_rate(entries: list[Served], skip_s: float = 0.0) -> float:
    """Answers per second between the first and the last 200 answer (server clock);
    `skip_s` leaves out the answers of the first seconds (the start-up burst that the rate
    limit's bucket allows)."""
    ok = sorted(s.answered for s in entries if s.status == 200)
    ok = [t for t in ok if t >= ok[0] + skip_s] if ok else ok
    if len(ok) < 2:
        return math.nan
    return (len(ok) - 1) / (ok[-1] - ok[0])

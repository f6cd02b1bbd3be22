"""AnthropicClient through the real `anthropic` SDK against the local wire-protocol server:
answers, prompt caching, tool use, costs, retries (timed with the server's clock), faults,
the call cache, and the API key staying out of every file and message."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from prefdata.errors import InputError
from prefdata.llm.anthropic import AnthropicClient
from prefdata.llm.base import Params, Request, Response
from prefdata.llm.cache import CallCache, complete_cached
from prefdata.llm.prices import Price, PriceTable, load_prices
from prefdata.llm.retry import BackendError, RateLimiter, RetryPolicy, retry_after_seconds
from tests.llm.conftest import FAST_RETRIES, TEST_KEY
from tests.llm.fake_server import FakeLLMServer, answer_text, count_tokens, digest, value_for

MODEL = "claude-sonnet-4-6"  # in the built-in price table: $3 / $15 / $3.75 / $0.30
RUBRIC = "You are a careful judge. Prefer honest, helpful and harmless answers. " * 20
VERDICT = {
    "name": "verdict",
    "description": "Record which answer is better.",
    "input_schema": {
        "type": "object",
        "properties": {
            "winner": {"type": "string", "enum": ["a", "b", "tie"]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "reason": {"type": "string"},
        },
        "required": ["winner", "confidence"],
    },
}


def ask(text: str, **kw: object) -> Request:
    return Request(messages=({"role": "user", "content": text},), **kw)  # type: ignore[arg-type]


def client_for(server: FakeLLMServer, **kw: object) -> AnthropicClient:
    kw.setdefault("retry_policy", FAST_RETRIES)
    return AnthropicClient(MODEL, base_url=server.url, **kw)  # type: ignore[arg-type]


def run(client: AnthropicClient, requests: list[Request]) -> list[Response]:
    async def go() -> list[Response]:
        try:
            return await client.complete(requests)
        finally:
            await client.aclose()

    return asyncio.run(go())


def expected_text(body: dict[str, object]) -> str:
    """What the server answers to this exact body (its deterministic answer function)."""
    material = [body["model"], body.get("system"), body["messages"], None, None]
    return answer_text(material, int(body["max_tokens"]))[0]  # type: ignore[call-overload]


def test_text_answers_prompt_cache_and_cost(fake_server: FakeLLMServer, api_key: str) -> None:
    requests = [ask(f"Which is better, answer {i}?", system=RUBRIC) for i in range(4)]
    responses = run(client_for(fake_server, max_concurrency=1), requests)

    bodies = [e.body for e in fake_server.entries("messages")]
    assert len(bodies) == 4
    for body, response in zip(bodies, responses, strict=True):
        # The shared rubric goes as a cacheable system block; no sampling parameters (the
        # API version the SDK sends rejects them).
        assert body["system"] == [
            {"type": "text", "text": RUBRIC, "cache_control": {"type": "ephemeral"}}
        ]
        assert not {"temperature", "top_p", "top_k"} & set(body)
        assert response.ok and response.text == expected_text(body)
        assert response.finish_reason == "end_turn"
    rubric_tokens = count_tokens(RUBRIC)
    # First call writes the prompt cache, the other three read it.
    assert [r.cache_write_tokens for r in responses] == [rubric_tokens, 0, 0, 0]
    assert [r.cache_read_tokens for r in responses] == [0] + [rubric_tokens] * 3
    assert all(
        r.input_tokens == count_tokens(f"Which is better, answer {i}?")
        for i, r in enumerate(responses)
    )
    for r in responses:
        dollars = (
            r.input_tokens * 3
            + r.output_tokens * 15
            + r.cache_write_tokens * 3.75
            + r.cache_read_tokens * 0.30
        ) / 1e6
        assert r.cost_usd == pytest.approx(dollars, rel=1e-12)
    # Reading the cache costs a tenth of writing it: the later calls are far cheaper.
    assert responses[1].cost_usd < responses[0].cost_usd / 3


def test_repeated_requests_are_separate_samples(
    fake_server: FakeLLMServer, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    # N candidates for one prompt: N calls with N seeds. The seed never reaches the API (it
    # takes no sampling parameters, which the client says once); the model samples anyway.
    requests = [ask("Name a colour.", params=Params(seed=s)) for s in range(4)]
    with caplog.at_level(logging.WARNING):
        responses = run(client_for(fake_server), requests)
    assert fake_server.count("messages") == 4
    assert len({r.text for r in responses}) == 4
    assert len({r.cache_key("anthropic", fake_server.url, MODEL) for r in requests}) == 4
    assert caplog.text.count("temperature, top_p and seed are not sent") == 1


def test_forced_tool_use_returns_the_tool_input(fake_server: FakeLLMServer, api_key: str) -> None:
    (response,) = run(client_for(fake_server), [ask("A: yes. B: no. Which?", tool=VERDICT)])
    (body,) = [e.body for e in fake_server.entries("messages")]
    assert body["tool_choice"] == {"type": "tool", "name": "verdict"}
    assert body["tools"][0]["input_schema"] == VERDICT["input_schema"]
    material = [MODEL, None, body["messages"], body["tools"], body["tool_choice"]]
    assert response.tool_input is not None
    assert response.tool_input == value_for(VERDICT["input_schema"], digest(material))
    assert response.tool_input["winner"] in ("a", "b", "tie")
    assert response.text is None and response.finish_reason == "tool_use"


def test_retry_after_is_honoured(fake_server: FakeLLMServer, api_key: str) -> None:
    fake_server.fail_next("messages", status=429, retry_after=0.6)
    client = client_for(fake_server)
    (response,) = run(client, [ask("hello")])
    first, second = fake_server.entries("messages")
    assert (first.status, second.status) == (429, 200)
    # Measured on the server's clock: the client waited what the server asked for (its own
    # backoff here would be under 0.02 s).
    waited = second.received - first.answered
    # The wall clock also holds the client's own work between the two calls, which a loaded
    # 2-core machine stretched to 2.35 s once (waited < 1.2 failed): the upper bound only
    # rules out a wait of another order (seconds read as ms, a 60 s default); that exactly one
    # wait of the server's 0.6 s was made is what the client planned and slept.
    assert 0.6 <= waited < 0.6 + 5.0
    assert client.retrier.stats.retries == 1
    assert client.retrier.stats.waited_s == pytest.approx(0.6)
    assert response.ok


def test_a_429_pauses_every_call_of_the_client(fake_server: FakeLLMServer, api_key: str) -> None:
    fake_server.fail_next("messages", status=429, retry_after=0.5)
    responses = run(client_for(fake_server, max_concurrency=1), [ask(f"q{i}") for i in range(3)])
    assert all(r.ok for r in responses)
    entries = fake_server.entries("messages")
    limited = entries[0]
    assert limited.status == 429 and len(entries) == 4
    # The semaphore is free while the limited call sleeps, yet no other call went out
    # before the server's retry-after had passed.
    assert min(e.received for e in entries[1:]) - limited.answered >= 0.5


def test_overloaded_and_timeouts_are_retried(fake_server: FakeLLMServer, api_key: str) -> None:
    fake_server.fail_next("messages", status=529, times=2)
    (response,) = run(client_for(fake_server), [ask("overloaded?")])
    assert response.ok
    assert [e.status for e in fake_server.entries("messages")] == [529, 529, 200]

    fake_server.fail_next("messages", "hang")
    # The hung call is held 30 s; the timeout leaves the retry (answered at once) room for a
    # loaded machine's pauses: one over the timeout would time the retry out too (a third
    # call; 0.3 s was that tight).
    (response,) = run(client_for(fake_server, timeout=1.0), [ask("slow?")])
    assert response.ok
    statuses = [e.status for e in fake_server.entries("messages")][3:]
    assert statuses == [-1, 200] or statuses == [0, 200]  # the hung one is still held


def test_retries_give_up_with_a_row_error(fake_server: FakeLLMServer, api_key: str) -> None:
    fake_server.fail_next("messages", status=529, times=10)
    policy = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.02)
    (response,) = run(client_for(fake_server, retry_policy=policy), [ask("x")])
    assert fake_server.count("messages") == 3
    assert "HTTP 529 overloaded_error" in (response.error or "")
    assert "gave up after 3 attempts" in (response.error or "")


def test_bad_items_become_row_errors(fake_server: FakeLLMServer, api_key: str) -> None:
    requests = [
        ask("fine"),
        ask("broken [[fault:malformed]]"),
        ask("too long [[fault:400]]"),
        ask("   "),
        Request(messages=()),
        ask("fine too"),
    ]
    responses = run(client_for(fake_server), requests)
    assert [r.ok for r in responses] == [True, False, False, False, False, True]
    assert "malformed answer" in (responses[1].error or "")
    assert "HTTP 400 invalid_request_error" in (responses[2].error or "")
    assert "empty prompt" in (responses[3].error or "")
    assert "empty prompt" in (responses[4].error or "")
    # Neither the malformed answer nor the 400 is retried; empty prompts are never sent.
    assert fake_server.count("messages") == 4


def test_resumed_run_makes_no_new_requests(
    fake_server: FakeLLMServer, api_key: str, tmp_path: Path
) -> None:
    requests = [ask(f"prompt {i}", params=Params(max_new_tokens=64)) for i in range(6)]

    async def go() -> tuple[list[Response], CallCache]:
        cache = CallCache(tmp_path / "calls.sqlite")
        client = client_for(fake_server)
        try:
            return await complete_cached(client, requests, cache), cache
        finally:
            await client.aclose()

    first, cache = asyncio.run(go())
    cache.close()
    assert fake_server.count() == 6 and all(r.ok for r in first)
    second, cache = asyncio.run(go())
    assert fake_server.count() == 6  # not one new request
    assert [r.text for r in second] == [r.text for r in first]
    assert all(r.cached for r in second)
    assert (
        cache.stats.line()
        == "call cache: 6/6 answered from cache, 0 new calls (0 failed, not cached)"
    )
    cache.close()


def test_partial_failure_keeps_what_was_answered(
    fake_server: FakeLLMServer, api_key: str, call_cache: CallCache
) -> None:
    # One call is refused as unauthorised: the client stops sending, but the answer it
    # already had is returned (and cached) rather than lost to an exception.
    requests = [ask("first"), ask("second [[fault:401]]"), ask("third")]

    async def go() -> list[Response]:
        client = client_for(fake_server, max_concurrency=1)
        try:
            return await complete_cached(client, requests, call_cache)
        finally:
            await client.aclose()

    responses = asyncio.run(go())
    assert [r.ok for r in responses] == [True, False, False]
    assert "API key was rejected" in (responses[2].error or "")
    assert fake_server.count("messages") == 2
    assert call_cache.stats.stored == 1


def test_wrong_key_raises_a_clear_error(fake_server: FakeLLMServer) -> None:
    wrong = "fake-anthropic-WRONG-key-0000"
    client = client_for(fake_server, api_key=wrong, max_concurrency=1)
    with pytest.raises(BackendError) as caught:
        run(client, [ask(f"q{i}") for i in range(5)])
    message = str(caught.value)
    assert "API key was rejected" in message and "HTTP 401" in message
    assert wrong not in message
    assert fake_server.count("messages") == 1  # stopped after the first 401


def test_server_down_raises_a_clear_error(api_key: str) -> None:
    server = FakeLLMServer(api_key=TEST_KEY).start()
    url = server.url
    server.stop()
    client = AnthropicClient(MODEL, base_url=url, retry_policy=FAST_RETRIES)
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"cannot reach http://127\.0\.0\.1"):
        run(client, [ask("anyone there?"), ask("hello?")])
    assert time.monotonic() - started < 5


def test_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(BackendError, match="ANTHROPIC_API_KEY"):
        AnthropicClient(MODEL)


def test_api_key_appears_in_no_file_log_or_message(
    fake_server: FakeLLMServer, api_key: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A server that echoes the key in an error (the real one does not) must not get it into
    # our errors either.
    fake_server.fail_next("messages", status=400, message=f"bad request from key {TEST_KEY}")
    requests = [ask("one"), ask("two", system=RUBRIC), ask("three", tool=VERDICT)]
    cache_path = tmp_path / "calls.sqlite"

    async def go() -> list[Response]:
        cache = CallCache(cache_path)
        client = client_for(fake_server, max_concurrency=1)
        try:
            return await complete_cached(client, requests, cache)
        finally:
            await client.aclose()
            cache.close()

    with caplog.at_level(logging.DEBUG):
        responses = asyncio.run(go())
        again = asyncio.run(go())  # the failed one is asked again and cached
    assert [r.ok for r in responses] == [False, True, True]
    assert "[redacted]" in (responses[0].error or "")
    assert all(r.ok for r in again)
    out = tmp_path / "responses.jsonl"
    out.write_text("\n".join(json.dumps(r.to_json()) for r in responses + again))
    client = client_for(fake_server)
    texts = [repr(client), caplog.text, *(str(r) for r in responses + again)]
    asyncio.run(client.aclose())
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert cache_path in files and out in files
    for path in files:
        assert TEST_KEY.encode() not in path.read_bytes(), path
    for text in texts:
        assert TEST_KEY not in text


def test_client_side_rate_limit_spaces_requests(fake_server: FakeLLMServer, api_key: str) -> None:
    # The client sends at most 2 back to back; the server bucket allows 3 (arrival jitter).
    async def go() -> list[Response]:
        client = client_for(fake_server, rate_limit=20.0)
        try:
            # Two calls first open the two connections the paced ones then reuse: a new
            # connection's first request reaches the server only once a fresh server thread
            # runs, on a loaded machine tens of ms late, which bunches the arrivals after it
            # (a 429, or a span under its bound) although the client spaced them right.
            await client.complete([ask("warm-a"), ask("warm-b")])
            await asyncio.sleep(0.2)  # the client's bucket is full again
            fake_server.rate_limit, fake_server.rate_burst = 20.0, 3.0
            return await client.complete([ask(f"r{i}") for i in range(8)])
        finally:
            await client.aclose()

    responses = asyncio.run(go())
    assert all(r.ok for r in responses)
    entries = fake_server.entries("messages")[2:]
    assert [e.status for e in entries] == [200] * 8  # never over the server's limit
    # 8 requests at 20/s: the first two may leave together, then one every 50 ms. The upper
    # bound is loose: a loaded machine's pauses only lengthen the span.
    span = entries[-1].received - entries[0].received
    assert 6 / 20 * 0.9 <= span < 3.0


def test_rate_limiter_spaces_requests_evenly() -> None:
    async def go() -> list[float]:
        limiter = RateLimiter(50.0)
        times: list[float] = []

        async def one() -> None:
            await limiter.acquire()
            times.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(11)))
        return times

    times = asyncio.run(go())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Never closer than the interval (a busy machine only makes the gaps longer, so the upper
    # bound is loose: it rules out a limiter several times too slow, not a paused machine).
    assert min(gaps) >= 0.02 * 0.95
    assert 0.2 * 0.95 <= times[-1] - times[0] < 2.0


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "0.25"}) == 0.25
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    in_ten = formatdate(time.time() + 10, usegmt=True)
    assert retry_after_seconds({"retry-after": in_ten}) == pytest.approx(10, abs=1.5)
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_price_table_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFDATA_PRICES", raising=False)
    table = load_prices()
    # Snapshot names find their model; an unknown model costs 0 (with a warning).
    assert table.lookup("claude-sonnet-4-5-20250929") == table.lookup("claude-sonnet-4-5")
    assert table.lookup("claude-haiku-4-5-20251001") == Price(1.0, 5.0, 1.25, 0.1)
    assert table.cost("claude-sonnet-4-6", input_tokens=1_000_000, output_tokens=0) == 3.0
    assert table.cost("claude-unknown-9", input_tokens=10**6, output_tokens=10**6) == 0.0
    batch = table.cost("claude-haiku-4-5", input_tokens=10**6, output_tokens=10**6, batch=True)
    assert batch == pytest.approx((1.0 + 5.0) / 2)

    toml = tmp_path / "prices.toml"
    toml.write_text("[claude-new]\ninput = 2.0\noutput = 10.0\ncache_read = 0.1\n")
    table = load_prices(toml)
    assert table.lookup("claude-new") == Price(2.0, 10.0, 2.5, 0.1)  # cache write: 1.25x
    monkeypatch.setenv("PREFDATA_PRICES", str(toml))
    assert load_prices({"claude-other": {"input": 1, "output": 2}}).lookup("claude-new")

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"claude-x": {"input": -1, "output": 2}}))
    with pytest.raises(InputError, match=r"bad\.json.*claude-x.*>= 0"):
        load_prices(bad)
    assert isinstance(load_prices(PriceTable()), PriceTable)


def test_custom_price_table_drives_the_cost(fake_server: FakeLLMServer, api_key: str) -> None:
    prices = {MODEL: {"input": 100.0, "output": 1000.0}}
    (response,) = run(client_for(fake_server, prices=prices), [ask("count my tokens please")])
    assert response.input_tokens == 4
    expected = (4 * 100.0 + response.output_tokens * 1000.0) / 1e6
    assert response.cost_usd == pytest.approx(expected, rel=1e-12)

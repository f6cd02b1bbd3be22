"""OpenAICompatClient through the real `openai` SDK against the local server's chat
completions endpoint: parameters passed through, JSON output (json_schema, and the
json_object fallback), parse failures kept as row errors, retries, cache, key handling."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from prefdata.llm.base import Params, Request, Response
from prefdata.llm.cache import CallCache, complete_cached
from prefdata.llm.openai_compat import OpenAICompatClient, parse_json_object
from prefdata.llm.retry import BackendError
from tests.llm.conftest import FAST_RETRIES, TEST_KEY
from tests.llm.fake_server import FakeLLMServer, digest, value_for

MODEL = "Qwen/Qwen2.5-7B-Instruct"
SCORE = {
    "name": "score",
    "description": "Rate the answer.",
    "input_schema": {
        "type": "object",
        "properties": {
            "rating": {"type": "integer", "minimum": 1, "maximum": 10},
            "why": {"type": "string"},
        },
        "required": ["rating"],
    },
}


def ask(text: str, **kw: object) -> Request:
    return Request(messages=({"role": "user", "content": text},), **kw)  # type: ignore[arg-type]


def run(server: FakeLLMServer, requests: list[Request], **kw: object) -> list[Response]:
    kw.setdefault("retry_policy", FAST_RETRIES)

    async def go() -> list[Response]:
        client = OpenAICompatClient(MODEL, base_url=server.url + "/v1", **kw)  # type: ignore[arg-type]
        try:
            return await client.complete(requests)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_parameters_and_seed_are_passed_through(fake_server: FakeLLMServer, api_key: str) -> None:
    params = Params(temperature=0.3, top_p=0.9, max_new_tokens=40, seed=7, stop=("\n\n",))
    requests = [
        ask("tell me a joke", params=params, system="Be brief."),
        ask("tell me a joke", params=params, system="Be brief."),
        ask(
            "tell me a joke", params=Params(temperature=0.3, top_p=0.9, seed=8), system="Be brief."
        ),
    ]
    responses = run(fake_server, requests, max_concurrency=1)
    body = fake_server.entries("chat.completions")[0].body
    assert body["seed"] == 7 and body["temperature"] == 0.3 and body["top_p"] == 0.9
    assert body["max_tokens"] == 40 and body["stop"] == ["\n\n"]
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "tell me a joke"},
    ]
    # The server derives its answer from the seed: same seed, same text; another, another.
    assert responses[0].text == responses[1].text != responses[2].text
    assert responses[0].input_tokens == 6 and responses[0].output_tokens > 0
    assert responses[0].cost_usd == 0.0


def test_tool_requests_get_json_schema_output(fake_server: FakeLLMServer, api_key: str) -> None:
    (response,) = run(fake_server, [ask("Rate: 'Paris is in France.'", tool=SCORE)])
    (entry,) = fake_server.entries("chat.completions")
    fmt = entry.body["response_format"]
    assert fmt == {
        "type": "json_schema",
        "json_schema": {"name": "score", "schema": SCORE["input_schema"]},
    }
    material = [MODEL, entry.body["messages"], None, fmt]
    assert response.tool_input is not None
    assert response.tool_input == value_for(SCORE["input_schema"], digest(material))
    assert 1 <= response.tool_input["rating"] <= 10
    assert response.text is None


def test_falls_back_to_json_object_when_json_schema_is_rejected(api_key: str) -> None:
    with FakeLLMServer(api_key=TEST_KEY, json_schema_supported=False) as server:
        requests = [ask(f"Rate answer {i}", tool=SCORE) for i in range(3)]
        responses = run(server, requests, max_concurrency=1)
        kinds = [e.body["response_format"]["type"] for e in server.entries("chat.completions")]
        statuses = [e.status for e in server.entries("chat.completions")]
    # Rejected once, then json_object for this and every later request.
    assert kinds == ["json_schema", "json_object", "json_object", "json_object"]
    assert statuses == [400, 200, 200, 200]
    for response in responses:
        assert response.ok and set(response.tool_input or {}) == {"rating", "why"}


def test_unparseable_json_is_a_row_error_with_the_raw_text(
    fake_server: FakeLLMServer, api_key: str
) -> None:
    responses = run(fake_server, [ask("rate [[fault:notjson]]", tool=SCORE), ask("ok", tool=SCORE)])
    assert not responses[0].ok and "not a JSON object" in (responses[0].error or "")
    assert responses[0].text == "Sure! The winner is (a), because it is more helpful."
    assert responses[1].ok


def test_malformed_body_and_bad_requests_are_row_errors(
    fake_server: FakeLLMServer, api_key: str
) -> None:
    requests = [ask("a"), ask("b [[fault:malformed]]"), ask("c [[fault:400]]"), ask("")]
    responses = run(fake_server, requests)
    assert [r.ok for r in responses] == [True, False, False, False]
    assert "malformed answer" in (responses[1].error or "")
    assert "HTTP 400" in (responses[2].error or "")
    assert fake_server.count("chat.completions") == 3


def test_logprobs_are_returned(fake_server: FakeLLMServer, api_key: str) -> None:
    (response,) = run(fake_server, [ask("hi", logprobs=True)])
    assert fake_server.entries("chat.completions")[0].body["logprobs"] is True
    assert response.token_logprobs is not None
    assert len(response.token_logprobs) == len((response.text or "").split(" "))
    assert all(lp <= 0 for lp in response.token_logprobs)


def test_retry_after_and_timeouts(fake_server: FakeLLMServer, api_key: str) -> None:
    fake_server.fail_next("chat.completions", status=429, retry_after=0.4)
    fake_server.fail_next("chat.completions", "hang")
    # The hung call is held 30 s; the timeout leaves the retry (answered at once) room for a
    # loaded machine's pauses (0.3 s could time the retry out too: a fourth call).
    (response,) = run(fake_server, [ask("hello")], timeout=1.0)
    entries = fake_server.entries("chat.completions")
    assert response.ok and len(entries) == 3
    assert entries[0].status == 429 and entries[2].status == 200
    assert entries[1].received - entries[0].answered >= 0.4


def test_resumed_run_makes_no_new_requests(
    fake_server: FakeLLMServer, api_key: str, tmp_path: Path
) -> None:
    requests = [ask(f"p{i}", params=Params(seed=i)) for i in range(5)]

    async def go() -> list[Response]:
        cache = CallCache(tmp_path / "calls.sqlite")
        client = OpenAICompatClient(MODEL, base_url=fake_server.url + "/v1")
        try:
            return await complete_cached(client, requests, cache)
        finally:
            await client.aclose()
            cache.close()

    first = asyncio.run(go())
    second = asyncio.run(go())
    assert fake_server.count() == 5
    assert [r.text for r in second] == [r.text for r in first] and all(r.cached for r in second)
    assert TEST_KEY.encode() not in (tmp_path / "calls.sqlite").read_bytes()


def test_wrong_key_and_server_down_raise_clear_errors(fake_server: FakeLLMServer) -> None:
    with pytest.raises(BackendError, match=r"rejected the API key.*OPENAI_API_KEY") as caught:
        run(fake_server, [ask("a"), ask("b")], api_key="sk-wrong-123456", max_concurrency=1)
    assert "sk-wrong-123456" not in str(caught.value)
    assert fake_server.count() == 1

    server = FakeLLMServer().start()
    url = server.url
    server.stop()
    with pytest.raises(BackendError, match="cannot reach"):
        asyncio.run(_one_call(url))


async def _one_call(url: str) -> list[Response]:
    client = OpenAICompatClient(MODEL, base_url=url + "/v1", retry_policy=FAST_RETRIES)
    try:
        return await client.complete([ask("x")])
    finally:
        await client.aclose()


def test_parse_json_object_forms() -> None:
    assert parse_json_object('{"a": 1}') == {"a": 1}
    assert parse_json_object('```json\n{"a": 2}\n```') == {"a": 2}
    assert parse_json_object('Here you go: {"a": 3} hope it helps') == {"a": 3}
    assert parse_json_object("[1, 2]") is None
    assert parse_json_object("no json here") is None

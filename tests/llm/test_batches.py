"""Message Batches through the real SDK against the local server: submit only what the cache
lacks, collect by custom_id at the batch price, resume an interrupted run without
resubmitting, and resubmit expired / errored items on the next run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from prefdata.errors import InputError
from prefdata.llm.anthropic import AnthropicClient
from prefdata.llm.base import Request, Response
from prefdata.llm.batches import BatchProgress, run_batch
from prefdata.llm.cache import CallCache, complete_cached
from prefdata.llm.retry import BackendError
from tests.llm.conftest import FAST_RETRIES
from tests.llm.fake_server import FakeLLMServer, answer_text

MODEL = "claude-haiku-4-5"  # $1 / $5 per million tokens, batches half of that


def ask(text: str) -> Request:
    return Request(messages=({"role": "user", "content": text},))


def with_client(
    server: FakeLLMServer, work: Callable[[AnthropicClient], Awaitable[list[Response]]]
) -> list[Response]:
    async def go() -> list[Response]:
        client = AnthropicClient(MODEL, base_url=server.url, retry_policy=FAST_RETRIES)
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def batch_run(
    server: FakeLLMServer,
    requests: list[Request],
    cache: CallCache,
    state: Path,
    **kw: object,
) -> list[Response]:
    return with_client(
        server,
        lambda c: run_batch(c, requests, cache=cache, state_path=state, poll_interval=0.05, **kw),  # type: ignore[arg-type]
    )


def test_batch_submits_what_is_missing_and_collects_by_custom_id(
    fake_server: FakeLLMServer, api_key: str, call_cache: CallCache, tmp_path: Path
) -> None:
    requests = [ask(f"write a haiku about {topic}") for topic in ("rain", "sun", "snow", "fog")]
    # One answer is already paid for through the Messages API.
    (direct,) = with_client(fake_server, lambda c: complete_cached(c, requests[:1], call_cache))
    state = tmp_path / "run.batches.json"
    seen: list[BatchProgress] = []
    responses = batch_run(fake_server, requests, call_cache, state, progress=seen.append)

    assert fake_server.count("batches.create") == 1
    (batch,) = fake_server.batches.values()
    keys = [r.cache_key("anthropic", fake_server.url, MODEL) for r in requests]
    assert [item["custom_id"] for item in batch.requests] == keys[1:]
    assert all(r.ok for r in responses)
    assert responses[0].cached and responses[0].text == direct.text
    # The server returns results in reverse order; custom_id puts each in its place.
    assert len({r.text for r in responses}) == 4
    assert not state.exists()  # all collected
    assert seen[0].status == "in_progress" and seen[-1].status == "ended"
    assert seen[-1].succeeded == 3 and seen[-1].total == 3

    # The answer the server gave this item, at the batch price: half the list price.
    params = batch.requests[0]["params"]
    material = [MODEL, None, params["messages"], None, None]
    assert responses[1].text == answer_text(material, params["max_tokens"])[0]
    r = responses[1]
    assert r.input_tokens == 5 and r.output_tokens == len((r.text or "").split())
    assert r.cost_usd == pytest.approx((r.input_tokens * 1.0 + r.output_tokens * 5.0) / 2e6)

    # Everything is cached now: another run sends nothing at all.
    before = fake_server.count()
    again = batch_run(fake_server, requests, call_cache, state)
    assert fake_server.count() == before
    assert [r.text for r in again] == [r.text for r in responses]


class Interrupted(Exception):
    pass


def _raise_on_first_poll(progress: BatchProgress) -> None:
    raise Interrupted(progress.batch_id)


@pytest.mark.parametrize("how", ["timeout", "progress"])
def test_interrupted_batch_is_collected_not_resubmitted(
    fake_server: FakeLLMServer, api_key: str, call_cache: CallCache, tmp_path: Path, how: str
) -> None:
    fake_server.batch_delay = 0.8
    requests = [ask(f"question {i}") for i in range(5)]
    state = tmp_path / "run.batches.json"

    async def interrupted(client: AnthropicClient) -> list[Response]:
        if how == "timeout":  # like Ctrl-C while polling: the task is cancelled
            job = asyncio.ensure_future(
                run_batch(client, requests, cache=call_cache, state_path=state, poll_interval=0.05)
            )
            # Cancelled once it polls, not after a fixed time: on a loaded machine the first
            # submission (the SDK's first call) can take longer than any short timeout.
            while fake_server.count("batches.retrieve") == 0 and not job.done():
                await asyncio.sleep(0.01)
            return await asyncio.wait_for(job, timeout=0)
        return await run_batch(
            client,
            requests,
            cache=call_cache,
            state_path=state,
            poll_interval=0.05,
            progress=_raise_on_first_poll,
        )

    with pytest.raises((TimeoutError, Interrupted)):
        with_client(fake_server, interrupted)
    assert fake_server.count("batches.create") == 1
    recorded = json.loads(state.read_text())
    (batch_id,) = fake_server.batches
    assert recorded["batches"][0]["id"] == batch_id
    assert len(recorded["batches"][0]["custom_ids"]) == 5

    responses = batch_run(fake_server, requests, call_cache, state)
    assert fake_server.count("batches.create") == 1  # resumed, not resubmitted
    assert fake_server.count("batches.results") == 1
    assert all(r.ok and not r.cached for r in responses)
    assert not state.exists()
    assert all(call_cache.get(r.cache_key("anthropic", fake_server.url, MODEL)) for r in requests)


def test_expired_and_errored_items_are_resubmitted_next_run(
    fake_server: FakeLLMServer, api_key: str, call_cache: CallCache, tmp_path: Path
) -> None:
    fake_server.batch_outcomes = {"expire-me": "expired", "fail-me": "errored"}
    requests = [ask("ok one"), ask("expire-me please"), ask("fail-me please"), ask("ok two")]
    state = tmp_path / "run.batches.json"
    responses = batch_run(fake_server, requests, call_cache, state)
    assert [r.ok for r in responses] == [True, False, False, True]
    assert "expired" in (responses[1].error or "")
    assert "errored: api_error" in (responses[2].error or "")
    assert call_cache.stats.errors == 2

    fake_server.batch_outcomes = {}
    again = batch_run(fake_server, requests, call_cache, state)
    assert all(r.ok for r in again)
    assert fake_server.count("batches.create") == 2
    second = list(fake_server.batches.values())[1]
    assert len(second.requests) == 2  # only the two that failed
    assert [r.cached for r in again] == [True, False, False, True]


def test_a_rate_limited_submission_is_retried_once_submitted_once(
    fake_server: FakeLLMServer, api_key: str, call_cache: CallCache, tmp_path: Path
) -> None:
    fake_server.fail_next("batches.create", status=429, retry_after=0.1)
    fake_server.fail_next("batches.retrieve", status=529)
    responses = batch_run(fake_server, [ask("a"), ask("b")], call_cache, tmp_path / "s.json")
    assert all(r.ok for r in responses)
    assert [e.status for e in fake_server.entries("batches.create")] == [429, 200]
    assert len(fake_server.batches) == 1


def test_bad_items_are_row_errors_and_not_submitted(
    fake_server: FakeLLMServer, api_key: str, call_cache: CallCache, tmp_path: Path
) -> None:
    requests = [ask("fine"), ask("  "), ask("fine")]  # a duplicate is submitted once
    responses = batch_run(fake_server, requests, call_cache, tmp_path / "s.json")
    assert [r.ok for r in responses] == [True, False, True]
    assert responses[0].text == responses[2].text
    (batch,) = fake_server.batches.values()
    assert len(batch.requests) == 1


def test_state_file_of_another_model_is_refused(
    fake_server: FakeLLMServer, api_key: str, call_cache: CallCache, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    state.write_text(json.dumps({"version": 1, "model": "claude-other", "batches": []}))
    with pytest.raises(InputError, match="belongs to model 'claude-other'"):
        batch_run(fake_server, [ask("a")], call_cache, state)
    state.write_text("{not json")
    with pytest.raises(InputError, match="unreadable batch state file"):
        batch_run(fake_server, [ask("a")], call_cache, state)
    assert fake_server.count() == 0


def test_batch_unknown_to_the_server_is_a_clear_error(
    fake_server: FakeLLMServer, api_key: str, call_cache: CallCache, tmp_path: Path
) -> None:
    state = tmp_path / "s.json"
    entry = {"id": "msgbatch_gone", "custom_ids": ["x"], "collected": False}
    state.write_text(json.dumps({"version": 1, "model": MODEL, "batches": [entry]}))
    with pytest.raises(BackendError, match=r"msgbatch_gone.*unknown to the server"):
        batch_run(fake_server, [ask("a")], call_cache, state)
    assert state.exists()  # kept: it is the only record of what was paid for


def test_wrong_key_stops_before_submitting(
    fake_server: FakeLLMServer,
    call_cache: CallCache,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong")
    with pytest.raises(BackendError, match="API key was rejected"):
        batch_run(fake_server, [ask("a")], call_cache, tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()
    assert len(fake_server.batches) == 0

"""Candidate generation with the real embedded model on real GSM8K prompts.

Model calls are counted by a thin subclass of the real LocalClient (it counts the requests that
reach the model and then runs them unchanged), so "a resumed run makes no new calls" is checked
on what actually reached the model, not only on the cache's own statistics.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata import ids
from prefdata.errors import InputError, PrefdataError
from prefdata.io.importers.math import import_gsm8k
from prefdata.llm.base import OnAnswer, Params, Request, Response
from prefdata.llm.cache import CallCache
from prefdata.llm.generate import (
    REJECTED_SCHEMA,
    assign_models,
    derive_seed,
    generate,
)
from prefdata.schema import validate
from prefdata.stage import StageResult

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from prefdata.llm.local import LocalClient  # noqa: E402

SAMPLING = Params(temperature=1.0, max_new_tokens=8, seed=7)


class CountingClient(LocalClient):
    """The real local client; it only counts the requests that reach the model."""

    def __init__(self, *args: Any, fail_on_call: int | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.calls = 0
        self.requests = 0
        self.fail_on_call = fail_on_call

    async def complete(
        self, requests: Sequence[Request], on_answer: OnAnswer | None = None
    ) -> list[Response]:
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise KeyboardInterrupt  # the user pressing Ctrl-C in the middle of a run
        self.requests += len(requests)
        return await super().complete(requests, on_answer)


@pytest.fixture(scope="module")
def gsm8k_prompts(shared_data: Path) -> pl.DataFrame:
    imported = import_gsm8k(shared_data / "gsm8k" / "test.jsonl")
    prompts = imported.tables["prompts"]
    assert prompts.height == 1319  # MANIFEST.json: 1,319 test questions
    return prompts


@pytest.fixture(scope="module")
def loaded() -> None:
    LocalClient("smollm2").load()


def run_generate(
    prompts: pl.DataFrame, client: LocalClient, cache: CallCache, **kw: Any
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    kw.setdefault("n", 3)
    kw.setdefault("params", SAMPLING)
    return _triple(generate(prompts, models=[client], cache=cache, progress=False, **kw))


def _triple(result: StageResult) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """(candidates, rejected, report) of a generate run."""
    assert result.rejected is not None
    return result.tables["candidates"], result.rejected, result.report


# --- seeds and model assignment (no model) ---


def test_seeds_are_stable_and_distinct() -> None:
    seeds = {derive_seed(0, "p1", k) for k in range(100)}
    assert len(seeds) == 100
    assert derive_seed(0, "p1", 3) == derive_seed(0, "p1", 3)
    assert derive_seed(1, "p1", 3) != derive_seed(0, "p1", 3)
    assert derive_seed(0, "p2", 3) != derive_seed(0, "p1", 3)
    assert all(0 <= s < 2**63 for s in seeds)


def test_spread_rotates_models_over_prompts() -> None:
    counts = [0, 0, 0]
    for i in range(300):
        picked = assign_models(f"prompt-{i}", 1, 3)
        counts[picked[0]] += 1
    # one sample per prompt, three models: each gets about a third of the prompts
    assert all(70 < c < 130 for c in counts), counts
    assert assign_models("p", 4, 2) in ([0, 1, 0, 1], [1, 0, 1, 0])
    assert assign_models("p", 2, 3, mix="each") == [0, 0, 1, 1, 2, 2]
    with pytest.raises(InputError, match="mix"):
        assign_models("p", 2, 3, mix="both")  # type: ignore[arg-type]


# --- generation with the embedded model ---


@pytest.mark.slow  # three runs over 2 GSM8K prompts x 3 samples: ~10 s, more on a busy machine
def test_n_distinct_candidates_then_a_rerun_makes_no_model_calls(
    gsm8k_prompts: pl.DataFrame, loaded: None, tmp_path: Path
) -> None:
    prompts = gsm8k_prompts.head(2)
    first = CountingClient("smollm2", batch_size=4)
    cache = CallCache(tmp_path / "calls.sqlite")
    candidates, rejected, report = run_generate(prompts, first, cache)
    cache.close()

    validate(candidates, "candidates")
    assert first.requests == 6
    assert rejected.height == 0
    assert candidates.height == 6
    assert candidates.group_by("prompt_id").len()["len"].to_list() == [3, 3]
    assert candidates["completion_id"].n_unique() == 6
    assert set(candidates["prompt_id"]) == set(prompts["prompt_id"])
    assert set(candidates["generator"]) == {"smollm2"}
    params = [json.loads(p) for p in candidates["params"]]
    assert len({p["seed"] for p in params}) == 6
    assert {p["sample"] for p in params} == {0, 1, 2}
    assert {p["backend"] for p in params} == {"local"}
    assert all(p["temperature"] == 1.0 and p["max_new_tokens"] == 8 for p in params)
    for row in candidates.iter_rows(named=True):
        assert row["completion_id"] == ids.completion_id(row["prompt_id"], row["completion"])
        assert row["completion"] == row["completion"].strip() != ""
    assert report["candidates"] == 6 and report["requests"] == 6
    assert report["new_calls"] == 6 and report["cache_hits"] == 0
    assert (
        report["cache"] == "call cache: 0/6 answered from cache, 6 new calls (0 failed, not cached)"
    )
    assert report["output_tokens"] > 0

    # The same run again on the same cache file: every answer from the cache, no model call.
    second = CountingClient("smollm2", batch_size=4)
    cache = CallCache(tmp_path / "calls.sqlite")
    again, _, report2 = run_generate(prompts, second, cache)
    cache.close()
    assert second.calls == 0 and second.requests == 0
    assert report2["cache_hits"] == 6 and report2["new_calls"] == 0
    assert report2["output_tokens"] == 0  # nothing spent
    assert again.equals(candidates)

    # Without the cache, in batches of one: the seeds alone reproduce the same candidates.
    third = CountingClient("smollm2", batch_size=1)
    fresh, _, report3 = run_generate(prompts, third, CallCache(enabled=False))
    assert third.requests == 6
    assert fresh.equals(candidates)
    assert report3["cache"] == "call cache: off (--no-cache)"


def test_interrupted_run_resumes_without_repeating_calls(
    gsm8k_prompts: pl.DataFrame, loaded: None, tmp_path: Path
) -> None:
    prompts = gsm8k_prompts.slice(10, 3)
    path = tmp_path / "calls.sqlite"
    short = Params(temperature=1.0, max_new_tokens=4, seed=3)
    # Chunks of one prompt; the run is interrupted while the third chunk is being asked.
    broken = CountingClient("smollm2", fail_on_call=3)
    cache = CallCache(path)
    with pytest.raises(KeyboardInterrupt):
        run_generate(prompts, broken, cache, n=2, params=short, chunk_size=1)
    cache.close()
    assert broken.requests == 4  # two chunks of 2 finished and were cached

    resumed = CountingClient("smollm2")
    cache = CallCache(path)
    candidates, _, report = run_generate(prompts, resumed, cache, n=2, params=short, chunk_size=1)
    cache.close()
    assert resumed.requests == 2  # only the chunk that was lost
    assert report["cache_hits"] == 4 and report["new_calls"] == 2
    assert candidates["prompt_id"].n_unique() == 3


def test_identical_completions_are_removed_and_counted(
    gsm8k_prompts: pl.DataFrame, loaded: None, tmp_path: Path
) -> None:
    # Greedy decoding ignores the seed: all 3 samples of a prompt are the same text.
    greedy = Params(temperature=0.0, max_new_tokens=4)
    cache = CallCache(enabled=False)
    candidates, rejected, report = run_generate(
        gsm8k_prompts.head(2), CountingClient("smollm2"), cache, params=greedy
    )
    assert candidates.height == 2
    assert candidates["prompt_id"].n_unique() == 2
    assert report["dropped_duplicate"] == 4
    dups = rejected.filter(pl.col("reason") == "duplicate")
    assert dups.height == 4
    assert sorted(dups["sample"].to_list()) == [1, 1, 2, 2]  # the first sample is kept
    kept = dict(zip(candidates["prompt_id"], candidates["completion"], strict=True))
    assert all(kept[r["prompt_id"]] == r["completion"] for r in dups.iter_rows(named=True))
    assert rejected.schema == pl.Schema(REJECTED_SCHEMA)


def test_errors_empty_replies_and_bad_prompts_go_to_rejected(
    gsm8k_prompts: pl.DataFrame, loaded: None
) -> None:
    client = CountingClient("smollm2")
    question = gsm8k_prompts["prompt"][0][0]["content"]
    # Learn the greedy reply's first character, then stop on it: the reply becomes empty.
    [probe] = asyncio.run(
        client.complete(
            [
                Request(
                    messages=({"role": "user", "content": question},),
                    params=Params(temperature=0, max_new_tokens=2),
                )
            ]
        )
    )
    assert probe.text
    prompts = pl.DataFrame(
        {
            "prompt": [
                question,
                "word " * 9000,  # longer than the model's 8192-token context
                "   ",  # blank
                question,  # the same prompt twice
            ]
        }
    )
    candidates, rejected, report = run_generate(
        prompts,
        client,
        CallCache(enabled=False),
        n=2,
        params=Params(temperature=0, max_new_tokens=2, stop=(probe.text[0],)),
    )
    assert candidates.height == 0
    reasons = rejected.group_by("reason").len().sort("reason")
    # Empty comes before duplicate: two blank replies are two empty rows.
    assert dict(reasons.iter_rows()) == {"empty": 2, "error": 2, "invalid_prompt": 2}
    assert report["dropped_error"] == 2 and report["dropped_invalid_prompt"] == 2
    assert report["dropped_empty"] == 2 and report["prompts_used"] == 2
    errors = rejected.filter(pl.col("reason") == "error")["error"].to_list()
    assert all("prompt too long" in e for e in errors)
    invalid = rejected.filter(pl.col("reason") == "invalid_prompt")["error"].to_list()
    assert any("empty" in e for e in invalid) and any("duplicate" in e for e in invalid)
    assert "prompt too long" in next(iter(report["error_examples"]))


def test_a_first_chunk_that_fails_entirely_stops_the_run(loaded: None) -> None:
    prompts = pl.DataFrame({"prompt": ["word " * 9000, "more " * 9000]})
    with pytest.raises(PrefdataError, match="every call in the first chunk failed"):
        run_generate(prompts, CountingClient("smollm2"), CallCache(enabled=False))


def test_bad_prompt_tables_are_input_errors() -> None:
    with pytest.raises(InputError, match="empty"):
        generate(
            pl.DataFrame({"prompt": []}, schema={"prompt": pl.String}),
            models=["smollm2"],
            cache=CallCache(enabled=False),
        )
    with pytest.raises(InputError, match="'prompt' column"):
        generate(pl.DataFrame({"text": ["hi"]}), models=["smollm2"], cache=CallCache(enabled=False))
    with pytest.raises(InputError, match="n must be"):
        generate(
            pl.DataFrame({"prompt": ["hi"]}),
            models=["smollm2"],
            n=0,
            cache=CallCache(enabled=False),
        )


def test_two_models_spread_and_each(
    gsm8k_prompts: pl.DataFrame, loaded: None, tiny_causal_lm: Path
) -> None:
    prompts = gsm8k_prompts.head(2)
    short = Params(temperature=1.0, max_new_tokens=3, seed=1)
    models = [CountingClient("smollm2"), CountingClient(str(tiny_causal_lm))]
    spread, _, report = _triple(
        generate(
            prompts,
            models=models,
            n=2,
            params=short,
            cache=CallCache(enabled=False),
            progress=False,
        )
    )
    # n=2 over two models: one sample from each model per prompt.
    assert models[0].requests == 2 and models[1].requests == 2
    per_prompt = spread.group_by("prompt_id").agg(pl.col("generator").n_unique())
    assert per_prompt["generator"].to_list() == [2, 2]
    assert report["models"] == ["smollm2", str(tiny_causal_lm)]
    generate(
        prompts,
        models=models,
        n=2,
        mix="each",
        params=short,
        cache=CallCache(enabled=False),
        progress=False,
    )
    assert models[0].requests == 2 + 4 and models[1].requests == 2 + 4


@pytest.mark.parametrize(
    ("backend", "model", "endpoint"),
    [
        ("openai", "Qwen/Qwen2.5-7B-Instruct", "chat.completions"),
        ("anthropic", "claude-sonnet-4-6", "messages"),
    ],
)
def test_remote_backends_through_the_factory_resume_with_zero_requests(
    gsm8k_prompts: pl.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    model: str,
    endpoint: str,
) -> None:
    """generate() builds the client from a name (make_client) and talks to the local server
    speaking the vendor's wire protocol; the server counts what it was asked."""
    from tests.llm.fake_server import FakeLLMServer

    key = "sk-test-generate-do-not-leak-31415"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    prompts = gsm8k_prompts.head(3)
    path = tmp_path / "calls.sqlite"
    params = Params(temperature=1.0, max_new_tokens=16, seed=5)
    with FakeLLMServer(api_key=key) as server:
        base_url = server.url + "/v1" if backend == "openai" else server.url
        options = {"max_retries": 1}

        def run(cache: CallCache) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
            return _triple(
                generate(
                    prompts,
                    models=[model],
                    backend=backend,
                    base_url=base_url,
                    client_options=options,
                    n=2,
                    params=params,
                    cache=cache,
                    progress=False,
                )
            )

        cache = CallCache(path)
        candidates, rejected, report = run(cache)
        cache.close()
        assert server.served(endpoint) == 6
        validate(candidates, "candidates")
        assert rejected.height == 0 and candidates.height == 6
        assert set(candidates["generator"]) == {model}
        # the client's own backend label
        backends = {json.loads(p)["backend"] for p in candidates["params"]}
        assert len(backends) == 1 and backends.pop().startswith(backend)
        assert report["new_calls"] == 6

        cache = CallCache(path)
        again, _, report = run(cache)
        cache.close()
        assert server.count() == 6  # not one request more
        assert report["cache_hits"] == 6 and report["new_calls"] == 0
        assert again.equals(candidates)
    assert key.encode() not in path.read_bytes()


def test_batches_api_mode_submits_once_and_resumes_from_the_cache(
    gsm8k_prompts: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.llm.fake_server import FakeLLMServer

    key = "sk-test-generate-batch-27182"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    prompts = gsm8k_prompts.head(3)
    path = tmp_path / "calls.sqlite"
    state = tmp_path / "batches"  # the Batches state files live beside the call cache
    with FakeLLMServer(api_key=key, batch_delay=0.2) as server:

        def run(cache: CallCache) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
            return _triple(
                generate(
                    prompts,
                    models=["claude-sonnet-4-6"],
                    backend="anthropic",
                    base_url=server.url,
                    n=2,
                    params=Params(max_new_tokens=16, seed=2),
                    cache=cache,
                    progress=False,
                    batch=True,
                    batch_poll_interval=0.05,
                    chunk_size=1,  # ignored in batch mode: one submission
                )
            )

        cache = CallCache(path)
        candidates, rejected, report = run(cache)
        cache.close()
        assert server.count("batches.create") == 1
        assert server.count("messages") == 0
        assert candidates.height == 6 and rejected.height == 0
        assert report["batches_api"] is True and report["new_calls"] == 6
        # every batch collected: no state file left beside the cache
        assert not list(state.glob("*.json"))
        requests_so_far = server.count()

        cache = CallCache(path)
        again, _, report = run(cache)
        cache.close()
        assert server.count() == requests_so_far
        assert report["cache_hits"] == 6
        assert again.equals(candidates)

    with pytest.raises(InputError, match="needs the anthropic backend"):
        generate(
            prompts,
            models=["smollm2"],
            cache=CallCache(enabled=False),
            batch=True,
            progress=False,
        )

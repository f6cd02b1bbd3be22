"""Fixtures for the model-client tests: the local wire-protocol server (tests/llm/
fake_server.py), a test API key, and a call cache in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from prefdata.llm.cache import CallCache
from prefdata.llm.retry import RetryPolicy
from tests.llm.fake_server import FakeLLMServer

# Looks like a real key so a leak would be recognisable in any file.
TEST_KEY = "fake-anthropic-key-do-not-leak-8f3a2c9d1e7b"
# Short waits so retry tests take tenths of a second, not the production half-second steps.
FAST_RETRIES = RetryPolicy(max_retries=4, base_delay=0.02, max_delay=0.2)


@pytest.fixture
def fake_server() -> Iterator[FakeLLMServer]:
    """A running server that accepts TEST_KEY; counts and faults start empty."""
    with FakeLLMServer(api_key=TEST_KEY, batch_delay=0.3) as server:
        yield server


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """TEST_KEY in ANTHROPIC_API_KEY and OPENAI_API_KEY (where the clients read it)."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    monkeypatch.delenv("PREFDATA_PRICES", raising=False)
    return TEST_KEY


@pytest.fixture
def call_cache(tmp_path: Path) -> Iterator[CallCache]:
    cache = CallCache(tmp_path / "calls.sqlite")
    yield cache
    cache.close()

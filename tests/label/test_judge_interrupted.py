"""Real judge runs (the `prefdata judge` command in a subprocess, the real Anthropic SDK against
the local wire-protocol server) that are killed, or that share one call cache:

- killed at random points with SIGINT, SIGTERM and SIGKILL, the re-run repeats at most the
  calls that were in flight at the kill (every answer is cached as it arrives);
- four processes judging the same pairs at once on one cache pay for at most four calls twice
  (a call is claimed in the cache before it is sent; the others wait for its answer).

The server answers each call after `LATENCY` seconds, so calls are in flight long enough for a
kill to land among them, and it logs every request with its arrival and answer times (its
clock is time.monotonic, the same clock as this test's), which is how the calls in flight at a
kill are counted: arrived before the kill (or at most `GRACE` after it: a request sent just
before can be logged just after) and not answered more than `GRACE` before it (an answer can
be on its way into the client's cache when the signal lands).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.llm.conftest import TEST_KEY
from tests.llm.fake_server import FakeLLMServer, Served

REPO = Path(__file__).resolve().parents[2]
LATENCY = 0.4
GRACE = 0.25
CONCURRENCY = 4
PAIRS = 16  # 32 calls per run: about 3.5 s of calls at 4 in flight

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def verdict(body: dict[str, Any]) -> dict[str, Any]:
    return {"verdict": "A", "rationale": "The first one.", "confidence": 0.75}


@pytest.fixture
def server() -> Any:
    with FakeLLMServer(api_key=TEST_KEY, latency=LATENCY, tool_answer=verdict) as s:
        yield s


def write_pairs(path: Path) -> Path:
    rows = [
        {"prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"Bad {i}."}
        for i in range(PAIRS)
    ]
    pl.DataFrame(rows).write_parquet(path)
    return path


def judge_command(data: Path, out: Path, cache: Path, url: str) -> list[str]:
    code = "from prefdata.cli import app; app()"
    return [
        sys.executable,
        "-c",
        code,
        "judge",
        str(data),
        "-o",
        str(out),
        "--judge",
        "anthropic:judge-k",
        "--base-url",
        url,
        "--max-concurrency",
        str(CONCURRENCY),
        "--cache",
        str(cache),
        "--no-progress",
    ]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(ANTHROPIC_API_KEY=TEST_KEY, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("PREFDATA_PRICES", None)
    return env


def content(entry: Served) -> str:
    """What makes two calls the same call: the model and everything it was shown."""
    body = entry.body or {}
    return json.dumps([body.get("model"), body.get("system"), body.get("messages")])


def in_flight(entries: list[Served], at: float) -> int:
    # GRACE on both sides: an answer can be on its way into the client's cache when the
    # signal lands, and a request sent just before it can reach the server's log just after
    # (a server thread that a loaded machine runs late).
    return sum(
        1
        for e in entries
        if e.received <= at + GRACE and not (e.status != 0 and e.answered < at - GRACE)
    )


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"]
)
def test_a_killed_judge_run_repeats_at_most_its_calls_in_flight(
    sig: signal.Signals, server: FakeLLMServer, tmp_path: Path
) -> None:
    data = write_pairs(tmp_path / "pairs.parquet")
    rng = random.Random(f"kill/{sig.name}")
    for attempt in range(1):  # a seeded random point per signal (each run costs ~15 s)
        cache = tmp_path / f"calls-{attempt}.sqlite"
        out = tmp_path / f"votes-{attempt}.parquet"
        command = judge_command(data, out, cache, server.url)
        before = len(server.entries("messages"))
        # Past the first CONCURRENCY calls (so some were answered), before the last ones.
        kill_after = rng.randint(CONCURRENCY + 1, 2 * PAIRS - CONCURRENCY)
        proc = subprocess.Popen(
            command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while len(server.entries("messages")) - before < kill_after:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the judge never sent its calls"
            time.sleep(0.01)
        proc.send_signal(sig)
        killed_at = time.monotonic()
        proc.communicate(timeout=60)
        logged = server.entries("messages")
        # A SIGKILL can land while a request's body is on the wire: the server logs what
        # arrived, which is not JSON, and refuses it (400). That call was never made, so it
        # is neither seen nor in flight; the re-run sends it whole.
        first = [e for e in logged[before:] if e.body is not None]
        flying = in_flight(first, killed_at)
        answered_first = sum(1 for e in first if e.status == 200 and e.answered < killed_at)
        assert answered_first >= 1 and not out.exists()

        again = subprocess.run(command, env=environment(), capture_output=True, timeout=300)
        assert again.returncode == 0, again.stderr.decode()[-2000:]
        rerun = [e for e in server.entries("messages")[len(logged) :] if e.body is not None]
        seen = {content(e) for e in first}
        repeated = sum(1 for e in rerun if content(e) in seen)
        # Every answered call is in the cache: only those in flight at the kill go again
        # (never more than the client lets fly at once).
        assert repeated <= min(flying, CONCURRENCY), (sig.name, kill_after, repeated, flying)
        # The re-run completes the work: every (pair, order) has its vote, none twice.
        votes = pl.read_parquet(out)
        assert votes.height == 2 * PAIRS and votes["error"].null_count() == 2 * PAIRS
        assert len(seen | {content(e) for e in rerun}) == 2 * PAIRS


def test_four_processes_on_one_cache_pay_at_most_four_calls_twice(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    data = write_pairs(tmp_path / "pairs.parquet")
    cache = tmp_path / "shared.sqlite"
    procs = [
        subprocess.Popen(
            judge_command(data, tmp_path / f"votes-{i}.parquet", cache, server.url),
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    calls = Counter(content(e) for e in server.entries("messages"))
    duplicates = sum(n - 1 for n in calls.values())
    assert len(calls) == 2 * PAIRS
    assert duplicates <= 4, duplicates
    # All four wrote the same votes (each answer paid once, read by all).
    tables = [pl.read_parquet(tmp_path / f"votes-{i}.parquet") for i in range(4)]
    labels = [t.sort("item_id", "order")["label"].to_list() for t in tables]
    assert all(lab == labels[0] for lab in labels)

"""Benchmark: the Anthropic client against the local Anthropic-speaking server (tests/llm/
fake_server.py) that answers after 100 ms and allows 50 requests per second.

    .venv/bin/python bench/bench_clients.py             # 500 requests per run
    .venv/bin/python bench/bench_clients.py --quick     # 150 requests per run (smoke run)

Runs, each through the real `anthropic` SDK and prefdata's AnthropicClient + CallCache:
1. `paced`: the client's own rate limit set to the server's (rate_limit=50, the default
   max_concurrency=8): it should never see a 429.
2. `unpaced`: no client-side limit; the server's 429 + retry-after pace it (with the
   client-wide pause after a 429).
3. `resumed`: run 1 again with the same call cache: every answer is in it.

Figures: sustained requests/second, measured on the server's clock as (answers - 1) over
the time from the first to the last 200 answer, leaving out the first second (the server's
bucket lets a start-up burst of 5 through, which would flatter the rate), as a fraction of
the 50/s limit (target >= 0.9); the 429 answers each run drew; the requests the resumed
run made (target 0).
The server runs in a thread of the same process (one GIL), so the figures include its
Python overhead as well as the client's. Figures are printed and written as JSON to
bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefdata.llm.anthropic import AnthropicClient
from prefdata.llm.base import Params, Request
from prefdata.llm.cache import CallCache, complete_cached
from tests.llm.fake_server import FakeLLMServer, served_rate

OUT_DIR = Path(__file__).resolve().parent / "out"
LIMIT = 50.0  # requests per second the server allows
LATENCY = 0.1  # seconds per answer
RATE_TARGET = 0.9
KEY = "bench-fake-key-not-real"
MODEL = "claude-haiku-4-5"


def _requests(n: int, tag: str) -> list[Request]:
    return [
        Request(
            messages=({"role": "user", "content": f"[{tag}] Write one line about item {i}."},),
            params=Params(max_new_tokens=32),
        )
        for i in range(n)
    ]


async def _run(
    server: FakeLLMServer, requests: list[Request], cache: CallCache, rate_limit: float | None
) -> dict[str, Any]:
    client = AnthropicClient(MODEL, api_key=KEY, base_url=server.url, rate_limit=rate_limit)
    start_count = server.count()
    start_entries = len(server.log)
    started = time.perf_counter()
    try:
        responses = await complete_cached(client, requests, cache)
    finally:
        await client.aclose()
    wall = time.perf_counter() - started
    entries = server.log[start_entries:]
    rate = served_rate(entries, skip_s=1.0)
    return {
        "requests": len(requests),
        "ok": sum(r.ok for r in responses),
        "http_requests": server.count() - start_count,
        "answered_429": sum(e.status == 429 for e in entries),
        "wall_s": wall,
        "served_per_s": rate,
        "fraction_of_limit": rate / LIMIT if entries else None,
        "client_retries": client.retrier.stats.retries,
        "cost_usd": sum(r.cost_usd for r in responses),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="150 requests per run")
    args = parser.parse_args()
    n = 150 if args.quick else args.requests
    print(
        f"local Anthropic-speaking server: {LATENCY * 1000:.0f} ms per answer, limit "
        f"{LIMIT:.0f} requests/s; {n} requests per run, default max_concurrency 8"
    )
    runs: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeLLMServer(api_key=KEY, latency=LATENCY, rate_limit=LIMIT) as server,
    ):
        cache = CallCache(Path(tmp) / "calls.sqlite")
        paced = _requests(n, "paced")
        runs["paced"] = asyncio.run(_run(server, paced, cache, LIMIT))
        runs["unpaced"] = asyncio.run(_run(server, _requests(n, "unpaced"), cache, None))
        cache.close()
        cache = CallCache(Path(tmp) / "calls.sqlite")  # as a new process would open it
        runs["resumed"] = asyncio.run(_run(server, paced, cache, LIMIT))
        runs["resumed"]["cache"] = cache.stats.line()
        cache.close()

    ok = True
    for name in ("paced", "unpaced"):
        r = runs[name]
        meets = r["fraction_of_limit"] >= RATE_TARGET and r["ok"] == n
        ok &= meets or name == "unpaced"
        print(
            f"  {name:8s} {r['served_per_s']:5.1f} requests/s = {r['fraction_of_limit']:.3f} of "
            f"the limit (target >= {RATE_TARGET})   {r['ok']}/{n} ok   {r['answered_429']} x 429   "
            f"{r['wall_s']:.2f} s   {'ok' if meets else 'MISSED'}"
        )
    resumed = runs["resumed"]
    ok &= resumed["http_requests"] == 0
    print(
        f"  resumed  {resumed['http_requests']} requests made (target 0); "
        f"{resumed['cache']}   {'ok' if resumed['http_requests'] == 0 else 'MISSED'}"
    )
    result = {
        "benchmark": "anthropic_client_rate",
        "requests_per_run": n,
        "server_limit_per_s": LIMIT,
        "server_latency_s": LATENCY,
        "target_fraction": RATE_TARGET,
        "runs": runs,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    OUT_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = OUT_DIR / f"bench_clients-{n}-{stamp}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"  written to {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

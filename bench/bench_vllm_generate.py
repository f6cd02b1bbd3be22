"""Generation on a GPU: transformers `generate` (the local backend) vs vLLM's offline engine
(the vllm backend), same prompts, same sampling settings, same process: output tokens per
second. Issue 18's target: the vllm backend at least 10x the local backend's tokens/s.

Runs in .venv-vllm (bash scripts/vllm-env.sh: vLLM, transformers and prefdata's core), on a
CUDA GPU; called by bench/gpu.sh. Prompts: the first --prompts GSM8K test questions (real
data), each sampled --n times at temperature 1.0, up to --max-new-tokens tokens. Both clients
load the model before the clock starts; tokens are each backend's own count of the tokens it
generated (Response.output_tokens). No call cache: every request is generated.

Usage: .venv-vllm/bin/python bench/bench_vllm_generate.py [--model smollm2] [--prompts 256]
Prints the figures and writes them as JSON to bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PREFDATA_SHARED_DATA", REPO.parent / "shared" / "data"))


def _requests(prompts: list[str], n: int, max_new_tokens: int) -> list[Any]:
    from prefdata.llm.base import Params, Request

    return [
        Request(
            messages=({"role": "user", "content": p},),
            params=Params(temperature=1.0, max_new_tokens=max_new_tokens, seed=k),
        )
        for p in prompts
        for k in range(n)
    ]


def _run(client: Any, requests: list[Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    replies = asyncio.run(client.complete(requests, lambda _i, _r: None))
    wall = time.perf_counter() - t0
    tokens = sum(r.output_tokens for r in replies)
    failed = sum(1 for r in replies if not r.ok)
    return {
        "wall_s": round(wall, 2),
        "output_tokens": tokens,
        "failed": failed,
        "tokens_per_s": round(tokens / wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--local-batch-size", type=int, default=64)
    args = ap.parse_args()

    import polars as pl

    from prefdata.llm.local import LocalClient
    from prefdata.llm.vllm_engine import VllmClient

    questions = pl.read_ndjson(DATA / "gsm8k" / "test.jsonl")["question"].head(args.prompts)
    requests = _requests(questions.to_list(), args.n, args.max_new_tokens)
    results: dict[str, Any] = {"requests": len(requests), "max_new_tokens": args.max_new_tokens}
    # vLLM first: it takes its share of GPU memory up front (gpu_memory_utilization), and
    # transformers then has the rest.
    engine = VllmClient(args.model, device="cuda")
    engine.load()
    results["vllm"] = _run(engine, requests)
    local = LocalClient(args.model, device="cuda", batch_size=args.local_batch_size)
    local.load()
    results["transformers"] = _run(local, requests)
    results["speedup"] = round(
        results["vllm"]["tokens_per_s"] / results["transformers"]["tokens_per_s"], 1
    )
    results["date"] = dt.date.today().isoformat()
    print(json.dumps(results, indent=2))
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_vllm_generate-{args.model}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

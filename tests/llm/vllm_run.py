"""Runs inside .venv-vllm (scripts/vllm-env.sh): the vllm backend with the real engine (vLLM's
CPU build) on the embedded SmolLM2, through prefdata's own stages. Writes what it saw as JSON
(argv[1]) for tests/llm/test_vllm_engine.py to check against transformers in the main venv.
Nothing here decides pass or fail: the checks are in the test.

Usage: .venv-vllm/bin/python tests/llm/vllm_run.py OUT.json WORK_DIR
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import polars as pl

from prefdata.label.judge import judge
from prefdata.label.runner import JudgeOptions
from prefdata.llm.base import Params, Request
from prefdata.llm.cache import CallCache
from prefdata.llm.generate import generate
from prefdata.llm.vllm_engine import VllmClient

CHOICE_PROMPTS = [
    "Is the sky blue on a clear day? Answer A for yes, B for no.",
    "Is grass purple? Answer A for yes, B for no.",
    "Which is a fruit: A) apple B) chair? Answer A or B.",
]
GREEDY_PROMPTS = ["Tell me a joke about cats.", "What is 2 + 2?"]
# bench/gpu.sh runs this on a GPU (PREFDATA_VLLM_DEVICE=cuda); the tests here on vLLM's CPU build
DEVICE = os.environ.get("PREFDATA_VLLM_DEVICE", "cpu")
PROMPTS = ["What is the capital of France?", "Name a colour.", "Say hello.", "Count to three."]


def main(out: Path, work: Path) -> None:
    started = time.perf_counter()
    client = VllmClient("smollm2", device=DEVICE, dtype="float32")
    seen: dict[str, object] = {"model_path": str(client.load()[0].llm_engine.model_config.model)}
    seen["engine_seconds"] = time.perf_counter() - started

    def ask(requests: list[Request]) -> list[dict[str, object]]:
        got: list[int] = []
        replies = asyncio.run(client.complete(requests, lambda i, _r: got.append(i)))
        assert sorted(got) == list(range(len(requests))), got
        return [r.to_json() for r in replies]

    seen["choices"] = ask(
        [
            Request(messages=({"role": "user", "content": p},), choices=("A", "B"))
            for p in CHOICE_PROMPTS
        ]
    )
    seen["greedy"] = ask(
        [
            Request(
                messages=({"role": "user", "content": p},),
                params=Params(temperature=0.0, max_new_tokens=12),
                logprobs=True,
            )
            for p in GREEDY_PROMPTS
        ]
    )
    seen["sampled"] = ask(
        [
            Request(
                messages=({"role": "user", "content": PROMPTS[0]},),
                params=Params(temperature=1.0, max_new_tokens=12, seed=seed),
            )
            for seed in (1, 1, 2)
        ]
    )

    # generate twice over one call cache: the second run makes no call at all.
    prompts = pl.DataFrame({"prompt": PROMPTS})
    params = Params(temperature=0.9, max_new_tokens=12, seed=0)
    runs = []
    for _ in range(2):
        cache = CallCache(work / "calls.sqlite")
        result = generate(
            prompts,
            models=["smollm2"],
            backend="vllm",
            n=2,
            params=params,
            cache=cache,
            device=DEVICE,
            client_options={"dtype": "float32"},
            progress=False,
        )
        cache.close()
        runs.append(result)
    runs[0].main.write_parquet(work / "candidates-1.parquet")
    runs[1].main.write_parquet(work / "candidates-2.parquet")
    seen["generate_reports"] = [r.report for r in runs]

    # the judge reading JSON verdicts through structured outputs
    pairs = (
        runs[0]
        .main.group_by("prompt_id", maintain_order=True)
        .agg(
            pl.col("prompt").first(),
            pl.col("completion").first().alias("chosen"),
            pl.col("completion").last().alias("rejected"),
        )
        .filter(pl.col("chosen") != pl.col("rejected"))
    )
    cache = CallCache(work / "calls.sqlite")
    verdict = judge(
        pairs,
        judges=["vllm:smollm2"],
        cache=cache,
        options=JudgeOptions(orders="ab", max_new_tokens=96),
        client_options={"vllm": {"reading": "json", "device": DEVICE, "dtype": "float32"}},
    )
    cache.close()
    verdict.tables["annotations"].write_parquet(work / "json-votes.parquet")
    seen["json_pairs"] = pairs.height
    seen["seconds"] = time.perf_counter() - started
    out.write_text(json.dumps(seen, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

"""Benchmark: local generation on the embedded model (SmolLM2-135M-Instruct), batched against
one request at a time, in the same process, on the same requests.

    .venv/bin/python bench/bench_generate.py                    # 16 prompts x 32 new tokens
    .venv/bin/python bench/bench_generate.py --prompts 32 --batch-size 16 --tokens 64
    .venv/bin/python bench/bench_generate.py --threads 1        # torch threads (shared machine)
    .venv/bin/python bench/bench_generate.py --device cuda

Requests: the first `--prompts` GSM8K test questions (real prompts, 60-120 tokens with the chat
template), sampled at temperature 1.0 with a seed per request, `--tokens` new tokens at most.
The same requests go through `LocalClient.complete_sync` with `batch_size=1` (the baseline:
one generate() call per request) and with `batch_size=--batch-size` (requests sorted by
length, left-padded, one generate() call per batch).

Timing: one short warm-up call first (the first generate() in a process pays one-off costs),
then the two modes alternate for `--repeat` rounds and the fastest run of each counts, since
other jobs on a shared machine slow some runs down. Throughput = generated tokens (the
reply's own tokens, eos included; padding and steps after a row finished are not counted)
per wall second. The figure printed last is the ratio batched / one-at-a-time.

It also checks that both modes produced the same text for every request (the local backend
promises batch-independent sampling; see prefdata/llm/local.py). Figures are printed and
written as JSON to bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefdata.io.importers.math import import_gsm8k
from prefdata.llm.base import Params, Request, Response
from prefdata.llm.local import LocalClient

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = Path(__file__).resolve().parent / "out"
GSM8K = Path(os.environ.get("PREFDATA_SHARED_DATA", REPO.parent / "shared" / "data")) / "gsm8k"


def requests_for(n_prompts: int, tokens: int) -> list[Request]:
    prompts = import_gsm8k(GSM8K / "test.jsonl").tables["prompts"].head(n_prompts)
    return [
        Request(
            messages=tuple(prompt),
            params=Params(temperature=1.0, max_new_tokens=tokens, seed=1000 + i),
        )
        for i, prompt in enumerate(prompts["prompt"].to_list())
    ]


def timed(client: LocalClient, requests: list[Request]) -> tuple[list[Response], float]:
    start = time.perf_counter()
    replies = client.complete_sync(requests)
    return replies, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    requests = requests_for(args.prompts, args.tokens)
    single = LocalClient("smollm2", device=args.device, batch_size=1)
    batched = LocalClient("smollm2", device=args.device, batch_size=args.batch_size)
    load_start = time.perf_counter()
    single.load()
    load_s = time.perf_counter() - load_start
    single.complete_sync([Request(messages=requests[0].messages, params=Params(max_new_tokens=4))])

    best: dict[str, float] = {}
    replies: dict[str, list[Response]] = {}
    for _ in range(args.repeat):
        for name, client in (("one_at_a_time", single), ("batched", batched)):
            out, seconds = timed(client, requests)
            errors = [r.error for r in out if r.error]
            if errors:
                raise SystemExit(f"{name}: {len(errors)} failed requests, first: {errors[0]}")
            replies[name] = out
            best[name] = min(best.get(name, float("inf")), seconds)

    tokens = sum(r.output_tokens for r in replies["batched"])
    same = sum(
        a.text == b.text for a, b in zip(replies["batched"], replies["one_at_a_time"], strict=True)
    )
    rates = {name: tokens / seconds for name, seconds in best.items()}
    ratio = rates["batched"] / rates["one_at_a_time"]
    result: dict[str, Any] = {
        "benchmark": "bench_generate",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": "smollm2 (SmolLM2-135M-Instruct, float32)" if args.device == "cpu" else "smollm2",
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "prompts": args.prompts,
        "max_new_tokens": args.tokens,
        "batch_size": args.batch_size,
        "repeat": args.repeat,
        "generated_tokens": tokens,
        "model_load_s": round(load_s, 2),
        "seconds": {k: round(v, 3) for k, v in best.items()},
        "tokens_per_s": {k: round(v, 1) for k, v in rates.items()},
        "ratio_batched_over_one_at_a_time": round(ratio, 2),
        "same_text_both_modes": f"{same}/{len(requests)}",
    }
    OUT_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = OUT_DIR / f"bench_generate-{args.prompts}x{args.tokens}-{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"{args.prompts} prompts x {args.tokens} new tokens, {tokens} tokens generated, "
        f"device {args.device}, {torch.get_num_threads()} torch threads, "
        f"load average {result['load_average_1m']:.1f} on {os.cpu_count()} CPUs"
    )
    for name in ("one_at_a_time", "batched"):
        label = "batch size 1" if name == "one_at_a_time" else f"batch size {args.batch_size}"
        print(f"  {name:14s} ({label:14s}): {best[name]:7.2f} s  {rates[name]:7.1f} tokens/s")
    print(f"  same text in both modes: {same}/{len(requests)}")
    print(f"ratio batched / one-at-a-time: {ratio:.2f}x   ({out.relative_to(REPO)})")


if __name__ == "__main__":
    main()

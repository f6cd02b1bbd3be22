"""The token-level pair check (prefdata.quality.token_integrity) on 1,000,000 pairs: pairs per
second, against the bare batched tokenizer call on the same pairs, in the same process.

Data: the real HH-RLHF harmless-base test pairs (2,303 multi-turn dialogues, ~190 tokens per
render with SmolLM2's template) repeated in order up to N pairs. Repeating them lets the fast
tokenizer's word cache hit more often than on N distinct pairs; it helps the check and the
baseline alike.

Check: `pair_token_integrity(chunk, tokenizer, Budget(...))` on chunks of `--chunk` pairs,
everything included (three chat-template renders per pair, tokenizing, the flags, the
details table).
Baseline: `tokenizer(texts, add_special_tokens=False)` on the three renders of each pair of a
chunk (prompt with the generation prompt, prompt + chosen, prompt + rejected): the tokenizer
call TRL's own preparation makes, rendering not counted. It runs on every `--baseline-every`-th
chunk, right after the check on that chunk, so load from other jobs falls on both alike.

Usage: python bench/bench_token_integrity.py [--pairs 1000000] [--quick] [--max-length 512]
Prints the figures and writes them as JSON to bench/out/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import polars as pl

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PREFDATA_SHARED_DATA", REPO.parent / "shared" / "data"))


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def run(pairs_n: int, chunk: int, every: int, budget: Any) -> dict[str, Any]:
    from prefdata.io.importers.hh_rlhf import import_hh_rlhf
    from prefdata.quality.token_integrity import (
        chat_messages,
        load_check_tokenizer,
        pair_token_integrity,
        render_chats,
    )

    tok, name = load_check_tokenizer("smollm2")
    base = import_hh_rlhf(DATA / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    reps = -(-chunk // base.height)
    block = pl.concat([base] * reps).head(chunk)  # one chunk's pairs, reused for every chunk
    pair_token_integrity(block.head(200), tok, budget)  # warm-up: template compile, caches

    check = {"wall": 0.0, "cpu": 0.0, "pairs": 0}
    bare = {"wall": 0.0, "cpu": 0.0, "pairs": 0}
    counts: dict[str, int] = {}
    load_before = os.getloadavg()[0]
    done = 0
    index = 0
    while done < pairs_n:
        part = block.head(min(chunk, pairs_n - done))
        w0, c0 = _clock()
        _, report = pair_token_integrity(part, tok, budget)
        w1, c1 = _clock()
        check["wall"] += w1 - w0
        check["cpu"] += c1 - c0
        check["pairs"] += part.height
        for k, v in report["counts"].items():
            counts[k] = counts.get(k, 0) + v
        if index % every == 0:
            prompts = [chat_messages(p) for p in part["prompt"].to_list()]
            texts = render_chats(tok, prompts, add_generation_prompt=True)
            for side in ("chosen", "rejected"):
                texts += render_chats(
                    tok,
                    [
                        [*p, {"role": "assistant", "content": x}]
                        for p, x in zip(prompts, part[side].to_list(), strict=True)
                    ],
                )
            w0, c0 = _clock()
            tok(texts, add_special_tokens=False)
            w1, c1 = _clock()
            bare["wall"] += w1 - w0
            bare["cpu"] += c1 - c0
            bare["pairs"] += part.height
        done += part.height
        index += 1
        if index % 10 == 0:
            rate = check["pairs"] / check["wall"]
            print(f"  {done:,} pairs, {rate:,.0f} pairs/s so far", flush=True)
    check_rate = check["pairs"] / check["wall"]
    bare_rate = bare["pairs"] / bare["wall"]
    return {
        "pairs": pairs_n,
        "distinct_pairs": base.height,
        "chunk": chunk,
        "baseline_every": every,
        "budget": budget.describe(),
        "tokenizer": name,
        "check": {
            **check,
            "pairs_per_s": check_rate,
            "cpu_pairs_per_s": check["pairs"] / check["cpu"],
        },
        "baseline": {
            **bare,
            "pairs_per_s": bare_rate,
            "cpu_pairs_per_s": bare["pairs"] / bare["cpu"],
        },
        "ratio_wall": bare_rate / check_rate,
        "ratio_cpu": (bare["pairs"] / bare["cpu"]) / (check["pairs"] / check["cpu"]),
        "counts": counts,
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "cpus": os.cpu_count(),
    }


def main() -> None:
    from prefdata.quality.token_integrity import Budget

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="20,000 pairs")
    ap.add_argument("--chunk", type=int, default=10_000)
    ap.add_argument("--baseline-every", type=int, default=5)
    ap.add_argument("--method", default="dpo", choices=("dpo", "kto", "reward"))
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--truncation-mode", default="keep_start", choices=("keep_start", "keep_end"))
    args = ap.parse_args()
    n = 20_000 if args.quick else args.pairs
    budget = Budget(args.method, args.max_length, args.truncation_mode)
    result = run(n, args.chunk, args.baseline_every, budget)
    c, b = result["check"], result["baseline"]
    print(
        f"token check: {c['pairs_per_s']:,.0f} pairs/s ({c['pairs']:,} pairs, {c['wall']:.0f} s; "
        f"CPU {c['cpu_pairs_per_s']:,.0f} pairs/s)\n"
        f"bare batched tokenizer call, 3 renders per pair: {b['pairs_per_s']:,.0f} pairs/s "
        f"({b['pairs']:,} pairs; CPU {b['cpu_pairs_per_s']:,.0f} pairs/s)\n"
        f"ratio (baseline rate / check rate): wall {result['ratio_wall']:.2f}x, "
        f"CPU {result['ratio_cpu']:.2f}x\n"
        f"flags: {result['counts']}\nload average (1 min): {result['load_average_1m']}"
    )
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = out / f"bench_token_integrity-{n}-{stamp}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()

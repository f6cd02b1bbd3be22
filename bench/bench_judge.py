"""Benchmark: the embedded local judge (SmolLM2-135M-Instruct, next-token P(A) vs P(B)) on
the 221 gold pairs of HHH alignment, one order vs both orders; and the calls and cost per
1,000 pairs of a both-orders Anthropic judge, online vs batch vs batch + prompt caching.

    .venv/bin/python bench/bench_judge.py                 # all 221 pairs, CPU
    .venv/bin/python bench/bench_judge.py --limit 40      # quick
    .venv/bin/python bench/bench_judge.py --device cuda

Accuracy figures (gold: HHH's chosen side):
- one order: each vote alone (order ab, order ba), label = argmax of P(A), P(B) mapped onto
  canonical sides; accuracy over all pairs (a vote is never a tie: p is never exactly 0.5).
- both orders, averaged: p_a = mean over the two orders; label = p_a > 0.5.
- both orders, inconsistent -> tie (the judge's default pooled verdict, `pool_orders`):
  accuracy with ties (a tie counts wrong) and without (ties left out, their number reported).
Position consistency: share of pairs whose two votes name the same side. P(first wins):
share of votes won by the response shown first.

Cost: `prefdata.label.judge.estimate` on the same pairs (tokens ~ characters / 4, 150 output
tokens per call), scaled to 1,000 pairs, with the built-in price table. Prompt caching applies
only to a cached prefix of at least 1,024 tokens (Sonnet); our rubric is far shorter, so the
figure is also given for a hypothetical 1,500-token rubric to show what caching would save.
Figures are printed and written as JSON to bench/out/.
"""

from __future__ import annotations

import argparse
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

import polars as pl

from prefdata.io.importers.hhh import import_hhh
from prefdata.label.estimate import estimate
from prefdata.label.judge import judge
from prefdata.label.rubric import Rubric, load_rubric
from prefdata.label.runner import JudgeOptions
from prefdata.llm.cache import CallCache
from prefdata.llm.local import LocalClient
from prefdata.quality.judge_eval import calibration, gold_from_pairs
from prefdata.quality.pooling import pool_orders

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = Path(__file__).resolve().parent / "out"
HHH = (
    Path(os.environ.get("PREFDATA_SHARED_DATA", REPO.parent / "shared" / "data"))
    / "hhh_alignment"
    / "hhh_alignment_eval.json"
)


def accuracy(labels: dict[str, str], truth: dict[str, str]) -> float:
    return sum(labels[i] == truth[i] for i in labels) / len(labels)


def local_figures(pairs: pl.DataFrame, device: str, batch_size: int) -> dict[str, Any]:
    client = LocalClient("smollm2", device=device, batch_size=batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        cache = CallCache(Path(tmp) / "calls.sqlite")
        start = time.perf_counter()
        result = judge(pairs, judges=[client], cache=cache)
        votes, report = result.tables["annotations"], result.report
        seconds = time.perf_counter() - start
        cache.close()
    gold = gold_from_pairs(pairs)
    truth = dict(zip(gold["item_id"], gold["label"], strict=True))
    ok = votes.filter(pl.col("error").is_null())
    one = {
        order: accuracy(
            dict(ok.filter(pl.col("order") == order).select("item_id", "label").iter_rows()),
            truth,
        )
        for order in ("ab", "ba")
    }
    verdicts = pool_orders(votes)
    averaged = {
        i: ("a" if p > 0.5 else "b")
        for i, p in verdicts.select("item_id", "p_a").iter_rows()
        if p is not None
    }
    cal = calibration(verdicts, gold)["judges"]["local:smollm2"]
    stats = report["judges"]["local:smollm2"]
    return {
        "pairs": len(truth),
        "votes": votes.height,
        "errors": stats["errors"],
        "seconds": round(seconds, 1),
        "accuracy_one_order": one,
        "accuracy_both_orders_averaged_p_a": accuracy(averaged, truth),
        "accuracy_both_orders_inconsistent_tie": {
            "with_ties": cal["accuracy_with_ties"],
            "without_ties": cal["accuracy_without_ties"],
            "ties": cal["judge_ties"],
        },
        "position_consistency": stats["position_consistency"],
        "p_first_wins": stats["p_first_wins"],
        "p_longer_wins": stats["p_longer_wins"],
        "mean_choice_mass": float(
            pl.Series([json.loads(r)["mass"] for r in ok["raw"]]).mean()  # type: ignore[arg-type]
        ),
    }


def cost_figures(pairs: pl.DataFrame, model: str) -> dict[str, Any]:
    scale = 1000 / pairs.height
    out: dict[str, Any] = {"model": model}
    rubric = load_rubric("helpfulness")
    long_rubric = Rubric("long", rubric.system + "\n" + "Further guidance. " * 333, rubric.user)
    folder = Path(tempfile.mkdtemp())
    for name, r in (("built-in helpfulness rubric", rubric), ("1,500-token rubric", long_rubric)):
        template = folder / f"{r.name}.txt"
        template.write_text(f"### system\n{r.system}\n### user\n{r.user}\n", encoding="utf-8")
        options = JudgeOptions(rubric=str(template))
        plan = estimate(pairs, judges=[f"anthropic:{model}"], options=options)
        entry = plan["judges"][f"anthropic:{model}"]
        out[name] = {
            "calls_per_1000_pairs": round(plan["calls_per_judge"] * scale),
            "cached_prefix_tokens": plan["cached_prefix_tokens"],
            "approx_input_tokens_per_1000_pairs": round(
                plan["approx_input_tokens_per_judge"] * scale
            ),
            "usd_per_1000_pairs": {
                "online": round(entry["usd_online_no_cache"] * scale, 3),
                "online_prompt_caching": round(entry["usd_online"] * scale, 3),
                "batch": round(entry["usd_batch"] * scale, 3),
                "batch_prompt_caching": round(entry["usd_batch_cached"] * scale, 3),
            },
            "prompt_caching_applies": entry["prompt_caching_applies"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N pairs only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--model", default="claude-sonnet-4-6", help="priced Anthropic model")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    pairs = import_hhh(HHH).tables["pairs"]
    if args.limit:
        pairs = pairs.head(args.limit)
    result = {
        "benchmark": "bench_judge",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "device": args.device,
        "local_judge": local_figures(pairs, args.device, args.batch_size),
        "anthropic_cost": cost_figures(pairs, args.model),
    }
    print(json.dumps(result, indent=1))
    OUT_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = OUT_DIR / f"bench_judge-{pairs.height}-{stamp}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()

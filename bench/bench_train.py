"""Benchmark: training costs: DPO with LoRA vs full fine-tuning, prefdata vs plain TRL, and
on a GPU DPO and GRPO throughput with and without Liger kernels.

    .venv/bin/python bench/bench_train.py                 # both parts, embedded SmolLM2, CPU
    .venv/bin/python bench/bench_train.py --quick         # tiny model (smoke run, ~1 min)
    .venv/bin/python bench/bench_train.py --part overhead --repeat 5
    .venv/bin/python bench/bench_train.py --part precision --repeat 3   # bf16 vs fp32, CPU
    .venv/bin/python bench/bench_train.py --part gpu      # what bench/gpu.sh runs

Data: the shortest PandaLM pairs of ../shared/data (3 human votes each, so a real
`confidence` and the confidence weights are active), as a pairs table.

Part `memory` (the embedded SmolLM2-135M, 3 steps, batch 2, max_length 128): DPO with
LoRA, the reference being the same model with the adapter disabled (one copy in memory),
against full fine-tuning with a separate frozen reference model; same data, steps and TRL
settings, one run each. Figures: peak resident memory of each run's own fresh process
(getrusage ru_maxrss, interpreter and libraries included; the growth over a process that
only imports and loads the data is printed too), and the median step time (steps after the
first, which warms up). Ratios: full / LoRA.

Part `overhead` (by default a 4-layer, 128-wide model of SmolLM2's shape and tokenizer, 10
steps: cheap steps, so a fixed per-step cost of the wrapper would show more than on the
real model; `--overhead-model smollm2` for the real one): `prefdata.train` DPO against a
plain TRL script (DPOTrainer with the identical DPOConfig fields, the same model, rows and
LoRA config, no prefdata code) on the same data. prefdata's run includes everything it
adds: recipe resolution, the frozen reference check, the confidence collator and the
gradient hook. Runs alternate (plain, prefdata, plain, ...) in fresh processes; each run's
median step time counts, the fastest run of each side is compared (other jobs on a shared
machine only ever slow a run down).
Ratio = plain step time / prefdata step time; target >= 0.97 (the wrapper adds no cost).

Part `precision` (CPU; the embedded SmolLM2, LoRA, batch 2, max_length 128): the same
prefdata DPO run in fp32 (prefdata's choice on a CPU) and with `bf16=true` (kept on a CPU with
`use_cpu`, bf16 autocast), alternating in fresh processes; each run's median step time counts
and the fastest of each is compared. Ratio = bf16 step time / fp32 step time (above 1: bf16 is
slower on this CPU). What bf16 costs depends on the CPU's bf16 instructions (AVX512-BF16,
AMX): measure on the machine you train on.

Part `gpu` (prepared for a CUDA GPU, run by bench/gpu.sh; skipped without CUDA): tokens per
second and peak GPU memory on SmolLM2 in bf16 with LoRA, with and without Liger kernels
(`use_liger_kernel=true`, needs `pip install liger-kernel`), for
- DPO: batch 8, max_length 1024, on PandaLM pairs;
- GRPO: the first GSM8K test questions, 8 completions per prompt, 8 prompts per step (batch
  64 completions), max_completion_length 256, the accuracy reward, beta 0. Tokens are TRL's
  `num_tokens` (prompt + completion tokens); the time includes generation (plain
  transformers `generate`, no vLLM), which dominates GRPO steps. In TRL 1.16 Liger only
  swaps the layer kernels (RMSNorm, RoPE, SwiGLU) for GRPO: TRL's own chunked log-prob
  head already avoids the full logits. `--gpu-methods dpo,grpo` picks the methods.

Results are printed and written as JSON to bench/out/.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"
DATA = Path(os.environ.get("PREFDATA_SHARED_DATA", REPO.parent / "shared" / "data"))


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _pairs(n: int, max_chars: int) -> Any:
    import polars as pl

    from prefdata.io.importers.pandalm import import_pandalm

    pairs = import_pandalm(DATA / "pandalm_testset" / "testset-v1.json").tables["pairs"]
    prompt = pairs["prompt"].list.eval(pl.element().struct.field("content").str.len_chars())
    total = prompt.list.sum() + pairs["chosen"].str.len_chars() + pairs["rejected"].str.len_chars()
    return pairs.filter(total < max_chars).head(n)


def _step_timer() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self._start = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.times.append(time.perf_counter() - self._start)

    return StepTimer()


def _timing(times: list[float]) -> dict[str, Any]:
    steady = times[1:] if len(times) > 1 else times
    return {
        "step_times": times,
        "step_median": statistics.median(steady),
        "step_min": min(steady),
    }


def _trl_fields(steps: int, batch: int, max_length: int) -> dict[str, Any]:
    return {
        "max_steps": steps,
        "per_device_train_batch_size": batch,
        "max_length": max_length,
        "learning_rate": 5e-5,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
    }


LORA = {"r": 16, "lora_alpha": 32}


# --- children (each runs in a fresh process) --------------------------------------------------


def child_baseline(cfg: dict[str, Any]) -> dict[str, Any]:
    """Imports and data, no model: what every run's peak memory includes anyway."""
    import torch  # noqa: F401
    import trl  # noqa: F401

    _pairs(cfg["pairs"], cfg["max_chars"])
    return {"peak_rss": _peak_rss()}


def child_prefdata(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    from prefdata.train import prepare

    data = _pairs(cfg["pairs"], cfg["max_chars"])
    recipe = {
        **_trl_fields(cfg["steps"], cfg["batch"], cfg["max_length"]),
        **cfg.get("extra_trl", {}),
        "peft": LORA,
        "prefdata": {"full_finetune": cfg.get("full", False)},
    }
    timer = _step_timer()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        prepared = prepare("dpo", recipe=recipe, data=data, model=cfg["model"], out=out)
        prepared.trainer.add_callback(timer)
        setup = time.perf_counter() - start
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        report = prepared.fit(out)
    result = {
        "setup_seconds": setup,
        "peak_rss": _peak_rss(),
        "reference": report["reference"],
        "trainable_parameters": report["trainable_parameters"],
        "losses": report["losses"],
        "train_runtime": report["metrics"]["train_runtime"],
        "tokens": report["last_log"].get("num_tokens"),
        "precision": report["precision"],
        **_timing(timer.times),
    }
    if torch.cuda.is_available():
        result["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
        result["gpu"] = torch.cuda.get_device_name(0)
    return result


def child_plain_trl(cfg: dict[str, Any]) -> dict[str, Any]:
    """What a user writes with TRL alone: the same fields, model, rows and LoRA settings."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from prefdata.io.exporters import to_trl
    from prefdata.io.tables import to_hf_dataset
    from prefdata.train.models import model_path

    pairs = _pairs(cfg["pairs"], cfg["max_chars"])
    dataset = to_hf_dataset(to_trl(pairs, conversational=True, minimal=True))
    path = model_path(cfg["model"])
    timer = _step_timer()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        # The fields prefdata's resolved recipe holds (see child_prefdata's report): the same
        # TRL settings, including the CPU-appropriate precision a TRL user must set by hand.
        args = DPOConfig(
            output_dir=out,
            **_trl_fields(cfg["steps"], cfg["batch"], cfg["max_length"]),
            **cfg["plain_precision"],
            report_to="none",
        )
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=LoraConfig(
                r=LORA["r"],
                lora_alpha=LORA["lora_alpha"],
                lora_dropout=0.0,
                target_modules="all-linear",
                bias="none",
                task_type="CAUSAL_LM",
            ),
            callbacks=[timer],
        )
        setup = time.perf_counter() - start
        result = trainer.train()
        trainer.save_model(out)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        "setup_seconds": setup,
        "peak_rss": _peak_rss(),
        "losses": losses,
        "train_runtime": result.metrics["train_runtime"],
        **_timing(timer.times),
    }


def _gsm8k_prompts(n: int) -> Any:
    from prefdata.io.importers.math import import_gsm8k

    return import_gsm8k(DATA / "gsm8k" / "test.jsonl").tables["prompts"].head(n)


def child_grpo(cfg: dict[str, Any]) -> dict[str, Any]:
    """GRPO through prefdata.train on GSM8K prompts (see the module doc, part `gpu`)."""
    import torch

    from prefdata.train import prepare

    data = _gsm8k_prompts(cfg["grpo_prompts"])
    recipe = {
        "max_steps": cfg["grpo_steps"],
        "per_device_train_batch_size": cfg["grpo_batch"],
        "num_generations": 8,
        "max_completion_length": cfg["grpo_completion_length"],
        "learning_rate": 1e-5,
        "beta": 0.0,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
        **cfg.get("extra_trl", {}),
        "peft": LORA,
        "prefdata": {"rewards": [{"name": "accuracy"}], "monitor": {"enabled": False}},
    }
    timer = _step_timer()
    with tempfile.TemporaryDirectory() as out:
        prepared = prepare("grpo", recipe=recipe, data=data, model=cfg["model"], out=out)
        prepared.trainer.add_callback(timer)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        report = prepared.fit(out)
    stats = report["reward_stats"]
    result = {
        "losses": report["losses"],
        "train_runtime": report["metrics"]["train_runtime"],
        "tokens": report["last_log"].get("num_tokens"),
        "precision": report["precision"],
        "completions_per_step": cfg["grpo_batch"],
        "mean_completion_length": stats.get("completions/mean_length", {}).get("mean"),
        "reward_mean": stats.get("reward", {}).get("mean"),
        **_timing(timer.times),
    }
    if torch.cuda.is_available():
        result["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
        result["gpu"] = torch.cuda.get_device_name(0)
    return result


def _in_child(func: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    context = mp.get_context("spawn")
    with context.Pool(1, maxtasksperchild=1) as pool:
        result: dict[str, Any] = pool.apply(func, (cfg,))
    return result


# --- parts ------------------------------------------------------------------------------------


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def part_memory(cfg: dict[str, Any], repeat: int) -> dict[str, Any]:
    baseline = _in_child(child_baseline, cfg)
    runs: dict[str, list[dict[str, Any]]] = {"lora": [], "full": []}
    for i in range(repeat):
        for name in ("lora", "full"):
            result = _in_child(child_prefdata, {**cfg, "full": name == "full"})
            runs[name].append(result)
            print(
                f"  memory run {i + 1} {name}: peak {_mib(result['peak_rss'])}, "
                f"step {result['step_median']:.2f} s ({result['reference']})",
                flush=True,
            )
    best = {k: min(v, key=lambda r: r["step_median"]) for k, v in runs.items()}
    peak = {k: max(r["peak_rss"] for r in v) for k, v in runs.items()}
    base = baseline["peak_rss"]
    out = {
        "baseline_peak_rss": base,
        "lora": {
            "peak_rss": peak["lora"],
            "step_median": best["lora"]["step_median"],
            "reference": best["lora"]["reference"],
            "trainable_parameters": best["lora"]["trainable_parameters"],
        },
        "full": {
            "peak_rss": peak["full"],
            "step_median": best["full"]["step_median"],
            "reference": best["full"]["reference"],
            "trainable_parameters": best["full"]["trainable_parameters"],
        },
        "peak_ratio_full_over_lora": peak["full"] / peak["lora"],
        "peak_growth_ratio_full_over_lora": (peak["full"] - base) / (peak["lora"] - base),
        "step_time_ratio_full_over_lora": best["full"]["step_median"] / best["lora"]["step_median"],
        "runs": runs,
    }
    print(
        f"memory: LoRA peak {_mib(peak['lora'])} (+{_mib(peak['lora'] - base)} over "
        f"imports+data {_mib(base)}), full {_mib(peak['full'])} (+{_mib(peak['full'] - base)}): "
        f"ratio {out['peak_ratio_full_over_lora']:.2f} "
        f"(growth ratio {out['peak_growth_ratio_full_over_lora']:.2f}); step time LoRA "
        f"{best['lora']['step_median']:.2f} s, full {best['full']['step_median']:.2f} s: ratio "
        f"{out['step_time_ratio_full_over_lora']:.2f}"
    )
    return out


def part_overhead(cfg: dict[str, Any], repeat: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "prefdata": []}
    for i in range(repeat):
        for name, func in (("plain", child_plain_trl), ("prefdata", child_prefdata)):
            result = _in_child(func, cfg)
            runs[name].append(result)
            print(
                f"  overhead run {i + 1} {name}: step median {result['step_median']:.3f} s, "
                f"setup {result['setup_seconds']:.1f} s",
                flush=True,
            )
    best = {k: min(r["step_median"] for r in v) for k, v in runs.items()}
    medians = {k: statistics.median(r["step_median"] for r in v) for k, v in runs.items()}
    # The first step's loss is log 2 for both (policy = reference); later ones differ because
    # prefdata weights each pair by its confidence and plain TRL does not.
    first_equal = [
        abs(a["losses"][0] - b["losses"][0]) < 1e-5
        for a, b in zip(runs["plain"], runs["prefdata"], strict=True)
    ]
    out = {
        "plain_step": best["plain"],
        "prefdata_step": best["prefdata"],
        "ratio_plain_over_prefdata": best["plain"] / best["prefdata"],
        "ratio_of_medians": medians["plain"] / medians["prefdata"],
        "target": 0.97,
        "meets_target": best["plain"] / best["prefdata"] >= 0.97,
        "losses_plain_first_run": runs["plain"][0]["losses"],
        "losses_prefdata_first_run": runs["prefdata"][0]["losses"],
        "first_loss_equal": all(first_equal),
        "runs": runs,
    }
    print(
        f"overhead: plain TRL {best['plain']:.3f} s/step, prefdata {best['prefdata']:.3f} s/step: "
        f"ratio {out['ratio_plain_over_prefdata']:.3f} (target >= 0.97; ratio of medians "
        f"{out['ratio_of_medians']:.3f})"
    )
    return out


def part_precision(cfg: dict[str, Any], repeat: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"fp32": [], "bf16": []}
    for i in range(repeat):
        for name in ("fp32", "bf16"):
            extra = {"bf16": True} if name == "bf16" else {}
            result = _in_child(child_prefdata, {**cfg, "extra_trl": extra})
            runs[name].append(result)
            print(
                f"  precision run {i + 1} {name}: step median {result['step_median']:.2f} s "
                f"(bf16={result['precision']['bf16']})",
                flush=True,
            )
    best = {k: min(r["step_median"] for r in v) for k, v in runs.items()}
    medians = {k: statistics.median(r["step_median"] for r in v) for k, v in runs.items()}
    out = {
        "fp32_step": best["fp32"],
        "bf16_step": best["bf16"],
        "ratio_bf16_over_fp32": best["bf16"] / best["fp32"],
        "ratio_of_medians": medians["bf16"] / medians["fp32"],
        "runs": runs,
    }
    print(
        f"precision: fp32 {best['fp32']:.2f} s/step, bf16 {best['bf16']:.2f} s/step: ratio "
        f"bf16/fp32 {out['ratio_bf16_over_fp32']:.2f} (ratio of medians "
        f"{out['ratio_of_medians']:.2f}; {repeat} runs each)"
    )
    return out


def _gpu_variants(method: str, child: Any, cfg: dict[str, Any], repeat: int) -> dict[str, Any]:
    """One method without and with Liger kernels; tokens/s over the steps after the first."""
    out: dict[str, Any] = {}
    for name, extra in (("no_liger", {}), ("liger", {"use_liger_kernel": True})):
        results = []
        for _ in range(repeat):
            try:
                results.append(_in_child(child, {**cfg, "extra_trl": extra}))
            except Exception as err:  # liger-kernel missing, or a kernel error: report it
                results.append({"error": f"{type(err).__name__}: {err}"})
                break
        ok = [r for r in results if "error" not in r]
        if not ok:
            out[name] = results[-1]
            print(f"gpu {method} {name}: {results[-1]['error']}")
            continue
        best = min(ok, key=lambda r: r["train_runtime"])
        steady = sum(best["step_times"][1:]) or best["train_runtime"]
        steps = max(len(best["step_times"]) - 1, 1)
        tokens = float(best["tokens"] or 0)
        per_step = tokens / len(best["step_times"]) if best["step_times"] else 0.0
        out[name] = {
            "tokens_per_second": per_step * steps / steady,
            "peak_gpu_bytes": best["peak_gpu_bytes"],
            "step_median": best["step_median"],
            "precision": best["precision"],
            "gpu": best["gpu"],
        }
        if "completions_per_step" in best:
            out[name]["completions_per_second"] = best["completions_per_step"] * steps / steady
            out[name]["mean_completion_length"] = best["mean_completion_length"]
        print(
            f"gpu {method} {name}: {out[name]['tokens_per_second']:,.0f} tokens/s, peak "
            f"{_mib(best['peak_gpu_bytes'])}, step {best['step_median']:.3f} s ({best['gpu']})"
        )
    if "tokens_per_second" in out.get("liger", {}) and "tokens_per_second" in out["no_liger"]:
        out["liger_speedup"] = (
            out["liger"]["tokens_per_second"] / out["no_liger"]["tokens_per_second"]
        )
        out["liger_memory_ratio"] = (
            out["liger"]["peak_gpu_bytes"] / out["no_liger"]["peak_gpu_bytes"]
        )
    return out


def part_gpu(cfg: dict[str, Any], repeat: int, methods: list[str]) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        print("gpu: no CUDA device, skipped")
        return {"skipped": "no CUDA device"}
    out: dict[str, Any] = {}
    if "dpo" in methods:
        # Kept at the top level too: earlier result files have the DPO figures there.
        out.update(_gpu_variants("dpo", child_prefdata, cfg, repeat))
    if "grpo" in methods:
        out["grpo"] = _gpu_variants("grpo", child_grpo, cfg, repeat)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--part",
        choices=["memory", "overhead", "precision", "gpu", "cpu"],
        default="cpu",
        help="cpu = memory + overhead (default)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny model, few steps")
    parser.add_argument(
        "--model", default=None, help="memory and gpu parts; default smollm2 (tiny with --quick)"
    )
    parser.add_argument(
        "--overhead-model",
        default="small",
        help="overhead part: 'small' (a 4-layer, 128-wide model of SmolLM2's shape: cheap steps, "
        "so any fixed per-step cost of the wrapper weighs more), 'smollm2' or a folder",
    )
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(OUT_DIR))
    parser.add_argument(
        "--gpu-methods", default="dpo,grpo", help="gpu part: dpo, grpo or both (comma-separated)"
    )
    parser.add_argument("--grpo-steps", type=int, default=10, help="gpu part: GRPO steps")
    parser.add_argument(
        "--grpo-completion-length", type=int, default=256, help="gpu part: GRPO tokens sampled"
    )
    args = parser.parse_args(argv)

    from prefdata.models.tiny import tiny_model

    model = args.model
    if model is None:
        model = str(tiny_model(layers=2, hidden=64)) if args.quick else "smollm2"
    overhead_model = args.overhead_model
    if overhead_model == "small":
        overhead_model = str(tiny_model(layers=4, hidden=128, heads=4, kv_heads=2))
    steps = args.steps or (4 if args.quick else 3)
    cfg: dict[str, Any] = {
        "model": model,
        "steps": steps,
        "batch": args.batch,
        "max_length": args.max_length,
        "pairs": args.pairs,
        "max_chars": 800,
        # prefdata's precision choice on this hardware, given to the plain TRL script by hand.
        "plain_precision": {"bf16": False, "fp16": False, "activation_checkpointing": False},
    }
    if args.part == "gpu":
        cfg.update(
            {
                "plain_precision": {},
                "max_length": max(args.max_length, 1024),
                "batch": max(args.batch, 8),
                "pairs": max(args.pairs, 256),
                "max_chars": 4000,
                "steps": args.steps or 20,
                # GRPO: 8 prompts x 8 completions per step.
                "grpo_steps": args.grpo_steps,
                "grpo_batch": 64,
                "grpo_prompts": 64,
                "grpo_completion_length": args.grpo_completion_length,
            }
        )
    results: dict[str, Any] = {
        "benchmark": "bench_train",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_before": os.getloadavg(),
        },
        "config": cfg,
    }
    if args.part in ("memory", "cpu"):
        results["memory"] = part_memory(cfg, 1)
    if args.part == "precision":
        results["precision"] = part_precision(cfg, args.repeat)
    if args.part in ("overhead", "cpu"):
        overhead_cfg = {
            **cfg,
            "model": model if args.quick else overhead_model,
            "steps": args.steps or (4 if args.quick else 10),
        }
        results["config_overhead"] = overhead_cfg
        results["overhead"] = part_overhead(overhead_cfg, args.repeat)
    if args.part == "gpu":
        methods = [m.strip() for m in args.gpu_methods.split(",") if m.strip()]
        results["gpu"] = part_gpu(cfg, args.repeat, methods)
    results["machine"]["load_average_after"] = os.getloadavg()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"bench_train-{args.part}{'-quick' if args.quick else ''}-{stamp}.json"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

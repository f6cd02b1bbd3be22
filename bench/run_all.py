#!/usr/bin/env python
"""Run every benchmark in bench/, each in its own process, and print one table of their figures.

    .venv/bin/python bench/run_all.py                  # quick sizes (smoke runs, ~15 min here)
    .venv/bin/python bench/run_all.py --full           # the benchmarks' real sizes (hours on CPU)
    .venv/bin/python bench/run_all.py --only bench_io noisy_labels
    .venv/bin/python bench/run_all.py --skip bench_argilla --timeout 1200

Each benchmark keeps its own flags and JSON; this script knows them (BENCHMARKS below: the
flags for quick and full, and how to read the figure, baseline, ratio and target out of the
JSON it writes to bench/out/). A bench_*.py it does not know still runs (with --quick when
its --help offers it) and gets a row saying its figures were not read. GPU-only parts run
only when torch sees CUDA (bench_train --part gpu; noisy_labels --full, which without a GPU
runs at its CPU size); the Argilla benchmark is skipped when the annotation server is not
set up. A benchmark that fails or times out gets a row saying so and does not stop the rest.

Output: the table on stdout, and as markdown in bench/out/run_all-<date>.md with the machine
description (CPU, memory, GPU, load average), for bench/README.md's "Latest table". Each
benchmark's own output goes to bench/out/run_all-<date>/<name>.log. Exit status 1 when a
benchmark failed (a missed target is a figure, not a failure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT_DIR = BENCH / "out"


@dataclass
class Row:
    """One line of the table; every cell is already text."""

    benchmark: str
    figure: str
    value: str = "-"
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    met: str = "-"


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != x:  # NaN
            return "-"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{digits}g}".rstrip(".")
    return str(x)


def _s(x: Any) -> str:
    return f"{_num(x)} s" if x is not None else "-"


def _mib(x: Any) -> str:
    return f"{x / 2**20:,.0f} MiB" if x is not None else "-"


def _ratio(x: Any) -> str:
    return f"{x:.3g}x" if isinstance(x, int | float) else "-"


def _met(x: Any) -> str:
    return "-" if x is None else ("**yes**" if x else "**no**")


# --- readers: one per benchmark, JSON -> rows -----------------------------------------------


def read_io(d: dict[str, Any]) -> list[Row]:
    t = d.get("targets", {})
    rows = f"{d['rows']:,} pairs"
    # The memory target is about large files: a small one is dominated by the interpreter and
    # libraries (~300 MiB), whatever the data (bench/README.md, bench_io).
    small = d["rows"] < 1_000_000
    return [
        Row(
            "bench_io",
            f"import + validate + export wall time, {rows}",
            _s(d["prefdata_seconds"]),
            f"{_s(d['baseline_seconds'])} (polars read + write)",
            _ratio(d["time_ratio"]),
            f"<= {t.get('time_ratio_max', 3):g}x",
            _met(t.get("time_met")),
        ),
        Row(
            "bench_io",
            "peak memory / Parquet size",
            _mib(d["prefdata_peak_rss"]),
            f"{_mib(d['parquet_bytes'])} (file)",
            _ratio(d["memory_ratio"]),
            f"< {t.get('memory_ratio_max', 4):g}x" + (" at 1,000,000 pairs" if small else ""),
            "n/a (small file)" if small else _met(t.get("memory_met")),
        ),
    ]


def read_agreement(d: dict[str, Any]) -> list[Row]:
    out = []
    for lv in d["levels"]:
        target = lv["level"] != "ordinal"  # ordinal is reported, not a target
        out.append(
            Row(
                "bench_agreement",
                f"Krippendorff's alpha, {lv['level']}, {d['items']:,} items",
                _s(lv["prefdata_s"]),
                f"{_s(lv['krippendorff_s'])} (krippendorff)",
                _ratio(lv["ratio"]),
                "<= 1x, same alpha" if target else "-",
                _met(lv["meets_target"]) if target else "-",
            )
        )
    full = d.get("agreement_end_to_end")
    if full:
        out.append(
            Row(
                "bench_agreement",
                f"agreement() end to end, {full['votes']:,} votes",
                _s(full["seconds"]),
            )
        )
    return out


def read_audit(d: dict[str, Any]) -> list[Row]:
    out = []
    for phase, r in d["phases"].items():
        if phase == "generate":
            continue
        out.append(
            Row(
                "bench_audit",
                f"{phase}, {d['n']:,} pairs (wall; peak RSS {r['peak_rss_mib']:,.0f} MiB)",
                _s(r["wall_s"]),
            )
        )
    return out


def read_clients(d: dict[str, Any]) -> list[Row]:
    limit = d["server_limit_per_s"]
    target = d.get("target_fraction", 0.9)
    out = []
    for name, label in (("paced", "client rate limit"), ("unpaced", "no client limit")):
        r = d["runs"][name]
        frac = r["fraction_of_limit"]
        out.append(
            Row(
                "bench_clients",
                f"requests/s, {label} ({r['answered_429']} 429s)",
                _num(r["served_per_s"]),
                f"{limit:g}/s (server limit)",
                _ratio(frac),
                f">= {target:g}x",
                _met(frac is not None and frac >= target),
            )
        )
    resumed = d["runs"]["resumed"]["http_requests"]
    out.append(
        Row(
            "bench_clients",
            "requests on a resumed run",
            _num(resumed),
            target="0",
            met=_met(resumed == 0),
        )
    )
    return out


def read_generate(d: dict[str, Any]) -> list[Row]:
    rate = d["tokens_per_s"]
    return [
        Row(
            "bench_generate",
            f"tokens/s batched, {d['prompts']} x {d['max_new_tokens']} tokens, "
            f"{d['torch_threads']} thread(s)",
            _num(rate["batched"]),
            f"{_num(rate['one_at_a_time'])} (one at a time)",
            _ratio(d["ratio_batched_over_one_at_a_time"]),
        )
    ]


def read_judge(d: dict[str, Any]) -> list[Row]:
    lj = d["local_judge"]
    out = [
        Row(
            "bench_judge",
            f"local judge accuracy, both orders, {lj['pairs']} HHH pairs",
            _num(lj["accuracy_both_orders_averaged_p_a"]),
            "0.5 (chance)",
            _ratio(lj["accuracy_both_orders_averaged_p_a"] / 0.5),
        ),
        Row(
            "bench_judge",
            "local judge: P(first shown wins)",
            _num(lj["p_first_wins"]),
            "0.5 (no position bias)",
        ),
    ]
    for rubric, c in d.get("anthropic_cost", {}).items():
        if not isinstance(c, dict) or "usd_per_1000_pairs" not in c:
            continue
        usd = c["usd_per_1000_pairs"]
        best = usd.get("batch_prompt_caching", usd.get("batch"))
        out.append(
            Row(
                "bench_judge",
                f"$ per 1,000 pairs, batches + caching, {rubric}",
                f"${best:.2f}",
                f"${usd['online']:.2f} (online)",
                _ratio(best / usd["online"]),
            )
        )
    return out


def read_argilla(d: dict[str, Any]) -> list[Row]:
    return [
        Row(
            "bench_argilla",
            f"{key.removesuffix('_s').replace('_', ' ')}, {d['pairs']:,} pairs",
            _s(d["figures"][key]),
            f"{_s(d['probe'][key])} (probe)",
            _ratio(ratio),
        )
        for key, ratio in d["ratio_to_probe"].items()
    ]


def read_model_audit(d: dict[str, Any]) -> list[Row]:
    ours = d["mean"]["ours"]
    other = d["mean"]["cleanlab_default_recipe"]
    seeds = len(d["runs"])
    return [
        Row(
            "bench_model_audit",
            f"AUROC on {d['flip_rate']:.0%} flipped HH-RLHF labels (mean of {seeds} seed(s))",
            _num(ours["auroc"]),
            f"{_num(other['auroc'])} (cleanlab, LogisticRegression())",
            _ratio(ours["auroc"] / other["auroc"]),
        ),
        Row(
            "bench_model_audit",
            "F1 of the flags",
            _num(ours["f1"]),
            f"{_num(other['f1'])} (cleanlab, LogisticRegression())",
            _ratio(ours["f1"] / other["f1"] if other["f1"] else None),
        ),
    ]


def read_mislabel(d: dict[str, Any]) -> list[Row]:
    rows = []
    seeds = ", ".join(str(s) for s in d["seeds"])
    for kind, h in d["headline"].items():
        ratio = h["f1"] / h["cleanlab_f1"] if h["cleanlab_f1"] else None
        rows.append(
            Row(
                "bench_mislabel",
                f"{kind}: F1 of the flags, flips at 10/20/30% (seed {seeds})",
                _num(h["f1"]),
                f"{_num(h['cleanlab_f1'])} (cleanlab, same probabilities)",
                _ratio(ratio),
                ">= 1.5x on 3 of 4 kinds",
                _met(ratio is not None and ratio >= 1.5),
            )
        )
        strong = h.get("cleanlab_pair_folds_f1")
        if strong:
            rows.append(
                Row(
                    "bench_mislabel",
                    f"{kind}: F1 against cleanlab on the pair-fold classifier (stronger)",
                    _num(h["f1"]),
                    f"{_num(strong)} (cleanlab, folds by pair)",
                    _ratio(h["f1"] / strong),
                )
            )
        clean = d["kinds"][kind]["clean_base"]
        rows.append(
            Row(
                "bench_mislabel",
                f"{kind}: largest |estimated - injected| noise rate"
                + ("" if clean else " (naturally noisy: base noise included)"),
                _num(h["max_rate_error"]),
                "-",
                "-",
                "<= 0.05" if clean else "-",
                _met(h["max_rate_error"] <= 0.05) if clean else "-",
            )
        )
    return rows


def _gpu_rows(method: str, gpu: dict[str, Any]) -> list[Row]:
    """bench_train's GPU figures of one method: tokens/s without and with Liger kernels."""
    out = []
    plain = gpu.get("no_liger")
    for name in ("no_liger", "liger"):
        g = gpu.get(name)
        if isinstance(g, dict) and "tokens_per_second" in g:
            base = plain if name == "liger" and isinstance(plain, dict) else None
            out.append(
                Row(
                    "bench_train",
                    f"{method} tokens/s on {g.get('gpu', 'GPU')}, "
                    f"{'with' if name == 'liger' else 'without'} Liger "
                    f"(peak {_mib(g.get('peak_gpu_bytes'))})",
                    _num(g["tokens_per_second"]),
                    f"{_num(base['tokens_per_second'])} (without Liger)"
                    if base and "tokens_per_second" in base
                    else "-",
                    _ratio(gpu.get("liger_speedup")) if base else "-",
                )
            )
        elif isinstance(g, dict) and "error" in g:
            out.append(Row("bench_train", f"{method} on GPU, {name}", f"error: {g['error'][:80]}"))
    return out


def read_train(d: dict[str, Any]) -> list[Row]:
    out = []
    mem = d.get("memory")
    if mem:
        out.append(
            Row(
                "bench_train",
                "DPO peak RSS, LoRA (vs full fine-tuning)",
                _mib(mem["lora"]["peak_rss"]),
                f"{_mib(mem['full']['peak_rss'])} (full)",
                f"{mem['peak_ratio_full_over_lora']:.3g}x (full / LoRA)",
            )
        )
    ov = d.get("overhead")
    if ov:
        out.append(
            Row(
                "bench_train",
                "DPO step time, prefdata (vs plain TRL)",
                _s(ov["prefdata_step"]),
                f"{_s(ov['plain_step'])} (plain TRL)",
                f"{ov['ratio_plain_over_prefdata']:.3g}x (plain / prefdata)",
                f">= {ov['target']:g}x",
                _met(ov["meets_target"]),
            )
        )
    gpu = d.get("gpu")
    if isinstance(gpu, dict):
        if "skipped" in gpu:
            out.append(Row("bench_train", "GPU part", f"skipped: {gpu['skipped']}"))
        out += _gpu_rows("DPO", gpu)
        if isinstance(gpu.get("grpo"), dict):
            out += _gpu_rows("GRPO", gpu["grpo"])
    if d.get("config", {}).get("model", "").find("tiny") >= 0:
        for row in out:
            row.figure += " [tiny model]"
    return out


def read_noisy(d: dict[str, Any]) -> list[Row]:
    runs = d["runs"]
    n = d["data"]["heldout"]
    # --quick trains a tiny random model: it checks the pipeline, its accuracies mean nothing
    quick = d["config"].get("size") == "quick"
    tag = ", tiny random model" if quick else f", {Path(d['config']['model']).name}"
    out = []
    head = d.get("headline")
    paired = d.get("paired_vs_noisy", {})
    if head:
        p = paired.get("audit_drop", {})
        se = p.get("accuracy_difference_se")
        out.append(
            Row(
                "noisy_labels",
                f"held-out DPO accuracy after audit + drop, {n} pairs{tag}"
                + (f" (paired diff {p['accuracy_difference']:+.3f} +- {se:.3f})" if se else ""),
                _num(head["figure"]),
                f"{_num(head['baseline'])} (25% flipped, no audit)",
                _ratio(head["ratio"]),
                "> 1x",
                "n/a (random model)" if quick else _met(head["met"]),
            )
        )
    if "clean" in runs and "noisy" in runs:
        out.append(
            Row(
                "noisy_labels",
                "held-out DPO accuracy, clean labels (the ceiling)",
                _num(runs["clean"]["accuracy"]),
                f"{_num(runs['noisy']['accuracy'])} (noisy)",
                _ratio(
                    runs["clean"]["accuracy"] / runs["noisy"]["accuracy"]
                    if runs["noisy"]["accuracy"]
                    else None
                ),
            )
        )
    mf = d["audit"]["model_flags"]
    rate = d["config"]["flip_rate"]
    out.append(
        Row(
            "noisy_labels",
            f"audit precision on the flips (recall {mf['recall']:.3f}, "
            f"{mf['flagged']} of {d['audit']['pairs']} flagged)",
            _num(mf["precision"]),
            f"{rate:g} (random flags)",
            _ratio(mf["precision"] / rate if rate else None),
        )
    )
    return out


@dataclass
class Bench:
    """How run_all runs one benchmark and reads its output."""

    name: str
    quick: list[str]
    full: list[str]
    output: str  # glob in bench/out for the JSON it writes
    read: Callable[[dict[str, Any]], list[Row]]
    needs: Callable[[], str | None] = lambda: None  # reason to skip, or None
    gpu_extra: list[list[str]] = field(default_factory=list)  # extra runs when CUDA is seen


def _argilla_missing() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server not found"
    try:
        sys.path.insert(0, str(REPO))
        from prefdata.annotate import service as annotate_service

        if not annotate_service.is_installed():
            return "annotation server not set up (bash annotate/setup.sh)"
    except Exception as err:  # an optional part missing is a skip, not a crash
        return f"annotation service unavailable: {err}"
    return None


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def benchmarks(cuda: bool) -> list[Bench]:
    """The known benchmarks, in run order (cheap first, model training last)."""
    return [
        Bench("bench_agreement", ["--quick"], ["--full"], "bench_agreement-*.json", read_agreement),
        Bench("bench_io", ["--quick"], [], "bench_io-*.json", read_io),
        Bench("bench_audit", ["--n", "20000"], [], "bench_audit-*.json", read_audit),
        Bench("bench_clients", ["--quick"], [], "bench_clients-*.json", read_clients),
        Bench(
            "bench_model_audit",
            ["--seeds", "0", "--quiet"],
            ["--quiet"],
            "model_audit.json",
            read_model_audit,
        ),
        Bench(
            "bench_mislabel",
            ["--quick", "--seed", "0"],
            ["--full"] if cuda else [],
            "bench_mislabel-*.json",
            read_mislabel,
        ),
        Bench(
            "bench_argilla",
            ["--pairs", "100", "--repeat", "1"],
            [],
            "bench_argilla-*.json",
            read_argilla,
            needs=_argilla_missing,
        ),
        Bench(
            "bench_generate",
            ["--prompts", "4", "--tokens", "16", "--repeat", "1", "--threads", "1"],
            ["--threads", "1"] if not cuda else ["--device", "cuda"],
            "bench_generate-*.json",
            read_generate,
        ),
        Bench(
            "bench_judge",
            ["--limit", "10", "--threads", "1"],
            ["--threads", "1"] if not cuda else ["--device", "cuda"],
            "bench_judge-*.json",
            read_judge,
        ),
        Bench(
            "bench_train",
            ["--quick"],
            [],
            "bench_train-*.json",
            read_train,
            gpu_extra=[["--part", "gpu"]],
        ),
        Bench(
            "noisy_labels",
            ["--quick"],
            ["--full"] if cuda else [],
            "noisy_labels*.json",
            read_noisy,
        ),
    ]


# --- running ----------------------------------------------------------------------------------


def _offers_quick(script: Path) -> bool:
    proc = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return "--quick" in proc.stdout


def _snapshot() -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in OUT_DIR.glob("*.json")} if OUT_DIR.is_dir() else {}


def run_one(script: Path, args: list[str], log: Path, timeout: float) -> tuple[int | str, float]:
    """Run a benchmark in a fresh process, output to `log`. (exit code or 'timeout', seconds)"""
    start = time.perf_counter()
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {Path(sys.executable).name} {script.relative_to(REPO)} {' '.join(args)}\n")
        fh.flush()
        try:
            proc = subprocess.run(
                [sys.executable, str(script), *args],
                cwd=REPO,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
            code: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    return code, time.perf_counter() - start


def _new_outputs(before: dict[Path, float], pattern: str) -> list[Path]:
    found = [
        p
        for p in OUT_DIR.glob(pattern)
        if p.suffix == ".json" and before.get(p) != p.stat().st_mtime
    ]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def _tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["gpu"] = None
    info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    return info


def markdown(rows: list[Row], header: dict[str, Any]) -> str:
    m = header["machine"]
    lines = [
        f"# Benchmarks, {header['mode']} run, {header['date']}",
        "",
        f"Machine: {m.get('cpus')} CPUs ({m.get('cpu', 'unknown CPU')}), "
        f"{m.get('memory_gib', '?')} GiB memory, GPU: {m.get('gpu') or 'none'}; "
        f"{m['platform']}, Python {m['python']}, torch {m.get('torch', '-')}, "
        f"OMP_NUM_THREADS={m.get('omp_num_threads') or 'unset'}. "
        f"Load average (1 min) {header['load_before']:.1f} before, {header['load_after']:.1f} "
        f"after; {header['minutes']:.0f} min in all. Command: `{header['command']}`.",
        "",
        "| benchmark | figure | value | baseline | ratio | target | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r.benchmark, r.figure, r.value, r.baseline, r.ratio, r.target, r.met]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    if header.get("notes"):
        lines += [f"- {note}" for note in header["notes"]] + [""]
    return "\n".join(lines)


def _print_table(rows: list[Row]) -> None:
    cols = ["benchmark", "figure", "value", "baseline", "ratio", "target", "met"]
    cells = [[getattr(r, c).replace("**", "") for c in cols] for r in rows]
    width = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    width[1] = min(width[1], 70)
    print("  ".join(c.ljust(w) for c, w in zip(cols, width, strict=True)))
    for row in cells:
        print("  ".join(c[:w].ljust(w) for c, w in zip(row, width, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the benchmarks' real sizes")
    parser.add_argument("--only", nargs="+", default=None, help="these benchmarks only")
    parser.add_argument("--skip", nargs="+", default=[], help="leave these benchmarks out")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per benchmark run (default 3600; 6 h with --full)",
    )
    args = parser.parse_args(argv)
    mode = "full" if args.full else "quick"
    timeout = args.timeout or (6 * 3600 if args.full else 3600)
    cuda = _has_cuda()
    known = {b.name: b for b in benchmarks(cuda)}
    scripts = {p.stem: p for p in sorted(BENCH.glob("bench_*.py"))}
    scripts["noisy_labels"] = BENCH / "noisy_labels.py"
    order = [n for n in known if n in scripts] + sorted(n for n in scripts if n not in known)
    if args.only:
        unknown = sorted(set(args.only) - set(scripts))
        if unknown:
            parser.error(f"no such benchmark: {', '.join(unknown)}; have {', '.join(order)}")
        order = [n for n in order if n in args.only]
    order = [n for n in order if n not in args.skip]

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    logs = OUT_DIR / f"run_all-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    rows: list[Row] = []
    notes: list[str] = []
    timings: list[str] = []
    failed = False
    for name in order:
        script = scripts[name]
        bench = known.get(name)
        log = logs / f"{name}.log"
        if bench is not None and (reason := bench.needs()):
            print(f"[{name}] skipped: {reason}", flush=True)
            rows.append(Row(name, f"skipped: {reason}"))
            continue
        if bench is None:
            flags = ["--quick"] if not args.full and _offers_quick(script) else []
        else:
            flags = bench.full if args.full else bench.quick
        invocations = [flags]
        if bench is not None and args.full:
            if cuda:
                invocations += bench.gpu_extra
            elif bench.gpu_extra:
                notes.append(f"{name}: GPU part skipped (no CUDA device)")
        for extra in invocations:
            before = _snapshot()
            print(
                f"[{name}] {' '.join(extra) or '(default flags)'} ... (load "
                f"{os.getloadavg()[0]:.1f})",
                flush=True,
            )
            code, seconds = run_one(script, extra, log, timeout)
            outputs = _new_outputs(before, bench.output if bench else f"{name}*.json")
            print(
                f"[{name}] exit {code} after {seconds:.0f} s; {len(outputs)} JSON file(s)",
                flush=True,
            )
            if code != 0:
                failed = True
                rows.append(Row(name, f"FAILED (exit {code}, see {log.relative_to(REPO)})"))
                print(_tail(log), flush=True)
                continue
            if not outputs:
                rows.append(Row(name, "ran, but wrote no JSON to bench/out"))
                continue
            if bench is None:
                rows.append(Row(name, f"ran; figures not read by run_all ({outputs[-1].name})"))
                continue
            try:
                data = json.loads(outputs[-1].read_text(encoding="utf-8"))
                new = bench.read(data)
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
                failed = True
                new = [Row(name, f"could not read {outputs[-1].name}: {type(err).__name__} {err}")]
            rows.extend(new)
            timings.append(f"{name} {' '.join(extra)}".strip() + f" {seconds:.0f} s")
    header = {
        "mode": mode,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "minutes": (time.perf_counter() - started) / 60,
        "command": " ".join(["bench/run_all.py", *(argv if argv is not None else sys.argv[1:])]),
        "notes": [*notes, "wall time per run: " + ", ".join(timings)] if timings else notes,
    }
    print()
    _print_table(rows)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from prefdata.io.tables import atomic_path

    md = OUT_DIR / f"run_all-{stamp}.md"
    with atomic_path(md) as tmp:
        tmp.write_text(markdown(rows, header), encoding="utf-8")
    print(f"\nwritten: {md.relative_to(REPO)} (logs in {logs.relative_to(REPO)}/)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

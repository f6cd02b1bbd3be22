"""Benchmark: import + validate + export of N synthetic preference pairs, against a bare
polars read + write of the same file, in the same run.

    .venv/bin/python bench/bench_io.py              # 1,000,000 pairs
    .venv/bin/python bench/bench_io.py --quick      # 50,000 pairs (smoke run)
    .venv/bin/python bench/bench_io.py --rows 200000 --batch-rows 50000

Each phase runs in its own fresh process (multiprocessing "spawn"), so its peak resident
memory (getrusage ru_maxrss of that process, interpreter and libraries included) is its own:

- generate: N rows of TRL standard preference data (prompt ~50-80 words, chosen and
  rejected ~100-250 words each, every prompt unique) written as zstd Parquet with polars'
  defaults. Not timed against anything.
- baseline: pl.read_parquet(file) then DataFrame.write_parquet(copy): the floor any tool
  that reads and writes the data pays.
- prefdata: prefdata.io.stream_trl.stream_import_trl (ids, contract, rejected rows) ->
  stream_validate(pairs) -> stream_export(trl, Parquet), the path the CLI uses for files
  that do not fit in memory.

Targets (from the issue): prefdata wall time <= 3x the baseline; prefdata peak memory under
4x the Parquet file's size. Figures are printed and written as JSON to bench/out/.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TIME_TARGET = 3.0  # prefdata time / baseline time
MEMORY_TARGET = 4.0  # prefdata peak RSS / Parquet file size
OUT_DIR = Path(__file__).resolve().parent / "out"


def _peak_rss() -> int:
    """Peak resident memory of this process, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used so far. Less disturbed
    than wall time when other jobs share the cores, but blind to work done in parallel."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------------
# Synthetic data


def _texts(rng: Any, pool: Any, rows: int, low: int, high: int) -> Any:
    """`rows` texts of low..high sentences drawn at random from `pool`, joined by spaces."""
    import numpy as np
    import polars as pl
    import pyarrow as pa

    counts = rng.integers(low, high + 1, rows)
    picks = rng.integers(0, len(pool), int(counts.sum()))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), pool.take(pa.array(picks)))
    series = pl.from_arrow(lists)
    assert isinstance(series, pl.Series)
    return series.list.join(" ")


def generate(path: str, rows: int, seed: int = 0) -> dict[str, Any]:
    """Write `rows` synthetic TRL standard pairs to `path` (Parquet, polars defaults).

    Words are made of syllables with a Zipf-like frequency, sentences are 6-18 words from a
    pool of 300,000, so the text compresses about as well as real English (~2.7x with zstd;
    HH-RLHF gives ~3x). Prompts: 4-6 sentences (~60 words) with a unique task number;
    chosen / rejected: 8-20 sentences (~170 words) each.
    """
    import numpy as np
    import polars as pl
    import pyarrow as pa

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    consonants, vowels = list("bcdfghjklmnprstvwz"), list("aeiouy")
    syllables = [c + v for c in consonants for v in vowels] + [
        c + v + e for c in consonants[:8] for v in vowels for e in "nrst"
    ]
    vocabulary = 20_000
    words = pa.array(["".join(rng.choice(syllables, k)) for k in rng.integers(1, 4, vocabulary)])
    weights = 1.0 / (np.arange(vocabulary) + 2.7)
    sentence_lengths = rng.integers(6, 19, 300_000)
    word_picks = rng.choice(vocabulary, int(sentence_lengths.sum()), p=weights / weights.sum())
    offsets = np.concatenate([[0], np.cumsum(sentence_lengths)]).astype(np.int64)
    word_lists = pl.from_arrow(
        pa.LargeListArray.from_arrays(pa.array(offsets), words.take(pa.array(word_picks)))
    )
    assert isinstance(word_lists, pl.Series)
    sentences = word_lists.list.join(" ")
    sentences = sentences.str.slice(0, 1).str.to_uppercase() + sentences.str.slice(1) + "."
    pool = sentences.to_arrow()

    chunks = []
    for begin in range(0, rows, 100_000):
        n = min(100_000, rows - begin)
        chunk = pl.DataFrame(
            {
                "prompt": _texts(rng, pool, n, 4, 6),
                "chosen": _texts(rng, pool, n, 8, 20),
                "rejected": _texts(rng, pool, n, 8, 20),
            }
        )
        number = pl.int_range(begin + 1, begin + n + 1, eager=True)
        prompt = pl.format("Task {}: {}", number, "prompt").alias("prompt")
        chunks.append(chunk.with_columns(prompt))
    table = pl.concat(chunks)
    table.write_parquet(path)
    return {**_summary(table), "seconds": time.perf_counter() - start}


def _summary(table: Any) -> dict[str, Any]:
    return {
        "rows": table.height,
        "text_bytes": int(sum(table[c].str.len_bytes().sum() for c in table.columns)),
        "mean_words": {
            c: float(table[c].str.count_matches(" ").mean() or 0) + 1 for c in table.columns
        },
    }


def describe(path: str) -> dict[str, Any]:
    """The summary `generate` returns, for a file generated earlier."""
    import polars as pl

    return {**_summary(pl.read_parquet(path)), "seconds": 0.0}


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(path).num_rows)


# ---------------------------------------------------------------------------------------------
# Phases (each runs in a fresh process)


def phase_baseline(src: str, work: str) -> dict[str, Any]:
    import polars as pl

    cpu = _cpu_seconds()
    start = time.perf_counter()
    table = pl.read_parquet(src)
    read = time.perf_counter() - start
    table.write_parquet(Path(work) / "baseline.parquet")
    total = time.perf_counter() - start
    return {
        "seconds": total,
        "read_seconds": read,
        "write_seconds": total - read,
        "cpu_seconds": _cpu_seconds() - cpu,
        "rows": table.height,
        "peak_rss": _peak_rss(),
    }


def phase_prefdata(src: str, work: str, batch_rows: int) -> dict[str, Any]:
    from prefdata.io.stream import stream_export, stream_validate
    from prefdata.io.stream_trl import stream_import_trl

    pairs = Path(work) / "pairs.parquet"
    exported = Path(work) / "trl.parquet"
    steps: dict[str, float] = {}
    cpu = _cpu_seconds()
    start = time.perf_counter()
    report = stream_import_trl(src, pairs, batch_rows=batch_rows)
    steps["import"] = time.perf_counter() - start
    mark = time.perf_counter()
    validated = stream_validate(pairs, "pairs", batch_rows=batch_rows)
    steps["validate"] = time.perf_counter() - mark
    mark = time.perf_counter()
    export = stream_export(pairs, exported, "trl", batch_rows=batch_rows)
    steps["export"] = time.perf_counter() - mark
    total = time.perf_counter() - start
    return {
        "seconds": total,
        "step_seconds": steps,
        "cpu_seconds": _cpu_seconds() - cpu,
        "rows_in": report["source_rows"],
        "rows_pairs": report["rows_pairs"],
        "rows_rejected": report["rows_rejected"],
        "rows_validated": validated,
        "rows_exported": export["rows"],
        "pairs_file_bytes": pairs.stat().st_size,
        "export_file_bytes": exported.stat().st_size,
        "peak_rss": _peak_rss(),
    }


def _in_child(func: Any, *args: Any) -> dict[str, Any]:
    context = mp.get_context("spawn")
    with context.Pool(1, maxtasksperchild=1) as pool:
        result: dict[str, Any] = pool.apply(func, args)
    return result


# ---------------------------------------------------------------------------------------------


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="50,000 rows (smoke run)")
    parser.add_argument(
        "--batch-rows",
        type=int,
        default=None,
        help="rows per batch for the streaming path (default: the library's)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs of each phase, alternating; the fastest counts (default 2)",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="folder for the data (default: a temporary folder, removed after)",
    )
    parser.add_argument("--out", default=str(OUT_DIR), help="folder for the JSON results")
    args = parser.parse_args(argv)
    rows = 50_000 if args.quick else args.rows

    from prefdata.io.stream import DEFAULT_BATCH_ROWS

    batch_rows = args.batch_rows or DEFAULT_BATCH_ROWS
    work = Path(args.workdir or tempfile.mkdtemp(prefix="prefdata-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "trl_standard.parquet"
    try:
        if args.workdir and src.exists() and _parquet_rows(src) == rows:
            # A kept work folder: the same seed would give the same file.
            print(f"reusing {src}", flush=True)
            generated = _in_child(describe, str(src))
        else:
            print(f"generating {rows:,} pairs in {work} ...", flush=True)
            generated = _in_child(generate, str(src), rows)
        size = src.stat().st_size
        print(
            f"  {generated['seconds']:.1f} s; Parquet {_mib(size)}, text "
            f"{_mib(generated['text_bytes'])}; mean words "
            + ", ".join(f"{k} {v:.0f}" for k, v in generated["mean_words"].items()),
            flush=True,
        )
        baselines: list[dict[str, Any]] = []
        runs: list[dict[str, Any]] = []
        for attempt in range(1, args.repeat + 1):
            # Alternating the two phases spreads any load from other processes over both.
            print(
                f"[{attempt}/{args.repeat}] baseline: polars read_parquet + write_parquet ...",
                flush=True,
            )
            baseline = _in_child(phase_baseline, str(src), str(work))
            baselines.append(baseline)
            print(
                f"  {baseline['seconds']:.2f} s (read {baseline['read_seconds']:.2f}, write "
                f"{baseline['write_seconds']:.2f}; CPU {baseline['cpu_seconds']:.2f}); "
                f"peak RSS {_mib(baseline['peak_rss'])}",
                flush=True,
            )
            print(
                f"[{attempt}/{args.repeat}] prefdata: stream import -> validate -> export trl "
                f"(batch_rows={batch_rows:,}) ...",
                flush=True,
            )
            run = _in_child(phase_prefdata, str(src), str(work), batch_rows)
            runs.append(run)
            steps = run["step_seconds"]
            print(
                f"  {run['seconds']:.2f} s ("
                + ", ".join(f"{k} {v:.2f}" for k, v in steps.items())
                + f"; CPU {run['cpu_seconds']:.2f}); "
                f"peak RSS {_mib(run['peak_rss'])}",
                flush=True,
            )
            if not run["rows_pairs"] == run["rows_validated"] == run["rows_exported"] == rows:
                print(f"  ERROR: rows differ: {run}", flush=True)
                return 1
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    # The fastest run of each is the least disturbed by other load; memory takes the worst.
    baseline = min(baselines, key=lambda r: r["seconds"])
    prefdata = min(runs, key=lambda r: r["seconds"])
    baseline_peak = max(r["peak_rss"] for r in baselines)
    prefdata_peak = max(r["peak_rss"] for r in runs)
    time_ratio = prefdata["seconds"] / baseline["seconds"]
    cpu_ratio = min(r["cpu_seconds"] for r in runs) / min(r["cpu_seconds"] for r in baselines)
    memory_ratio = prefdata_peak / size
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "rows": rows,
        "batch_rows": batch_rows,
        "parquet_bytes": size,
        "generated": generated,
        "repeat": args.repeat,
        "baseline_seconds": baseline["seconds"],
        "baseline_peak_rss": baseline_peak,
        "prefdata_seconds": prefdata["seconds"],
        "prefdata_step_seconds": prefdata["step_seconds"],
        "prefdata_peak_rss": prefdata_peak,
        "baseline_runs": baselines,
        "prefdata_runs": runs,
        "time_ratio": time_ratio,
        "memory_ratio": memory_ratio,
        "cpu_ratio": cpu_ratio,
        "load_average_after": os.getloadavg(),
        "baseline_memory_ratio": baseline_peak / size,
        "targets": {
            "time_ratio_max": TIME_TARGET,
            "memory_ratio_max": MEMORY_TARGET,
            "time_met": time_ratio <= TIME_TARGET,
            "memory_met": memory_ratio < MEMORY_TARGET,
        },
    }
    print()
    print(f"rows                    {rows:,}")
    print(f"Parquet size            {_mib(size)}")
    print(
        f"baseline                {baseline['seconds']:.2f} s (best of {args.repeat}), "
        f"peak {_mib(baseline_peak)}"
    )
    print(
        f"prefdata                {prefdata['seconds']:.2f} s (best of {args.repeat}), "
        f"peak {_mib(prefdata_peak)}"
    )
    print(
        f"time ratio              {time_ratio:.2f}x  (target <= {TIME_TARGET:g}x: "
        f"{'met' if result['targets']['time_met'] else 'NOT met'})"
    )
    print(f"CPU time ratio          {cpu_ratio:.2f}x  (for reference: user + system time)")
    print(
        f"load average (1 min)    {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
        "(other jobs on the machine disturb the wall times)"
    )
    print(
        f"peak memory / Parquet   {memory_ratio:.2f}x  (target < {MEMORY_TARGET:g}x: "
        f"{'met' if result['targets']['memory_met'] else 'NOT met'})"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = out / f"bench_io-{rows}-{stamp}.json"
    target.write_text(json.dumps(result, indent=1))
    print(f"results: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

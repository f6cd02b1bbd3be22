"""Rule checks + dedup + train/test overlap on N synthetic pairs: one process vs the Ray engine
with 2 local workers (`--engine ray`), in one run. Issue 18's benchmark.

The pairs are bench_audit.py's synthetic pairs (same generator, same seed, same injected
defects; built 250,000 at a time, copies reaching into the previous chunk), written once to
Parquet by a child process (so the parent stays small: Linux
children inherit the parent's ru_maxrss, so RSS is sampled instead). Each engine runs in a
child process of its own that reads the pairs and runs the three phases:

- local: the three library calls on the table read into one process; that process's peak
  RSS (sampled every 0.2 s with psutil), and above the table it read.
- ray: the same calls with `engine=` a RayEngine on `ray.init(num_cpus=2)` (2 workers), on a
  scan of the Parquet file (the workers cut their shards from the file: the driver never
  holds the rows); the driver's peak RSS, and every Ray worker's peak RSS (processes named
  ray::*, sampled the same way): the figure that bounds what one machine of a cluster needs.

Both children check their issues are the same rows (the parity the tests assert); the time
ratio is ray / local. On 2 cores there is nothing to gain in time, only memory per worker;
the per-shard figures printed (rows per shard, seconds per shard) are what scale out.

Usage: python bench/bench_scale.py [--n 2000000] [--workdir DIR]
Prints the figures and writes them as JSON to bench/out/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_audit import generate, run_child  # noqa: E402


class WorkerMemory:
    """Peak RSS of this process (key 0) and of each Ray worker process it started (name
    ray::..., by pid), sampled in a thread."""

    def __init__(self, every: float = 0.2) -> None:
        self.peak: dict[int, float] = {}
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            self.peak[0] = max(self.peak.get(0, 0.0), me.memory_info().rss / 2**20)
            # the local cluster's processes descend from this one (another job's Ray does not)
            for proc in me.children(recursive=True):
                try:
                    if not proc.name().startswith("ray::"):
                        continue
                    mib = proc.memory_info().rss / 2**20
                except psutil.Error:  # ended between the listing and the reading
                    continue
                self.peak[proc.pid] = max(self.peak.get(proc.pid, 0.0), mib)
            self._stop.wait(self._every)

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_engine(engine_name: str, work: Path) -> dict[str, Any]:
    import psutil

    from prefdata.quality.dedup import dedup, split_overlap
    from prefdata.quality.rules import rule_checks

    memory = WorkerMemory().__enter__()
    source = work / "pairs.parquet"
    # One process reads the table; the Ray driver passes a scan, which the workers shard
    # from the file, so the driver never holds the rows.
    pairs: pl.DataFrame | pl.LazyFrame = (
        pl.scan_parquet(source) if engine_name == "ray" else pl.read_parquet(source)
    )
    after_read = psutil.Process().memory_info().rss / 2**20
    engine: Any = None
    start_engine = 0.0
    if engine_name == "ray":
        import ray

        from prefdata.engine.ray import RayEngine

        t0 = time.perf_counter()
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=256 * 2**20,
        )
        engine = RayEngine(scratch=work / f"shards-{engine_name}")
        start_engine = time.perf_counter() - t0
    walls: dict[str, float] = {}
    issues: list[pl.DataFrame] = []
    t0 = time.perf_counter()
    found, _ = rule_checks(pairs, engine=engine)
    walls["rules"] = time.perf_counter() - t0
    issues.append(found)
    t0 = time.perf_counter()
    found, report = dedup(pairs, engine=engine)
    walls["dedup"] = time.perf_counter() - t0
    issues.append(found)
    train = pairs.filter(pl.col("split") == "train")
    test = pairs.filter(pl.col("split") == "test")
    t0 = time.perf_counter()
    found, overlap = split_overlap(train, test, engine=engine)
    walls["overlap"] = time.perf_counter() - t0
    issues.append(found)
    pl.concat(issues).write_parquet(work / f"issues-{engine_name}.parquet")
    out: dict[str, Any] = {
        "wall_s": walls,
        "total_s": sum(walls.values()),
        "rss_after_read_mib": round(after_read, 1),
        "dedup": {k: report[k] for k in ("duplicate_pair", "near_duplicate_pair")},
        "overlap": {k: overlap[k] for k in ("overlap_exact", "overlap_near")},
    }
    memory.__exit__(None, None, None)
    out["peak_rss_mib"] = round(memory.peak[0], 1)
    out["peak_above_table_mib"] = round(memory.peak[0] - after_read, 1)
    if engine is not None:
        out["engine_start_s"] = round(start_engine, 1)
        out["workers"] = engine.workers
        out["worker_peak_rss_mib"] = sorted(round(v, 1) for k, v in memory.peak.items() if k)
        engine.close()
        import ray

        ray.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "generate":
        # in chunks: building 2M pairs at once took 12.6 GB in the generator alone
        made = generate(args.n, args.workdir / "pairs.parquet", chunk_rows=250_000)
        print("RESULT " + json.dumps(made))
        return
    if args.child:
        print("RESULT " + json.dumps(run_engine(args.child, args.workdir)))
        return

    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.workdir) as tmp:
        work = Path(tmp)
        results: dict[str, Any] = {}
        for name in ("generate", "local", "ray"):
            results[name] = run_child(__file__, name, work, args.n)
            print(name, json.dumps(results[name]), flush=True)
        same = pl.read_parquet(work / "issues-local.parquet").equals(
            pl.read_parquet(work / "issues-ray.parquet")
        )
    local, ray_ = results["local"], results["ray"]
    worker_peak = max(ray_["worker_peak_rss_mib"] or [0.0])
    results["same_issues"] = same
    results["time_ratio_ray_over_local"] = round(ray_["total_s"] / local["total_s"], 2)
    results["worker_peak_over_local_peak"] = round(worker_peak / local["peak_rss_mib"], 2)
    results["machine"] = "2 cores shared with other jobs, no GPU"
    results["date"] = dt.date.today().isoformat()
    print(
        json.dumps(
            {
                k: results[k]
                for k in ("same_issues", "time_ratio_ray_over_local", "worker_peak_over_local_peak")
            }
        )
    )
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_scale-{args.n}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

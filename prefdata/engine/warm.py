"""Model-call stages on a distributed engine: the calls on many workers, the assembly in one
pass of the same library function.

Every model call of generate, judge (with its pointwise scoring) and critique goes through the
call cache, keyed by the whole request. So on a distributed engine such a stage runs in two
steps, both the stage's own function:

1. The stage's main table is cut into shards (rows sharing a `prompt_id` in one shard, so a
   judge selects the same pairs from a prompt's candidates as from the whole table) and each
   worker runs the stage on its shard with the run's call cache: the answers land in the
   cache as they come (on a pool of model actors, one GPU each where the cluster has GPUs).
2. One worker of the same kind then runs the stage on the whole table, as one process would:
   every call is answered from the cache, so the outputs and the report are exactly the
   single-process ones. It runs on the cluster rather than in the driver because a local
   model's device and precision are part of its cache key: a CPU-only head node would not
   find the answers a GPU worker stored.

A call that failed on a worker is not cached and is made again by step 2. All workers share
the run's cache file (SQLite: one host, or a folder shared so that SQLite's locks work; see
docs/scale.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from prefdata.engine import Engine, shards_for
from prefdata.engine.shards import read_shard, remove_shards, write_shards
from prefdata.stage import StageResult, spec_of
from prefdata.stage_call import load_table

__all__ = ["WARMED", "Warmed", "run_sharded"]


@dataclass(frozen=True)
class Warmed:
    """How a stage is sharded: `table` is the parameter cut into shards; `model_options` the
    options naming its models (backend specs), to tell whether workers load a model."""

    table: str
    model_options: tuple[str, ...]


# The stages whose work is model calls through the call cache (by stage name).
WARMED: dict[str, Warmed] = {
    "generate": Warmed("prompts", ("backend",)),
    "judge": Warmed("pairs", ("judges",)),
    "critique": Warmed("candidates", ("model", "judge")),
}

# Backends whose model runs inside the worker (a GPU helps); the others call a server.
_IN_PROCESS = ("local", "vllm")
# Rows below which a shard is not worth a worker of its own.
_MIN_SHARD_ROWS = 8


@dataclass(frozen=True)
class _Job:
    module: str
    function: str
    table: str
    data: Path
    values: dict[str, Any]
    cache: Path
    out: Path | None  # step 2: where the whole result is written


def _run_job(job: _Job) -> dict[str, Any]:
    """On a worker: the stage on `job.data` with the run's call cache. Step 1 keeps only the
    cached answers; step 2 writes the result into `job.out` for the driver."""
    from prefdata.io.results import write_result_dir
    from prefdata.llm.cache import CallCache

    spec = spec_of(getattr(importlib.import_module(job.module), job.function))
    values = dict(job.values)
    values[job.table] = read_shard(job.data)
    rows = values[job.table].height
    cache = CallCache(job.cache)
    try:
        for p in spec.params:
            if p.role == "resource" and p.resource is not None:
                values[p.name] = {"cache": cache, "progress": False}.get(p.resource.name)
        result = spec.call(values)
    finally:
        cache.close()
    calls = {"new": cache.stats.misses, "cached": cache.stats.hits}
    if job.out is None:
        return {"rows": rows, "calls": calls}
    written = write_result_dir(result, job.out)
    return {
        "rows": rows,
        "calls": calls,
        "tables": {k: v for k, v in written.items() if k in result.tables},
        "rejected": written.get("rejected"),
        "report": result.report,
        "documents": result.documents,
        "files": result.files,
        "warnings": result.warnings,
    }


def _in_process_models(options: Mapping[str, Any], names: tuple[str, ...]) -> bool:
    """Whether a model runs inside the worker (so a GPU and a long-lived actor help):
    generate's `backend` names the backend; judges and critique models are BACKEND:MODEL
    specs, a bare name being a local model."""
    for name in names:
        value = options.get(name)
        for spec in value if isinstance(value, list | tuple) else [value]:
            if not isinstance(spec, str):
                continue
            if name == "backend":
                backend = spec
            else:
                backend = spec.partition(":")[0] if ":" in spec else "local"
            if backend in _IN_PROCESS:
                return True
    return False


def run_sharded(
    engine: Engine,
    stage: str,
    function: Any,
    values: Mapping[str, Any],
    *,
    cache: Path,
    scratch: Path,
) -> tuple[StageResult, dict[str, Any]] | None:
    """Run `stage` (its library `function`, called with `values`: options, and table inputs
    as paths or frames) in the two steps of the module doc. Returns (the result, what ran
    where), or None when the engine is local, the stage is not in WARMED, or its table is
    too small to share out: the caller then runs the stage itself."""
    how = WARMED.get(stage)
    if how is None or not engine.distributed or values.get(how.table) is None:
        return None
    spec = spec_of(function)
    # Read (and checked against its contract) here, as the stage would: a bad table fails
    # before any work is shared out, with the same message as in one process.
    frame = load_table(values[how.table], next(p for p in spec.params if p.name == how.table))
    count = shards_for(engine, frame.height, min_rows=_MIN_SHARD_ROWS)
    if count < 2:
        return None
    resources = {p.name for p in spec.params if p.role == "resource"}
    shared = {k: v for k, v in values.items() if k != how.table and k not in resources}
    # the options as the stage sees them: the signature's defaults for those not given
    given = {p.name: p.default for p in spec.options if not p.required} | dict(values)
    model = _in_process_models(given, how.model_options)
    gpus = 1.0 if model and engine.gpus > 0 else 0.0
    folder = scratch / ".shards"
    try:
        key = "prompt_id" if "prompt_id" in frame.columns else None
        shards = write_shards(frame, folder, count, key=key)
        [whole] = write_shards(frame, folder / "whole", 1)
        name = (function.__module__, function.__name__)
        jobs = [_Job(*name, how.table, s.path, shared, cache, None) for s in shards]
        warmed = engine.map(_run_job, jobs, model=model, gpus=gpus, what=f"{stage} shards")
        final = _Job(*name, how.table, whole.path, shared, cache, folder / "result")
        [done] = engine.map(_run_job, [final], model=model, gpus=gpus, what=stage)
        result = StageResult(
            tables={k: pl.read_parquet(p) for k, p in done["tables"].items()},
            rejected=pl.read_parquet(done["rejected"]) if done["rejected"] else None,
            report=done["report"],
            documents=done["documents"],
            files=done["files"],
            warnings=done["warnings"],
        )
    finally:
        remove_shards(folder)
    # The calls as one process would count them: new wherever they were made, and the
    # requests of the whole table less those as cached.
    new = sum(w["calls"]["new"] for w in warmed) + done["calls"]["new"]
    asked = done["calls"]["new"] + done["calls"]["cached"]
    where = {
        "engine": engine.name,
        "shards": len(jobs),
        "shard_rows": [w["rows"] for w in warmed],
        "gpus_per_worker": gpus,
        "calls_new": new,
        "calls_cached": max(0, asked - new),
    }
    return result, where

"""Where the row-wise work of a stage runs: in this process (`local`, the default) or on a Ray
cluster (`ray`: Ray Data `map_batches` over Parquet shards, GPU actors for model stages).

An engine only maps a function over work items; what the items are (Parquet shards of a
table, partitions of a shuffle) and what the function does is the stages' own code, so the
same library functions run in both engines:

    with open_engine("ray", address="auto") as engine:
        results = engine.map(embed_shard, shards, model=True)

- `map(fn, items)` returns `fn(item)` for every item, in the items' order. `fn` must be a
  module-level function (it is pickled to the workers) and so must the items; results should
  be small (paths, counts): the data itself goes through Parquet files in a folder every
  worker can reach (the run folder).
- `model=True` marks work that loads a model: Ray runs it on a pool of actors (each loads the
  model once and keeps it for every shard it gets), with `gpus` GPUs each.
- `workers` is how many items run at once; stages cut their tables into about that many
  shards (`shards_for`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args

from prefdata.engine.base import Engine, LocalEngine
from prefdata.engine.shards import Shard, Table, remove_shards, table_rows, write_shards
from prefdata.errors import InputError, PrefdataError

__all__ = [
    "Engine",
    "EngineName",
    "LocalEngine",
    "cut_shards",
    "open_engine",
    "scratch_folder",
    "shards_for",
]

EngineName = Literal["local", "ray"]


def scratch_folder(engine: Engine, name: str) -> Path:
    """A new folder name for one piece of shard work (`name`-xxxxxxxx) in the engine's scratch
    folder; the caller removes it (prefdata.engine.shards.remove_shards)."""
    if engine.scratch is None:
        raise PrefdataError(f"the {engine.name} engine has no scratch folder for shards")
    return Path(engine.scratch) / f"{name}-{uuid.uuid4().hex[:8]}"


def shards_for(
    engine: Engine | None, rows: int, *, min_rows: int = 1, max_rows: int | None = None
) -> int:
    """How many shards to cut `rows` rows into for `engine`: one per worker (each worker keeps
    one shard in memory at a time), never shards of fewer than `min_rows` rows, at least 1;
    with `max_rows`, more shards than workers where needed so none has more rows than that
    (a worker's memory is then bounded by the shard size, whatever the table's)."""
    if engine is None or not engine.distributed or rows <= 0:
        return 1
    count = max(1, min(engine.workers, rows // max(1, min_rows)))
    return count if max_rows is None else max(count, -(-rows // max_rows))


@contextlib.contextmanager
def cut_shards(
    table: Table, engine: Engine, name: str, *, columns: list[str], max_rows: int
) -> Iterator[list[Shard]]:
    """`table`'s `columns` as contiguous Parquet shards for `engine` (one per worker, none
    over `max_rows` rows) in a new scratch folder, removed on exit; a lazy table is cut by the
    workers themselves (prefdata.engine.shards.write_shards)."""
    folder = scratch_folder(engine, name)
    rows = table_rows(table)
    count = shards_for(engine, rows, max_rows=max_rows)
    try:
        yield write_shards(table, folder, count, columns=columns, rows=rows, engine=engine)
    finally:
        remove_shards(folder)


@contextlib.contextmanager
def open_engine(
    name: str = "local",
    *,
    address: str | None = None,
    workers: int | None = None,
    scratch: str | Path | None = None,
) -> Iterator[Engine]:
    """The engine `name` ("local" | "ray"), closed on exit.

    ray: `address` is a running cluster ("auto", "ray://host:10001", "host:6379"); without one
    a local cluster is started in this process (`workers` CPUs; default: every core) and shut
    down on exit. `workers`: items run at once (default: the cluster's CPUs, or its GPUs for
    model work). `scratch`: the folder for shard files, which every worker must reach (on
    several machines: a shared folder; default: a temporary folder, fine on one machine).
    Raises InputError for an unknown engine, MissingExtraError when Ray is not
    installed (pip install 'prefdata[ray]').
    """
    if name == "local":
        if address is not None:
            raise InputError("--address needs --engine ray (the local engine has no cluster)")
        yield LocalEngine()
        return
    if name != "ray":
        raise InputError(f"unknown engine {name!r}; use one of {', '.join(get_args(EngineName))}")
    from prefdata.engine.ray import RayEngine

    engine = RayEngine(address=address, workers=workers, scratch=scratch)
    try:
        yield engine
    finally:
        engine.close()


def describe(engine: Engine | None) -> dict[str, Any]:
    """The engine as a report entry: its name and workers."""
    if engine is None:
        return {"name": "local", "workers": 1}
    return {"name": engine.name, "workers": engine.workers}

"""Parquet shards: a table cut into pieces the workers of an engine read one at a time.

Shards are files (not objects in Ray's store), in a folder every worker can reach, so a
worker holds one shard in memory and the driver none: `write_shards` streams the input. Each
shard keeps the input's row order and a `_row` column with each row's position in the whole
table, so results computed on shards can be put back in the single-process order.

The row-wise stages that shard (rule checks, dedup, train/test overlap) also take a LazyFrame
(`pl.scan_parquet(...)`): on a distributed engine it stays lazy (`held_for`) and each worker
cuts its own row range from the source, so the rows never pass through the driver and the
shards are written in parallel (on several machines, from the files every worker reaches:
like the scratch folder, a scan's files must be on storage every node shares, under the
same absolute path).
"""

from __future__ import annotations

import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from prefdata.engine.base import Engine

__all__ = [
    "ROW",
    "SHIPPABLE_PLAN_BYTES",
    "RangeCut",
    "Shard",
    "Table",
    "cut_range",
    "held_for",
    "read_shard",
    "remove_shards",
    "table_columns",
    "table_rows",
    "write_shards",
]

ROW = "_row"  # each row's position in the whole table

Table = pl.DataFrame | pl.LazyFrame

# A lazy plan over files pickles to a few kB; a plan over a frame in memory pickles to the
# frame. Past this size the driver writes the shards itself rather than send every worker
# a copy of the whole table.
SHIPPABLE_PLAN_BYTES = 1 << 20


def held_for(table: Table, distributed: bool) -> Table:
    """`table` as a sharding stage keeps it: a LazyFrame stays lazy for a distributed engine
    (its shards are written from the source); for one process it is read into memory."""
    if isinstance(table, pl.LazyFrame) and not distributed:
        return table.collect()
    return table


def table_columns(table: Table) -> list[str]:
    """The column names, without reading a lazy table's rows."""
    return table.collect_schema().names() if isinstance(table, pl.LazyFrame) else table.columns


def table_rows(table: Table) -> int:
    """The row count (a lazy table is counted, not read)."""
    if isinstance(table, pl.LazyFrame):
        return int(table.select(pl.len()).collect().item())
    return table.height


@dataclass(frozen=True)
class Shard:
    """One shard: its file, its index, and (for contiguous shards) its first row."""

    path: Path
    index: int
    first_row: int
    rows: int


def write_shards(
    table: pl.DataFrame | pl.LazyFrame | str | Path,
    folder: Path,
    count: int,
    *,
    key: str | None = None,
    columns: list[str] | None = None,
    rows: int | None = None,
    engine: Engine | None = None,
) -> list[Shard]:
    """Cut `table` (a frame, or a Parquet path read lazily) into `count` shards in `folder`.

    Without `key`: contiguous row ranges of near-equal size. With `key`: rows go to shard
    hash(key) % count, so all rows sharing a key value land in one shard (the candidates of
    one prompt), each shard in input order; `first_row` is then -1. `columns`: only these
    (plus `_row`). `rows`: the table's row count when the caller has it (a lazy table is
    not counted again). `engine`: a distributed engine's workers cut a lazy table's row
    ranges themselves (see the module doc). Returns the shards in order; empty shards are
    left out.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lazy = (
        # absolute: a worker of a cluster joined with --address may run in another folder
        pl.scan_parquet(Path(table).resolve())
        if isinstance(table, str | Path)
        else table.lazy()
        if isinstance(table, pl.DataFrame)
        else table
    )
    if columns is not None:
        lazy = lazy.select(columns)
    if rows is None:
        rows = int(lazy.select(pl.len()).collect().item())
    count = max(1, min(count, rows))
    paths = [folder / f"shard-{index:05d}.parquet" for index in range(count)]
    if key is not None:
        cuts = [_key_cut(lazy, key, index, count, path) for index, path in enumerate(paths)]
    else:
        ranges = [(rows * index // count, rows * (index + 1) // count) for index in range(count)]
        # (a frame in memory is already here: the driver writes it, shipping it gains nothing)
        ships = engine is not None and engine.distributed and not isinstance(table, pl.DataFrame)
        plan = pickle.dumps(lazy) if ships else b""
        if engine is not None and 0 < len(plan) <= SHIPPABLE_PLAN_BYTES:
            jobs = [RangeCut(plan, path, a, b) for path, (a, b) in zip(paths, ranges, strict=True)]
            cuts = engine.map(cut_range, jobs, what="shards to cut")
        else:
            cuts = [
                _range_cut(lazy, path, a, b) for path, (a, b) in zip(paths, ranges, strict=True)
            ]
    shards: list[Shard] = []
    for path, (first, n) in zip(paths, cuts, strict=True):
        if n:
            shards.append(Shard(path, len(shards), first, n))
        else:
            path.unlink()
    return shards


@dataclass(frozen=True)
class RangeCut:
    """One contiguous shard for a worker to write: the pickled lazy source and its rows."""

    plan: bytes
    path: Path
    start: int
    stop: int


def cut_range(job: RangeCut) -> tuple[int, int]:
    """Write one contiguous shard from the pickled lazy source (on a worker)."""
    return _range_cut(pickle.loads(job.plan), job.path, job.start, job.stop)


def _range_cut(lazy: pl.LazyFrame, path: Path, start: int, stop: int) -> tuple[int, int]:
    """Rows [start, stop) to `path`, numbered from `start`: (first row, rows written)."""
    # slice first, then number the rows: a row index before the slice makes polars read the
    # whole table into memory for every shard
    part = lazy.slice(start, stop - start).with_row_index(ROW, offset=start)
    return start, _sink(part, path)


def _key_cut(lazy: pl.LazyFrame, key: str, index: int, count: int, path: Path) -> tuple[int, int]:
    """The rows whose key hashes to shard `index` to `path`: (-1, rows written)."""
    part = lazy.with_row_index(ROW).filter(pl.col(key).hash(seed=0) % count == index)
    return -1, _sink(part, path)


def _sink(part: pl.LazyFrame, path: Path) -> int:
    part.with_columns(pl.col(ROW).cast(pl.Int64)).sink_parquet(path)
    return int(pl.scan_parquet(path).select(pl.len()).collect().item())


def read_shard(shard: Shard | Path, *, keep_row: bool = False) -> pl.DataFrame:
    """A shard as a frame (without its `_row` column unless `keep_row`)."""
    path = shard.path if isinstance(shard, Shard) else shard
    frame = pl.read_parquet(path).rechunk()  # one chunk per column, as one process has
    return frame if keep_row else frame.drop(ROW, strict=False)


def remove_shards(folder: Path) -> None:
    """Remove a shard folder once its results are merged (nothing else lives there)."""
    shutil.rmtree(folder, ignore_errors=True)

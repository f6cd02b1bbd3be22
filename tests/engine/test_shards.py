"""Parquet shards (prefdata.engine.shards), without a cluster: every row lands in exactly one
shard, with its position in the whole table, whether the table is a frame in memory or a
(filtered) Parquet scan."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata.engine import LocalEngine, shards_for
from prefdata.engine.shards import ROW, SHIPPABLE_PLAN_BYTES, read_shard, write_shards


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "t.parquet"
    pl.DataFrame(
        {"id": [f"r{k}" for k in range(1000)], "group": [k % 7 for k in range(1000)]}
    ).write_parquet(path, row_group_size=64)
    return path


@pytest.mark.parametrize("source", ["frame", "scan", "filtered scan"])
def test_contiguous_shards_number_rows_as_the_whole_table(
    table: Path, tmp_path: Path, source: str
) -> None:
    whole = pl.read_parquet(table)
    lazy = pl.scan_parquet(table)
    if source == "filtered scan":
        whole = whole.filter(pl.col("group") != 3)
        lazy = lazy.filter(pl.col("group") != 3)
    given = whole if source == "frame" else lazy
    shards = write_shards(given, tmp_path / "out", 3, columns=["id"])
    assert [s.first_row for s in shards] == [0, whole.height // 3, 2 * whole.height // 3]
    parts = [read_shard(s, keep_row=True) for s in shards]
    assert [p.height for p in parts] == [s.rows for s in shards]
    merged = pl.concat(parts)
    assert merged.columns == ["_row", "id"]
    assert merged[ROW].to_list() == list(range(whole.height))
    assert merged["id"].to_list() == whole["id"].to_list()


def test_key_shards_keep_a_key_together(table: Path, tmp_path: Path) -> None:
    shards = write_shards(pl.scan_parquet(table), tmp_path / "out", 3, key="group")
    parts = [read_shard(s, keep_row=True) for s in shards]
    groups = [set(p["group"].to_list()) for p in parts]
    assert sum(len(g) for g in groups) == 7  # each group in one shard only
    merged = pl.concat(parts).sort(ROW)
    assert merged[ROW].to_list() == list(range(1000))
    assert all(s.first_row == -1 for s in shards)


def test_shard_count_is_one_per_worker_unless_shards_would_exceed_max_rows() -> None:
    class TwoWorkers(LocalEngine):
        distributed = True
        workers = 2

    engine = TwoWorkers()
    assert shards_for(None, 10_000) == 1
    assert shards_for(LocalEngine(), 10_000, max_rows=10) == 1  # one process: no shards
    assert shards_for(engine, 10_000) == 2
    assert shards_for(engine, 10_000, max_rows=3_000) == 4  # ceil(10,000 / 3,000)
    assert shards_for(engine, 10_000, max_rows=50_000) == 2
    assert shards_for(engine, 3, min_rows=8) == 1


class Workers(LocalEngine):
    """A distributed engine in this process that records what its workers were given."""

    distributed = True
    workers = 2

    def __init__(self) -> None:
        self.ran: list[str] = []

    def _run(self, fn: Callable[[Any], Any], items: list[Any], *, model: bool, gpus: float) -> Any:
        self.ran.extend(fn.__name__ for _ in items)
        return super()._run(fn, items, model=model, gpus=gpus)


def test_workers_cut_a_scan_into_the_shards_the_driver_would_write(
    table: Path, tmp_path: Path
) -> None:
    scan = pl.scan_parquet(table).filter(pl.col("group") != 3)
    engine = Workers()
    by_workers = write_shards(scan, tmp_path / "w", 3, columns=["id"], engine=engine)
    assert engine.ran == ["cut_range"] * 3  # the driver wrote none of them
    by_driver = write_shards(scan, tmp_path / "d", 3, columns=["id"])
    assert [(s.first_row, s.rows) for s in by_workers] == [(s.first_row, s.rows) for s in by_driver]
    for w, d in zip(by_workers, by_driver, strict=True):
        assert read_shard(w, keep_row=True).equals(read_shard(d, keep_row=True))


def test_a_plan_holding_its_rows_is_not_shipped_to_the_workers(tmp_path: Path) -> None:
    # A lazy frame over rows in memory pickles to the rows: sending it to every worker would
    # copy the whole table once per shard.
    big = pl.DataFrame({"id": [f"row-{k:07d}" for k in range(2 * SHIPPABLE_PLAN_BYTES // 8)]})
    engine = Workers()
    shards = write_shards(big.lazy(), tmp_path / "out", 2, engine=engine)
    assert engine.ran == []
    merged = pl.concat([read_shard(s) for s in shards])
    assert merged["id"].to_list() == big["id"].to_list()


def test_a_relative_path_is_cut_by_workers_running_in_another_folder(
    table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Elsewhere(Workers):
        """Workers of a cluster joined with --address: started in a folder of their own."""

        def _run(
            self, fn: Callable[[Any], Any], items: list[Any], *, model: bool, gpus: float
        ) -> Any:
            with contextlib.chdir(elsewhere):
                return super()._run(fn, items, model=model, gpus=gpus)

    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(table.parent)
    engine = Elsewhere()
    shards = write_shards(table.name, tmp_path / "out", 2, engine=engine)
    assert engine.ran == ["cut_range"] * 2
    assert sum(s.rows for s in shards) == 1000

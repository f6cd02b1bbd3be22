"""The Ray engine on a real local Ray cluster, started inside the test (`ray.init(num_cpus=2)`,
shut down at the end): rule checks, dedup and train/test overlap cut into several Parquet
shards give the same issues, row for row, as one process; so do `prefdata audit --engine ray`
and `prefdata run --engine ray`. The one-process results are themselves checked against brute
force in tests/quality/test_dedup.py and test_rules.py.

Skipped when Ray is not installed (pip install 'prefdata[ray]'; the dev extra installs it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

ray = pytest.importorskip("ray")

from prefdata.engine import LocalEngine, open_engine  # noqa: E402
from prefdata.engine.ray import RayEngine  # noqa: E402
from prefdata.errors import ContractError, InputError  # noqa: E402
from prefdata.io.importers.hh_rlhf import import_hh_rlhf  # noqa: E402
from prefdata.io.tables import read_table, write_table  # noqa: E402
from prefdata.quality import dedup as dedup_module  # noqa: E402
from prefdata.quality import rules as rules_module  # noqa: E402
from prefdata.quality.dedup import dedup, split_overlap  # noqa: E402
from prefdata.quality.rules import rule_checks  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.xdist_group("ray")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayEngine]:
    """One local cluster of 2 CPUs for the module (starting one takes ~10 s here)."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 * 1024 * 1024,
    )
    engine = RayEngine(scratch=tmp_path_factory.mktemp("shards"))
    try:
        yield engine
    finally:
        engine.close()
        ray.shutdown()


def _swap(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(chosen=pl.col("rejected"), rejected=pl.col("chosen"))


@pytest.fixture(scope="module")
def pairs(shared_data: Path) -> pl.DataFrame:
    """Real HH-RLHF pairs plus exact copies, copies with labels swapped and edited copies:
    every kind of dedup issue, spread over every shard."""
    hh = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    hh = hh.head(1200)
    rng = np.random.default_rng(3)

    def edited(text: str) -> str:
        words = text.split()
        if len(words) > 12:
            words[int(rng.integers(0, len(words)))] = "edited"
        return " ".join(words)

    copies = hh.sample(60, seed=1).with_columns(pair_id=pl.col("pair_id") + "-copy")
    swapped = _swap(hh.sample(40, seed=2)).with_columns(pair_id=pl.col("pair_id") + "-swap")
    near = hh.sample(60, seed=4).with_columns(
        pair_id=pl.col("pair_id") + "-near",
        chosen=pl.col("chosen").map_elements(edited, return_dtype=pl.String),
    )
    table = pl.concat([hh, copies, swapped, near])
    # shuffled, so copies lie in other shards than their originals
    return table.sample(fraction=1.0, shuffle=True, seed=5)


@pytest.fixture
def maps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(what, items) of every map of any Ray engine, including one the CLI opens itself;
    work on model actors is named "<what> on model actors"."""
    seen: list[tuple[str, int]] = []
    original = RayEngine.map

    def noting(self: RayEngine, fn: Any, items: Sequence[Any], **options: Any) -> list[Any]:
        what = options.get("what", "")
        seen.append((f"{what} on model actors" if options.get("model") else what, len(items)))
        return original(self, fn, items, **options)

    monkeypatch.setattr(RayEngine, "map", noting)
    return seen


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards of 300 rows: several shards per worker, so the merge is exercised."""
    monkeypatch.setattr(dedup_module, "SHARD_ROWS", 300)
    monkeypatch.setattr(rules_module, "SHARD_ROWS", 300)


def test_map_keeps_order_and_raises_the_workers_error(cluster: RayEngine) -> None:
    assert cluster.map(abs, list(range(-7, 0))) == list(range(7, 0, -1))
    assert cluster.map(abs, [-3, 4], model=True) == [3, 4]
    with pytest.raises(ContractError, match="rule checks need column"):
        cluster.map(rule_checks, [pl.DataFrame({"pair_id": ["a"]})])


def test_dedup_on_shards_equals_one_process(
    cluster: RayEngine,
    pairs: pl.DataFrame,
    small_shards: None,
    maps: list[tuple[str, int]],
) -> None:
    local, local_report = dedup(pairs, engine=LocalEngine())
    sharded, sharded_report = dedup(pairs, engine=cluster)
    assert ("hash shards", 5) in maps  # 1360 rows in shards of <= 300
    assert ("bucket partitions", 5) in maps
    assert sharded_report == local_report
    assert_frame_equal(sharded, local)
    # every kind of issue is there, so the equality covers each path
    for issue in ("duplicate_pair", "near_duplicate_pair", "conflicting_duplicate"):
        assert local_report[issue] > 0, issue
    assert local_report["duplicate_pair"] >= 60


def test_split_overlap_on_shards_equals_one_process(
    cluster: RayEngine, pairs: pl.DataFrame, small_shards: None
) -> None:
    train, test = pairs.head(900), pairs.tail(460)
    local, local_report = split_overlap(train, test)
    sharded, sharded_report = split_overlap(train, test, engine=cluster)
    assert local_report["overlap_exact"] > 0 and local_report["overlap_near"] > 0
    assert sharded_report == local_report
    assert_frame_equal(sharded, local)


def test_rule_checks_on_shards_equal_one_process(
    cluster: RayEngine,
    pairs: pl.DataFrame,
    small_shards: None,
    maps: list[tuple[str, int]],
) -> None:
    # a few rows every check fires on, in the middle shards
    odd = pairs.head(4).with_columns(
        pair_id=pl.Series(["empty", "same", "refusal", "long"]),
        chosen=pl.Series(["", "same text", "I'm sorry, but I can't help with that.", "x " * 5000]),
        rejected=pl.Series(["fine", "same text", "Here is how.", "short"]),
    )
    table = pl.concat([pairs.head(700), odd, pairs.tail(600)])
    local, local_report = rule_checks(table)
    sharded, sharded_report = rule_checks(table, engine=cluster)
    assert maps == [("rule shards", 5)]
    assert sharded_report == local_report
    assert_frame_equal(sharded, local)
    assert local.filter(pl.col("is_issue"))["item_id"].unique().len() >= 4


def test_lazy_scans_give_the_issues_of_the_frame_on_the_cluster_and_in_one_process(
    cluster: RayEngine, pairs: pl.DataFrame, small_shards: None, tmp_path: Path
) -> None:
    """A Parquet scan (sharded from the file on the cluster, read into memory for one process)
    gives the issues of the same table in memory. That the driver then holds no rows is a
    memory figure, measured in bench/bench_scale.py, not asserted here."""
    path = tmp_path / "pairs.parquet"
    pairs.write_parquet(path, row_group_size=200)
    scan = pl.scan_parquet(path)
    for run in (
        lambda table, **kw: rule_checks(table, **kw),
        lambda table, **kw: dedup(table, **kw),
        lambda table, **kw: split_overlap(table.head(900), table.tail(460), **kw),
    ):
        expected, expected_report = run(pairs)
        for engine in (cluster, LocalEngine()):
            found, report = run(scan, engine=engine)
            assert report == expected_report
            assert_frame_equal(found, expected)
    with pytest.raises(ContractError, match="appears more than once"):
        dedup(pl.concat([scan, scan.head(1)]), engine=cluster)


def _cli(*args: str) -> str:
    from typer.testing import CliRunner

    from prefdata.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_audit_command_with_engine_ray(
    cluster: RayEngine,
    pairs: pl.DataFrame,
    tmp_path: Path,
    small_shards: None,
    maps: list[tuple[str, int]],
) -> None:
    data = write_table(pairs.head(1000), tmp_path / "pairs.parquet")
    test = write_table(pairs.tail(360), tmp_path / "test.parquet")
    local, ray_out = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    common = ["audit", str(data), "--test", str(test), "--sample", "0"]
    _cli(*common, "-o", str(local))
    assert not maps
    # the test's cluster is running: the engine joins it (a local one would start otherwise)
    _cli(*common, "-o", str(ray_out), "--engine", "ray")
    assert ("rule shards", 4) in maps and ("verify chunks", 4) in maps
    assert_frame_equal(read_table(ray_out), read_table(local))


def test_pipeline_run_with_engine_ray(
    cluster: RayEngine,
    pairs: pl.DataFrame,
    tmp_path: Path,
    small_shards: None,
    maps: list[tuple[str, int]],
) -> None:
    from prefdata.pipeline import load_pipeline, run_pipeline

    data = write_table(pairs, tmp_path / "pairs.parquet")
    path = tmp_path / "p.yaml"
    stages = [{"kind": "audit", "inputs": {"pairs": str(data)}, "sample": 20}]
    path.write_text(yaml.safe_dump({"stages": stages}))
    local = run_pipeline(load_pipeline(path), tmp_path / "local", progress=False)
    assert not maps
    distributed = run_pipeline(load_pipeline(path), tmp_path / "ray", progress=False, engine="ray")
    assert ("rule shards", 5) in maps and ("hash shards", 5) in maps
    for name in ("issues", "sample"):
        assert_frame_equal(
            read_table(distributed.stage("audit").outputs[name]),
            read_table(local.stage("audit").outputs[name]),
        )
    # the shards are gone: the run folder holds the outputs only
    assert not list((tmp_path / "ray").rglob("shard-*.parquet"))


def test_unknown_engine_and_address_without_ray() -> None:
    with pytest.raises(InputError, match="unknown engine 'spark'"), open_engine("spark"):
        pass
    with (
        pytest.raises(InputError, match="--address needs --engine ray"),
        open_engine("local", address="auto"),
    ):
        pass


def test_generate_on_ray_workers_equals_one_process(
    cluster: RayEngine, shared_data: Path, tmp_path: Path, maps: list[tuple[str, int]]
) -> None:
    """The model-call path (prefdata/engine/warm.py): two workers each load the embedded
    model and generate for their shard into the run's call cache; a third pass assembles the
    stage from the cache. Greedy, one prompt per forward pass: the same tokens in any
    process, so the candidates must equal a one-process run's on a fresh cache."""
    from prefdata.pipeline import load_pipeline, run_pipeline

    stages = [
        {
            "kind": "import",
            "name": "questions",
            "format": "gsm8k",
            "path": str(shared_data / "gsm8k" / "test.jsonl"),
            "limit": 16,
        },
        {"kind": "generate", "n": 1, "max_new_tokens": 6, "temperature": 0.0, "batch_size": 1},
    ]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"stages": stages}))
    local = run_pipeline(load_pipeline(path), tmp_path / "local", progress=False)
    assert not maps
    distributed = run_pipeline(load_pipeline(path), tmp_path / "ray", progress=False, engine="ray")
    # the embedded model runs in the workers: actors that keep it loaded between shards
    assert ("generate shards on model actors", 2) in maps
    assert ("generate on model actors", 1) in maps
    got = read_table(distributed.stage("generate").outputs["candidates"])
    want = read_table(local.stage("generate").outputs["candidates"])
    assert got.height == 16
    assert_frame_equal(got.drop("created_at", strict=False), want.drop("created_at", strict=False))
    # every call was made once, by the workers: the assembling pass found them all cached
    assert distributed.stage("generate").report.get("requests") == 16

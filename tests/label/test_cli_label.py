"""`prefdata judge` / `judge-eval` on real data (the embedded model; PandaLM's shipped verdicts)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from prefdata.cli import app
from prefdata.io.importers.hhh import import_hhh
from prefdata.io.importers.pandalm import import_pandalm
from prefdata.io.tables import read_table

runner = CliRunner()


def test_judge_estimate_then_local_judge(shared_data: Path, tmp_path: Path) -> None:
    pairs = import_hhh(shared_data / "hhh_alignment" / "hhh_alignment_eval.json").tables["pairs"]
    data = tmp_path / "hhh.parquet"
    pairs.head(3).write_parquet(data)
    est = runner.invoke(
        app,
        [
            "judge",
            str(data),
            "-o",
            str(tmp_path / "v.parquet"),
            "--judge",
            "anthropic:claude-sonnet-4-6",
            "--estimate",
        ],
    )
    assert est.exit_code == 0, est.output
    assert "calls" in est.stdout and not (tmp_path / "v.parquet").exists()

    out = tmp_path / "votes.parquet"
    result = runner.invoke(
        app,
        [
            "judge",
            str(data),
            "-o",
            str(out),
            "--judge",
            "local:smollm2",
            "--cache",
            str(tmp_path / "calls.sqlite"),
        ],
    )
    assert result.exit_code == 0, result.output
    votes = read_table(out)
    assert votes.height == 6  # 3 pairs x 2 orders
    assert set(votes["order"]) == {"ab", "ba"}
    verdicts = read_table(tmp_path / "votes.verdicts.parquet")
    assert verdicts.height == 3


def test_judge_eval_on_pandalm_verdicts(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "pandalm_testset"
    imported = import_pandalm(
        folder / "testset-v1.json", judges=[folder / "gpt-3.5-turbo-testset-v1.json"]
    )
    votes = imported.tables["annotations"]
    votes.filter(pl.col("annotator_kind") == "llm").write_parquet(tmp_path / "judge.parquet")
    votes.filter(pl.col("annotator_kind") == "human").write_parquet(tmp_path / "human.parquet")
    result = runner.invoke(
        app,
        ["judge-eval", str(tmp_path / "judge.parquet"), "--gold", str(tmp_path / "human.parquet")],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "gpt-3.5-turbo" in json.dumps(report)

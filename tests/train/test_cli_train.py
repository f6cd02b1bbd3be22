"""`prefdata train dpo ...` then `prefdata train eval ...` through the CLI, on real pairs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from prefdata.cli import app
from prefdata.train.recipe import builtin_recipe
from tests.train.test_entry import SMALL

runner = CliRunner()


def last_json(text: str) -> dict[str, object]:
    start = [m.start() for m in re.finditer(r"(?m)^\{$", text)][-1]
    parsed: dict[str, object] = json.loads(text[start:])
    return parsed


def test_cli_train_then_eval(tiny: Path, hh_pairs: pl.DataFrame, tmp_path: Path) -> None:
    data = tmp_path / "pairs.parquet"
    hh_pairs.head(4).write_parquet(data)
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "dpo",
            *SMALL,
            "--recipe",
            str(builtin_recipe("dpo")),
            "--data",
            str(data),
            "--model",
            str(tiny),
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert last_json(result.stdout)["steps"] == 1
    assert (out / "recipe.yaml").exists()

    heldout = tmp_path / "heldout.parquet"
    hh_pairs.tail(4).write_parquet(heldout)
    # `train eval MODEL HELDOUT`: both positional since eval became a derived stage.
    result = runner.invoke(app, ["train", "eval", str(out), str(heldout)])
    assert result.exit_code == 0, result.output
    report = last_json(result.stdout)
    assert 0.0 <= float(report["accuracy"]) <= 1.0  # type: ignore[arg-type]


def test_cli_train_needs_its_inputs(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "dpo", "--data", str(tmp_path / "x.parquet")])
    # The recipe is optional (the built-in one); the data and the output folder are not.
    assert result.exit_code == 2 and "needs --data and -o/--out" in result.output
    result = runner.invoke(app, ["train", "ppo"])
    assert result.exit_code == 2 and "dpo, kto, reward, orpo" in result.output

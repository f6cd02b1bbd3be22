"""The public entry points on files: a recipe from train/, overrides, a data file, outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
import yaml

from prefdata.train import train
from prefdata.train.__main__ import main
from prefdata.train.recipe import builtin_recipe
from tests.train.conftest import recipe

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "max_steps=1",
    "per_device_train_batch_size=2",
    "gradient_accumulation_steps=1",
    "max_length=96",
    "save_strategy=no",
    "peft.r=4",
]


def test_module_entry_trains_from_the_dpo_recipe_file(
    tiny: Path, hh_pairs: pl.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "pairs.parquet"
    hh_pairs.head(4).write_parquet(data)
    out = tmp_path / "run"
    status = main(
        [
            "dpo",
            "--recipe",
            str(builtin_recipe("dpo")),
            "--data",
            str(data),
            "--model",
            str(tiny),
            "-o",
            str(out),
            *SMALL,
            "beta=0.2",
        ]
    )
    assert status == 0
    stdout = capsys.readouterr().out
    # Trainer prints its log lines too; the report is the last (indented) JSON object.
    start = [m.start() for m in re.finditer(r"(?m)^\{$", stdout)][-1]
    printed = json.loads(stdout[start:])
    assert printed["steps"] == 1 and printed["beta"] == 0.2 and printed["data"] == str(data)
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["beta"] == 0.2 and saved["peft"]["r"] == 4
    assert saved["lr_scheduler_type"] == "cosine"  # from the recipe file, unchanged
    assert saved["activation_checkpointing"] is False  # prefdata's CPU choice, recorded
    report = json.loads((out / "prefdata-train.json").read_text())
    assert report["trl_config"]["beta"] == 0.2
    assert report["trl_config"]["output_dir"] == str(out)


def test_module_entry_reports_bad_input_as_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "dpo",
            "--recipe",
            str(builtin_recipe("dpo")),
            "--data",
            str(tmp_path / "missing.parquet"),
            "-o",
            str(tmp_path / "o"),
            "betta=1",
        ]
    )
    assert status == 2
    assert "betta" in capsys.readouterr().err


def test_precomputed_reference_log_probs(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    report = train(
        "dpo",
        recipe=recipe(precompute_ref_log_probs=True, prefdata={"full_finetune": True}),
        data=pandalm_pairs.head(4),
        model=tiny,
        out=tmp_path,
    )
    assert report["reference"] == "precomputed log-probabilities"
    assert report["steps"] == 2 and report["losses"][0] == pytest.approx(0.6931, abs=1e-3)

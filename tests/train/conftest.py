"""Fixtures for the training tests: a tiny SmolLM2-shaped model and short real pairs.

The tiny model has SmolLM2-135M's config (vocabulary, rotary settings, special tokens) with 2
layers of width 32, and the embedded model's real tokenizer and chat template, so it runs
TRL's real code paths in about a second per step on a CPU. The data are the shortest real
pairs / KTO rows of the shared data sets, so short sequences keep each step cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

# Small, fast steps; a high learning rate so two steps visibly move the weights.
BASE_RECIPE: dict[str, Any] = {
    "max_steps": 2,
    "per_device_train_batch_size": 2,
    "max_length": 96,
    "learning_rate": 1e-3,
    "logging_steps": 1,
    "save_strategy": "no",
    "peft": {"r": 4, "lora_alpha": 8},
}


# The online methods (GRPO, RLOO): a group of completions per prompt, short completions.
ONLINE_RECIPE: dict[str, Any] = {
    "max_steps": 2,
    "per_device_train_batch_size": 8,
    "max_completion_length": 16,
    "learning_rate": 1e-3,
    "logging_steps": 1,
    "save_strategy": "no",
    "beta": 0.04,
    "seed": 0,
    "peft": {"r": 4, "lora_alpha": 8},
}


def recipe(base: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """`base` (default BASE_RECIPE) with top-level changes; `peft` / `prefdata` mappings are
    merged."""
    base = BASE_RECIPE if base is None else base
    out = {
        **base,
        "peft": dict(base.get("peft", {})),
        "prefdata": dict(base.get("prefdata", {})),
    }
    for key, value in changes.items():
        if key in ("peft", "prefdata"):
            out[key].update(value)
        else:
            out[key] = value
    return out


def short_pairs(pairs: pl.DataFrame, limit: int) -> pl.DataFrame:
    """The pairs whose prompt + chosen + rejected are shorter than `limit` characters."""
    prompt_chars = pairs["prompt"].list.eval(pl.element().struct.field("content").str.len_chars())
    total = (
        prompt_chars.list.sum()
        + pairs["chosen"].str.len_chars()
        + pairs["rejected"].str.len_chars()
    )
    return pairs.filter(total < limit)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prefdata.models.tiny import tiny_model

    return tiny_model(tmp_path_factory.mktemp("models") / "tiny", layers=2, hidden=32, heads=4)


@pytest.fixture(scope="session")
def pandalm_pairs(shared_data: Path) -> pl.DataFrame:
    """PandaLM pairs (3 human votes each, so a real `confidence`), shortest first: 24 rows."""
    from prefdata.io.importers.pandalm import import_pandalm

    pairs = import_pandalm(shared_data / "pandalm_testset" / "testset-v1.json").tables["pairs"]
    return short_pairs(pairs, 300).head(24)


@pytest.fixture(scope="session")
def hh_pairs(shared_data: Path) -> pl.DataFrame:
    """HH-RLHF harmless-base pairs (no confidence: one crowd label each), short ones: 8 rows."""
    from prefdata.io.importers.hh_rlhf import import_hh_rlhf

    pairs = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    return short_pairs(pairs, 200).head(8)


@pytest.fixture(scope="session")
def oasst_kto(shared_data: Path) -> pl.DataFrame:
    """OpenAssistant thumbs -> KTO rows (desirable and undesirable), the shorter ones."""
    from prefdata.io.importers.oasst import import_oasst

    kto = import_oasst(shared_data / "oasst_en_100" / "en_100_tree.jsonl").tables["kto"]
    prompt_chars = kto["prompt"].list.eval(pl.element().struct.field("content").str.len_chars())
    return kto.filter(prompt_chars.list.sum() + kto["completion"].str.len_chars() < 260)

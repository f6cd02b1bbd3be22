"""bench/noisy_labels.py's data preparation on the real HH-RLHF file: split, seeded flips."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def noisy_labels() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "noisy_labels", REPO / "bench" / "noisy_labels.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["noisy_labels"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pairs(noisy_labels: ModuleType, shared_data: Path) -> pl.DataFrame:
    table: pl.DataFrame = noisy_labels.load_pairs(
        shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz"
    )
    return table


def test_split_is_disjoint_by_prompt_and_flips_are_exact(
    noisy_labels: ModuleType, pairs: pl.DataFrame
) -> None:
    split = noisy_labels.prepare_data(pairs, heldout=300, limit=0, flip_rate=0.25, seed=3)
    assert split.heldout.height == 300
    assert split.clean.height + split.heldout.height == pairs.height  # limit 0: the whole pool
    # no prompt leaks: neither the prompt id nor the first user turn is shared
    assert not set(split.heldout["prompt_id"]) & set(split.clean["prompt_id"])
    group = noisy_labels.prompt_group
    assert not set(group(split.heldout)) & set(group(split.clean))
    # HH-RLHF repeats some first user turns: the split must have kept those groups whole
    assert group(pairs).n_unique() < pairs.height

    n = split.noisy.height
    flipped = split.flipped
    assert int(flipped.sum()) == round(0.25 * n)
    truth = split.truth()
    assert truth["pair_id"].to_list() == split.noisy["pair_id"].to_list()
    assert truth["flipped"].to_list() == flipped.tolist()
    same = split.noisy["chosen"] == split.clean["chosen"]
    swapped = (split.noisy["chosen"] == split.clean["rejected"]) & (
        split.noisy["rejected"] == split.clean["chosen"]
    )
    assert swapped.filter(pl.Series(flipped)).all()
    assert same.filter(pl.Series(~flipped)).all()
    assert noisy_labels.label_noise(split.noisy, split.clean) == pytest.approx(round(0.25 * n) / n)


def test_preparation_is_deterministic_by_seed(
    noisy_labels: ModuleType, pairs: pl.DataFrame
) -> None:
    a = noisy_labels.prepare_data(pairs, heldout=100, limit=500, flip_rate=0.25, seed=0)
    b = noisy_labels.prepare_data(pairs, heldout=100, limit=500, flip_rate=0.25, seed=0)
    c = noisy_labels.prepare_data(pairs, heldout=100, limit=500, flip_rate=0.25, seed=1)
    assert a.noisy.height == 500
    assert a.noisy.equals(b.noisy) and a.heldout.equals(b.heldout)
    assert a.flipped.tolist() == b.flipped.tolist()
    assert not a.heldout["pair_id"].equals(c.heldout["pair_id"])
    assert a.truth().filter("flipped")["pair_id"].to_list() != (
        c.truth().filter("flipped")["pair_id"].to_list()
    )


def test_a_split_that_whole_groups_cannot_fill_reports_the_shortfall(
    noisy_labels: ModuleType, pairs: pl.DataFrame
) -> None:
    # Two real conversation starts with two pairs each: 3 held-out pairs cannot be made of
    # whole groups, so the split holds out one group (2 pairs) and says it is 1 short.
    sizes = pairs.with_columns(noisy_labels.prompt_group(pairs)).group_by("group").len()
    two = sizes.filter(pl.col("len") == 2).sort("group")["group"].head(2)
    assert two.len() == 2
    table = pairs.filter(noisy_labels.prompt_group(pairs).is_in(two.implode()))
    split = noisy_labels.prepare_data(table, heldout=3, limit=0, flip_rate=0.5, seed=0)
    assert (split.heldout.height, split.clean.height, split.heldout_short) == (2, 2, 1)
    full = noisy_labels.prepare_data(pairs, heldout=300, limit=0, flip_rate=0.25, seed=3)
    assert full.heldout_short == 0

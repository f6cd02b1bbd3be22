"""ORPO (TRL experimental) on real pairs: marked experimental, trains, saves."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import torch

from prefdata.train import prepare
from prefdata.train.orpo import EXPERIMENTAL_WARNING
from tests.train.conftest import recipe


def test_orpo_is_marked_experimental_and_trains(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    prepared = prepare(
        "orpo", recipe=recipe(), data=pandalm_pairs.head(4), model=tiny, out=tmp_path
    )
    assert type(prepared.trainer).__module__.startswith("trl.experimental.orpo")
    trainer = prepared.trainer
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    report = prepared.fit(tmp_path)
    assert report["experimental"] is True
    assert EXPERIMENTAL_WARNING in report["warnings"]
    assert report["reference"] == "none (ORPO needs none)"
    assert report["steps"] == 2 and all(math.isfinite(x) for x in report["losses"])
    params = dict(trainer.model.named_parameters())
    assert any(not torch.equal(params[n], before[n]) for n in before)
    assert (tmp_path / "adapter_model.safetensors").is_file()

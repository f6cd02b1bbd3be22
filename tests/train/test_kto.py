"""KTO on real OpenAssistant thumbs (KTO rows) and on real pairs, with TRL's balance advice."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import polars as pl
import pytest
import torch

from prefdata.io.convert import KTO_RATIO_ADVICE
from prefdata.train import prepare
from prefdata.train.recipe import RecipeError
from tests.train.conftest import recipe


def test_kto_on_oasst_thumbs_balances_and_trains(
    tiny: Path, oasst_kto: pl.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prepared = prepare("kto", recipe=recipe(max_steps=3), data=oasst_kto, model=tiny, out=tmp_path)
    report = prepared.report
    assert report["data_contract"] == "kto"
    assert report["rows"] == oasst_kto.height
    # Balanced on the rows TRL keeps (it drops those whose prompt fills max_length).
    kept = report["rows_after_tokenization"]
    assert report["desirable"] + report["undesirable"] == kept
    assert report["desirable"] < report["undesirable"]  # these short OASST rows: more thumbs down
    assert report["undesirable_weight"] == 1.0 and report["desirable_weight"] > 1.0
    lo, hi = KTO_RATIO_ADVICE
    assert lo <= report["weighted_ratio"] <= hi and report["within_trl_advice"]
    # TRL's own balance check found nothing to warn about.
    assert "recommend EITHER" not in caplog.text
    trainer = prepared.trainer
    assert trainer.desirable_weight == report["desirable_weight"]
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    base = {
        n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad
    }
    result = prepared.fit(tmp_path)
    assert result["steps"] == 3 and all(math.isfinite(x) for x in result["losses"])
    assert result["reference"] == "base model with the adapter disabled"
    params = dict(trainer.model.named_parameters())
    assert any(not torch.equal(params[n], before[n]) for n in before)
    assert all(torch.equal(params[n], base[n]) and params[n].grad is None for n in base)
    assert (tmp_path / "adapter_model.safetensors").is_file()


def test_kto_from_pairs_needs_no_reweighting(
    tiny: Path, hh_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    prepared = prepare("kto", recipe=recipe(), data=hh_pairs, model=tiny, out=tmp_path)
    report = prepared.report
    assert report["data_contract"] == "pairs"
    assert report["rows"] == 2 * hh_pairs.height
    assert report["desirable"] == report["undesirable"] == hh_pairs.height
    assert (report["desirable_weight"], report["undesirable_weight"]) == (1.0, 1.0)
    # Shuffled so no two neighbours (TRL's KL pairing) come from the same pair's prompt.
    rows = prepared.trainer.train_dataset
    prompts = [str(p) for p in rows["prompt"]]
    assert sum(a == b for a, b in itertools.pairwise(prompts)) < len(prompts) // 2
    result = prepared.fit(tmp_path)
    assert all(math.isfinite(x) for x in result["losses"])


def test_kto_weights_the_recipe_sets_are_kept(
    tiny: Path, oasst_kto: pl.DataFrame, tmp_path: Path
) -> None:
    prepared = prepare(
        "kto",
        recipe=recipe(desirable_weight=1.0, undesirable_weight=1.0),
        data=oasst_kto,
        model=tiny,
        out=tmp_path,
    )
    assert prepared.report["desirable_weight"] == 1.0
    assert prepared.report["within_trl_advice"] is False


def test_kto_needs_two_rows_per_batch(tiny: Path, oasst_kto: pl.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="at least 2"):
        prepare(
            "kto",
            recipe=recipe(per_device_train_batch_size=1),
            data=oasst_kto,
            model=tiny,
            out=tmp_path,
        )

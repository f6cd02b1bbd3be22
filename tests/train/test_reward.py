"""Reward model on real PandaLM pairs with a margin from each pair's confidence."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
import torch

from prefdata.train import evaluate, prepare
from tests.train.conftest import recipe


def test_reward_model_trains_with_confidence_margins(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    data = pandalm_pairs.head(8)
    prepared = prepare("reward", recipe=recipe(max_steps=3), data=data, model=tiny, out=tmp_path)
    report = prepared.report
    expected = [math.log(min(c, 0.99) / (1 - min(c, 0.99))) for c in data["confidence"].to_list()]
    assert report["margin_mean"] == pytest.approx(sum(expected) / len(expected))
    trainer = prepared.trainer
    assert trainer.train_dataset["margin"] == pytest.approx(expected)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["margin"].tolist() == pytest.approx(expected[:2])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any("score" in n for n in before)  # the new head trains in full beside the adapter
    result = prepared.fit(tmp_path)
    assert result["steps"] == 3 and all(math.isfinite(x) for x in result["losses"])
    # With margins of ~2.7-4.6 the first loss is about log(1 + e^margin) on average, not log 2.
    assert result["losses"][0] > 2.0
    params = dict(trainer.model.named_parameters())
    assert all(not torch.equal(params[n], before[n]) for n in before if "score" in n)

    # The saved adapter + head reload to the same scores.
    scores = evaluate(tmp_path, data).report
    assert scores["method"] == "reward" and scores["kind"] == "reward model score"
    assert scores["pairs"] == 8
    model = trainer.model.eval()
    from prefdata.train.evaluation import reward_scores

    tokenizer = trainer.processing_class
    prompts = data["prompt"].to_list()
    direct = reward_scores(
        model, tokenizer, prompts, data["chosen"].to_list(), batch_size=4, max_length=96
    )
    reloaded = _reward_scores_via_saved(tmp_path, data)
    assert reloaded == pytest.approx(direct, abs=1e-5)


def _reward_scores_via_saved(folder: Path, data: pl.DataFrame) -> list[float]:
    from prefdata.train.evaluation import score_pairs

    table, _ = score_pairs(folder, data)
    return table["score_chosen"].to_list()

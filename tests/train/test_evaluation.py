"""Held-out preference accuracy, checked against TRL's own DPO metrics."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from prefdata.train import evaluate, prepare
from prefdata.train.evaluation import score_pairs
from tests.train.conftest import recipe


def test_untrained_adapter_ties_every_pair(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    prepared = prepare("dpo", recipe=recipe(), data=pandalm_pairs.head(4), model=tiny, out=tmp_path)
    # Save without training: LoRA B is zero, so the policy is the reference.
    prepared.trainer.save_model(str(tmp_path))
    scores = evaluate(tmp_path, pandalm_pairs.slice(16, 6), reference=tiny).report
    assert scores["pairs"] == 6
    assert scores["ties"] == 6 and scores["accuracy"] == 0.0 and scores["margin_mean"] == 0.0
    assert scores["policy_logp_accuracy"] == scores["reference_logp_accuracy"]


def test_implicit_reward_matches_trls_metrics(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    train_pairs = pandalm_pairs.head(4)
    held = pandalm_pairs.slice(8, 4)
    prepared = prepare(
        "dpo",
        recipe=recipe(per_device_eval_batch_size=2),
        data=train_pairs,
        model=tiny,
        out=tmp_path,
    )
    prepared.fit(tmp_path)
    trl_metrics = prepared.trainer.evaluate(_trl_rows(held))
    out = tmp_path / "per_pair.parquet"
    result = evaluate(tmp_path, held)
    result.tables["per_pair"].write_parquet(out)
    scores = result.report
    assert scores["method"] == "dpo" and scores["beta"] == 0.1
    assert scores["kind"].startswith("implicit reward")
    # Two eval batches of 2: TRL's logged value is the mean of batch means = the overall mean.
    assert scores["accuracy"] == pytest.approx(trl_metrics["eval_rewards/accuracies"])
    assert scores["margin_mean"] == pytest.approx(trl_metrics["eval_rewards/margins"], abs=1e-5)
    assert scores["margin_mean"] != 0.0
    per_pair = pl.read_parquet(out)
    assert per_pair["pair_id"].to_list() == held["pair_id"].to_list()
    assert set(per_pair.columns) >= {"score_chosen", "score_rejected", "margin", "correct"}


def _trl_rows(pairs: pl.DataFrame) -> object:
    from prefdata.train.data import to_dataset
    from prefdata.train.dpo import dpo_rows

    return to_dataset(dpo_rows(pairs))


def test_orpo_output_is_scored_by_log_probability(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    prepared = prepare(
        "orpo", recipe=recipe(max_steps=1), data=pandalm_pairs.head(2), model=tiny, out=tmp_path
    )
    prepared.fit(tmp_path)
    table, info = score_pairs(tmp_path, pandalm_pairs.slice(8, 4))
    assert info["method"] == "orpo" and info["kind"] == "mean per-token log-probability"
    assert (table["score_chosen"] < 0).all() and "ref_logp_chosen" not in table.columns


def test_evaluate_refuses_a_folder_without_a_model(
    tmp_path: Path, pandalm_pairs: pl.DataFrame
) -> None:
    from prefdata.errors import InputError

    with pytest.raises(InputError, match="not a model folder"):
        evaluate(tmp_path, pandalm_pairs.head(2))


def test_scoring_shows_progress_per_sequence_unless_quiet(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepared = prepare("dpo", recipe=recipe(), data=pandalm_pairs.head(4), model=tiny, out=tmp_path)
    prepared.trainer.save_model(str(tmp_path))
    held = pandalm_pairs.slice(16, 3)
    loud = evaluate(tmp_path, held, reference=tiny, batch_size=2).report
    err = capsys.readouterr().err
    # A LoRA output: chosen and rejected under the policy, then with the adapter disabled.
    assert "scoring pairs" in err and "12/12" in err
    quiet = evaluate(tmp_path, held, reference=tiny, batch_size=2, progress=False).report
    assert "scoring pairs" not in capsys.readouterr().err
    assert quiet["margin_mean"] == loud["margin_mean"] and quiet["pairs"] == 3

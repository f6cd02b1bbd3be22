"""A pipeline `train` stage with method rlhf writes a whole rlhf run folder; the `eval` stage
after it scores the RL policy (default) or, with `rlhf_model`, the reward model, on real
OpenAssistant pairs with the tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prefdata.errors import InputError
from prefdata.pipeline import load_pipeline, run_pipeline
from prefdata.train.evaluation import rlhf_model_folder as eval_model
from tests.pipeline.conftest import Writer
from tests.train.test_rlhf import RL_RECIPE, rlhf_recipe
from tests.train.test_rloo import short_oasst_pairs


def test_eval_model_reads_the_rlhf_layout(tmp_path: Path) -> None:
    plain = tmp_path / "dpo"
    plain.mkdir()
    assert eval_model(plain) == plain
    with pytest.raises(InputError, match="rlhf_model: reward_model needs an rlhf run folder"):
        eval_model(plain, "reward_model")
    run = tmp_path / "rlhf"
    run.mkdir()
    (run / "rlhf-summary.json").write_text("{}")
    assert eval_model(run) == run / "rl" / "model"
    assert eval_model(run, "reward_model") == run / "reward" / "model"
    assert eval_model(run, "sft_model") == run / "sft" / "model"


@pytest.mark.slow
def test_eval_after_an_rlhf_train_stage(
    write_pipeline: Writer, shared_data: Path, tiny: Path, tmp_path: Path
) -> None:
    pairs = short_oasst_pairs(shared_data)
    train_file, heldout_file = tmp_path / "pairs.parquet", tmp_path / "heldout.parquet"
    pairs.write_parquet(train_file)
    pairs.tail(3).write_parquet(heldout_file)
    recipe: dict[str, Any] = rlhf_recipe()
    recipe["prefdata"]["stages"]["rl"] = {"recipe": {**RL_RECIPE, "max_completion_length": 8}}
    path = write_pipeline(
        [
            {
                "kind": "train",
                "method": "rlhf",
                "model": str(tiny),
                "recipe": recipe,
                "inputs": {"pairs": str(train_file)},
            },
            {"kind": "eval", "name": "policy", "inputs": {"heldout": str(heldout_file)}},
            {
                "kind": "eval",
                "name": "rm",
                "rlhf_model": "reward_model",
                "inputs": {"heldout": str(heldout_file)},
            },
        ]
    )
    result = run_pipeline(load_pipeline(path), tmp_path / "run", progress=False)
    assert result.ran == ["train", "policy", "rm"]
    model = result.stage("train").outputs["model"]
    assert (model / "rlhf-summary.json").is_file()
    policy = json.loads(result.stage("policy").outputs["eval"].read_text())
    assert policy["model_dir"] == str(model / "rl" / "model")
    assert policy["method"] == "rloo" and policy["pairs"] == 3
    # The policy's reference is the SFT model (its adapter disabled).
    assert policy["base_model"] == str(model / "sft" / "model")
    assert 0.0 <= policy["reference_logp_accuracy"] <= 1.0
    rm = json.loads(result.stage("rm").outputs["eval"].read_text())
    assert rm["model_dir"] == str(model / "reward" / "model")
    assert rm["method"] == "reward" and rm["kind"] == "reward model score"
    assert rm["pairs"] == 3 and rm["margin_mean"] != 0.0

"""RLOO on real OpenAssistant prompts with a tiny SmolLM2-shaped model: two training steps
with a local pointwise judge as the reward, RLOO's leave-one-out advantages and its KL in the
reward, the report's reward statistics, the frozen reference, the adaptive KL coefficient,
and RLOO's own group-size guard."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch

from prefdata.train import load_recipe, prepare
from prefdata.train.grpo import check_group_size
from prefdata.train.recipe import RecipeError
from prefdata.train.rloo import RLOO
from tests.train.conftest import ONLINE_RECIPE, recipe, short_pairs


def short_oasst_pairs(shared_data: Path, limit: int = 400) -> pl.DataFrame:
    """OpenAssistant pairs (oasst_en_100, through the importer) whose prompt + chosen +
    rejected are shorter than `limit` characters."""
    from prefdata.io.importers.oasst import import_oasst

    pairs = import_oasst(shared_data / "oasst_en_100" / "en_100_tree.jsonl").tables["pairs"]
    return short_pairs(pairs, limit)


def rloo_recipe(**changes: Any) -> dict[str, Any]:
    """Two cheap steps: two prompts of 4 completions of 12 tokens per step."""
    return recipe(ONLINE_RECIPE, **{"num_generations": 4, "max_completion_length": 12, **changes})


@pytest.fixture(scope="module")
def oasst_pairs(shared_data: Path) -> pl.DataFrame:
    return short_oasst_pairs(shared_data)


@pytest.fixture(scope="module")
def run(tiny: Path, oasst_pairs: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two LoRA RLOO steps on OASST prompts, the tiny model as a local pointwise judge (its
    digit probabilities differ per completion, so rewards vary within every group), beta 0.04
    adapted towards a KL of 0.01."""
    out = tmp_path_factory.mktemp("rloo")
    judge = {"name": "judge", "options": {"judge": f"local:{tiny}", "cache": str(out / "c.db")}}
    recipe = rloo_recipe(prefdata={"rewards": [judge], "target_kl": 0.01})
    prepared = prepare("rloo", recipe=recipe, data=oasst_pairs, model=tiny, out=out)
    model = prepared.trainer.model
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    report = prepared.fit(out)
    return {"out": out, "report": report, "trainer": prepared.trainer, "lora": lora, "base": base}


def test_rloo_trains_with_trls_rloo_trainer(run: Any, oasst_pairs: pl.DataFrame) -> None:
    from trl import RLOOTrainer

    report = run["report"]
    assert isinstance(run["trainer"], RLOOTrainer)
    assert report["method"] == "rloo" and report["steps"] == 2
    assert len(report["losses"]) == 2 and all(math.isfinite(x) for x in report["losses"])
    assert report["data_contract"] == "pairs"
    assert report["prompts"] == oasst_pairs["prompt_id"].n_unique()
    assert report["num_generations"] == 4 and report["generation_batch_size"] == 8
    assert report["normalize_advantages"] is False and "loss_type" not in report
    assert report["trl_config"]["beta"] == 0.04
    # LoRA B starts at zero; with non-zero advantages every B matrix moves.
    after = {n: p for n, p in run["trainer"].model.named_parameters() if "lora_" in n}
    moved = [n for n in after if not torch.equal(after[n], run["lora"][n])]
    assert all(n in moved for n in after if "lora_B" in n)


def test_reference_is_the_frozen_base(run: Any) -> None:
    report = run["report"]
    assert report["reference"] == "base model with the adapter disabled"
    assert report["reference_parameters"] > report["trainable_parameters"] > 0
    after = {n: p for n, p in run["trainer"].model.named_parameters() if "lora_" not in n}
    assert all(torch.equal(after[n], run["base"][n]) for n in after)


def test_reward_statistics_and_leave_one_out_advantages(run: Any) -> None:
    stats = run["report"]["reward_stats"]
    assert [e["step"] for e in run["report"]["reward_history"]] == [1, 2]
    for key in (
        "reward",
        "reward_std",
        "rewards/judge/mean",
        "frac_reward_zero_std",
        "advantages/mean",
        "advantages/std",
        "advantages/frac_zero",
        "kl",
        "completions/mean_length",
    ):
        assert math.isfinite(stats[key]["mean"]), key
    assert 0.0 < stats["rewards/judge/mean"]["mean"] < 1.0
    assert stats["reward"]["mean"] == pytest.approx(stats["rewards/judge/mean"]["mean"])
    # Leave-one-out: a completion's advantage is its reward minus the mean of its k - 1
    # siblings, so they sum to zero within every group; none is zero when rewards differ.
    assert stats["advantages/mean"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert stats["advantages/frac_zero"]["mean"] == 0.0
    # No division by the group's std: the advantages are on the judge's small scale
    # (k / (k - 1) times the deviation from the group mean), far below GRPO's ~1.
    assert 0.0 < stats["advantages/std"]["mean"] < 0.5
    assert stats["kl"]["first"] == 0.0  # step 1: policy == reference
    assert stats["completions/mean_length"]["first"] <= 12


def test_adaptive_kl_moves_rloos_beta_in_the_reward(run: Any) -> None:
    assert run["report"]["target_kl"] == 0.01
    updates = [e for e in run["trainer"].state.log_history if "beta_next" in e]
    assert len(updates) == 2
    # KL 0 < target at step 1: beta goes down, and RLOOTrainer reads trainer.beta.
    assert updates[0]["beta"] == 0.04 and updates[0]["beta_next"] < 0.04
    assert run["trainer"].beta == updates[-1]["beta_next"]
    assert run["report"]["monitor"]["status"] in ("ok", "warn")


def test_rloo_has_its_own_group_size_guard(
    tiny: Path, oasst_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    small = rloo_recipe(num_generations=2, per_device_train_batch_size=4)
    with pytest.raises(RecipeError, match=r"num_generations=2 is below 4") as err:
        prepare("rloo", recipe=small, data=oasst_pairs, model=tiny, out=tmp_path)
    assert "--allow-small-groups" in str(err.value) and "other 1" in str(err.value)
    allowed = load_recipe("rloo", small, overrides=["prefdata.allow_small_groups=true"])
    assert check_group_size(allowed, RLOO) == 2
    # TRL's own default (2) is refused too when the recipe leaves num_generations out.
    with pytest.raises(RecipeError, match="num_generations=2"):
        check_group_size(load_recipe("rloo", {}), RLOO)
    assert check_group_size(load_recipe("rloo", {"num_generations": 4}), RLOO) == 4


def test_long_prompts_are_left_out_and_counted(
    shared_data: Path, tiny: Path, tmp_path: Path
) -> None:
    """TRL never shortens a prompt: the real OpenAssistant prompts over max_prompt_tokens
    (default 512; the longest is 1,272 tokens) never reach RLOO's trainer."""
    from prefdata.io.importers.oasst import import_oasst
    from prefdata.models.loader import load_tokenizer
    from prefdata.train.data import token_ids

    pairs = import_oasst(shared_data / "oasst_en_100" / "en_100_tree.jsonl").tables["pairs"]
    tokenizer = load_tokenizer(str(tiny))

    def length(prompt: Any) -> int:
        messages = list(prompt)
        return len(token_ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True)))

    lengths = {
        r["prompt_id"]: length(r["prompt"])
        for r in pairs.unique("prompt_id", keep="first").iter_rows(named=True)
    }
    assert len(lengths) == 212 and max(lengths.values()) == 1272
    for limit, overrides in ((512, []), (256, ["prefdata.max_prompt_tokens=256"])):
        recipe = rloo_recipe(prefdata={"rewards": [{"name": "format"}]})
        prepared = prepare(
            "rloo", recipe=recipe, data=pairs, model=tiny, out=tmp_path, overrides=overrides
        )
        report = prepared.report
        over = {k for k, n in lengths.items() if n > limit}
        assert report["max_prompt_tokens"] == limit
        assert report["dropped_prompt_too_long"] == len(over) > 0
        assert report["prompts"] == 212 - len(over)
        kept = prepared.trainer.train_dataset
        assert not set(kept["prompt_id"]) & over and len(kept) == report["prompts"]
        assert any("(prefdata.max_prompt_tokens)" in n for n in report["notes"])
    everything = prepare(
        "rloo",
        recipe=rloo_recipe(prefdata={"rewards": [{"name": "format"}]}),
        data=pairs,
        model=tiny,
        out=tmp_path,
        overrides=["prefdata.max_prompt_tokens=null"],
    )
    assert everything.report["prompts"] == 212
    assert everything.report["dropped_prompt_too_long"] == 0

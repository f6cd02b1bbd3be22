"""GRPO on real GSM8K prompts with a tiny SmolLM2-shaped model: training with an accuracy
reward and a local pointwise judge, the report's reward and advantage statistics, the frozen
reference, saving and reloading the adapter, the small-group refusal, the reward-hacking
monitor in a real run, and `prefdata train grpo` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from prefdata.errors import InputError
from prefdata.train import load_recipe, prepare
from prefdata.train.grpo import check_group_size
from prefdata.train.recipe import RecipeError, builtin_recipe
from tests.train.conftest import ONLINE_RECIPE, recipe

REPO = Path(__file__).resolve().parents[2]


def grpo_recipe(**changes: Any) -> dict[str, Any]:
    """Two cheap steps: one prompt of 8 completions of 16 tokens per step."""
    return recipe(ONLINE_RECIPE, **{"num_generations": 8, **changes})


@pytest.fixture(scope="module")
def gsm8k_prompts(shared_data: Path) -> pl.DataFrame:
    """The 16 shortest GSM8K test questions, as a prompts table with `answer`."""
    from prefdata.io.importers.math import import_gsm8k

    prompts = import_gsm8k(shared_data / "gsm8k" / "test.jsonl").tables["prompts"]
    chars = prompts["prompt"].list.eval(pl.element().struct.field("content").str.len_chars())
    return prompts.with_columns(chars.list.sum().alias("n")).sort("n").head(16).drop("n")


def _judge(tiny: Path, cache: Path, weight: float = 0.5) -> dict[str, Any]:
    """The tiny model as a local pointwise judge: its digit probabilities differ for every
    completion, so the groups' rewards vary and the advantages are not all zero."""
    return {
        "name": "judge",
        "weight": weight,
        "options": {"judge": f"local:{tiny}", "cache": str(cache)},
    }


def _lora(model: Any, kind: str) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if kind in n}


@pytest.fixture(scope="module")
def run(tiny: Path, gsm8k_prompts: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two LoRA GRPO steps: accuracy + judge rewards, beta 0.04, and the monitor's held-out
    check (accuracy of greedy answers to 2 held-out questions) at the start and every step."""
    out = tmp_path_factory.mktemp("grpo")
    recipe = grpo_recipe(
        prefdata={
            "rewards": [{"name": "accuracy"}, _judge(tiny, out / "calls.sqlite")],
            "monitor": {"judge": {"name": "accuracy"}, "judge_every": 1, "judge_prompts": 2},
            "target_kl": 0.01,
        }
    )
    prepared = prepare("grpo", recipe=recipe, data=gsm8k_prompts, model=tiny, out=out)
    model = prepared.trainer.model
    before = _lora(model, "lora_")
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    report = prepared.fit(out)
    return {
        "out": out,
        "report": report,
        "trainer": prepared.trainer,
        "before": before,
        "base_before": base_before,
    }


def test_grpo_trains_on_gsm8k_prompts(run: Any) -> None:
    report = run["report"]
    assert report["method"] == "grpo" and report["steps"] == 2
    assert len(report["losses"]) == 2 and all(math.isfinite(x) for x in report["losses"])
    assert report["data_contract"] == "prompts"
    assert report["prompts"] == 14 and report["heldout_prompts"] == 2
    assert report["prompts_with_answer"] == 14
    assert report["num_generations"] == 8 and report["generation_batch_size"] == 8
    assert report["rewards"] == [
        {"name": "accuracy", "weight": 1.0, "options": {}},
        {"name": "judge", "weight": 0.5, "options": run["report"]["rewards"][1]["options"]},
    ]
    assert report["reward_weights"] == [1.0, 0.5]
    assert report["trl_config"]["reward_weights"] == [1.0, 0.5]
    assert report["reference"] == "base model with the adapter disabled"
    # The adaptive KL coefficient ran: KL 0 < target at step 1, so beta went down.
    assert report["target_kl"] == 0.01
    first = next(e for e in run["trainer"].state.log_history if "beta_next" in e)
    assert first["beta"] == 0.04 and first["beta_next"] < 0.04
    assert report["precision"] == {"bf16": False, "fp16": False, "gradient_checkpointing": False}
    after = _lora(run["trainer"].model, "lora_")
    moved = [n for n in after if not torch.equal(after[n], run["before"][n])]
    # LoRA B starts at zero; with non-zero advantages every B matrix moves.
    assert all(n in moved for n in after if "lora_B" in n)
    base_after = {n: p for n, p in run["trainer"].model.named_parameters() if "lora_" not in n}
    assert all(torch.equal(base_after[n], run["base_before"][n]) for n in base_after)


def test_report_holds_reward_and_advantage_statistics(run: Any) -> None:
    report = run["report"]
    stats = report["reward_stats"]
    history = report["reward_history"]
    assert [e["step"] for e in history] == [1, 2]
    for key in (
        "reward",
        "reward_std",
        "rewards/accuracy/mean",
        "rewards/judge/mean",
        "rewards/judge/std",
        "frac_reward_zero_std",
        "advantages/mean",
        "advantages/std",
        "advantages/abs_mean",
        "advantages/frac_zero",
        "kl",
        "completions/mean_length",
    ):
        assert key in stats, key
        assert math.isfinite(stats[key]["mean"]), key
    # A random tiny model never states a GSM8K answer; the judge's scores lie in [0, 1].
    assert stats["rewards/accuracy/mean"]["mean"] == 0.0
    assert 0.0 < stats["rewards/judge/mean"]["mean"] < 1.0
    assert stats["reward"]["mean"] == pytest.approx(0.5 * stats["rewards/judge/mean"]["mean"])
    # The judge's scores differ within every group: standardised advantages, none zero.
    assert stats["rewards/judge/std"]["mean"] > 0
    assert stats["advantages/frac_zero"]["mean"] == 0.0
    assert stats["advantages/mean"]["mean"] == pytest.approx(0.0, abs=1e-3)
    # Divided by (group std + 1e-4): at most 1, less when the judge's scores differ little.
    assert 0.0 < stats["advantages/std"]["mean"] <= 1.0
    assert stats["kl"]["first"] == 0.0  # step 1: policy == reference
    assert stats["completions/mean_length"]["first"] <= 16
    on_disk = json.loads((run["out"] / "prefdata-train.json").read_text())
    assert on_disk["reward_stats"] == stats and on_disk["monitor"] == report["monitor"]


def test_monitor_summary_and_held_out_checks_are_in_the_report(run: Any) -> None:
    monitor = run["report"]["monitor"]
    assert monitor["status"] in ("ok", "warn") and not monitor["stopped"]
    scores = monitor["checks"]["judge"]["scores"]
    assert [s["step"] for s in scores] == [0, 1, 2]  # at the start, then every step
    assert all(s["score"] == 0.0 for s in scores)
    assert monitor["checks"]["kl"]["max"] >= 0.0
    assert monitor["checks"]["length"]["last"] <= 16


def test_adapter_saves_and_reloads(run: Any, tiny: Path) -> None:
    from peft import PeftModel

    from prefdata.models import load

    out = run["out"]
    assert (out / "adapter_model.safetensors").is_file() and (out / "recipe.yaml").is_file()
    base, tokenizer = load(tiny)
    reloaded = PeftModel.from_pretrained(base, str(out))
    trained = dict(run["trainer"].model.named_parameters())
    names = [n for n, _ in reloaded.named_parameters() if "lora_" in n]
    assert names
    for name, param in reloaded.named_parameters():
        if "lora_" in name:
            assert torch.equal(param, trained[name]), name
    ids = tokenizer("Janet has 3 eggs", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        tuned = reloaded(input_ids=ids).logits
        with reloaded.disable_adapter():
            plain = reloaded(input_ids=ids).logits
    assert not torch.allclose(tuned, plain)
    saved = load_recipe("grpo", out / "recipe.yaml")
    assert saved.trl["reward_weights"] == [1.0, 0.5] and saved.trl["num_generations"] == 8


# ---- refusals and data ------------------------------------------------------------------


def test_small_groups_are_refused_with_the_reason(
    tiny: Path, gsm8k_prompts: pl.DataFrame, tmp_path: Path
) -> None:
    small = grpo_recipe(num_generations=4, per_device_train_batch_size=4)
    with pytest.raises(RecipeError, match=r"num_generations=4 is below 8") as err:
        prepare("grpo", recipe=small, data=gsm8k_prompts, model=tiny, out=tmp_path)
    assert "--allow-small-groups" in str(err.value)
    assert "all-equal" in str(err.value)
    allowed = load_recipe("grpo", small, overrides=["prefdata.allow_small_groups=true"])
    assert check_group_size(allowed) == 4


def test_accuracy_needs_answers_and_pairs_give_their_prompts(
    tiny: Path, hh_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match="accuracy reward needs a reference answer column"):
        prepare("grpo", recipe=grpo_recipe(), data=hh_pairs, model=tiny, out=tmp_path)
    # Three more pairs on prompts already there: each prompt is trained once.
    again = hh_pairs.head(3).with_columns(
        pl.col("chosen") + " (again)", pl.col("pair_id") + "-again"
    )
    doubled = pl.concat([hh_pairs, again])
    prepared = prepare(
        "grpo",
        recipe=grpo_recipe(beta=0.0, prefdata={"rewards": [{"name": "format"}]}),
        data=doubled,
        model=tiny,
        out=tmp_path,
    )
    report = prepared.report
    assert report["data_contract"] == "pairs"
    assert report["prompts"] == hh_pairs["prompt_id"].n_unique()
    assert report["reference"].startswith("none (beta = 0")
    assert prepared.trainer.ref_model is None
    assert set(prepared.trainer.train_dataset.column_names) == {"prompt", "prompt_id"}


def test_adaptive_kl_needs_a_kl_term(
    tiny: Path, gsm8k_prompts: pl.DataFrame, tmp_path: Path
) -> None:
    recipe = grpo_recipe(beta=0.0, prefdata={"target_kl": 0.05})
    with pytest.raises(RecipeError, match="needs beta > 0"):
        prepare("grpo", recipe=recipe, data=gsm8k_prompts, model=tiny, out=tmp_path)


def test_full_finetune_with_kl_gets_a_frozen_reference(
    tiny: Path, gsm8k_prompts: pl.DataFrame, tmp_path: Path
) -> None:
    from prefdata.train.recipe import TrainingError
    from prefdata.train.reference import check_reference_frozen

    prepared = prepare(
        "grpo",
        recipe=grpo_recipe(prefdata={"full_finetune": True}),
        data=gsm8k_prompts,
        model=tiny,
        out=tmp_path,
    )
    trainer = prepared.trainer
    assert prepared.report["reference"] == "separate frozen model"
    assert prepared.report["reference_parameters"] == prepared.report["trainable_parameters"]
    ref = trainer.accelerator.unwrap_model(trainer.ref_model)
    next(iter(ref.parameters())).requires_grad_(True)
    with pytest.raises(TrainingError, match="trainable parameter"):
        check_reference_frozen(trainer)


def test_recipe_file_sections_are_valid() -> None:
    from prefdata.train.monitor import monitor_settings
    from prefdata.train.rewards import build_rewards

    path = builtin_recipe("grpo")
    raw = yaml.safe_load(path.read_text())
    resolved = load_recipe("grpo", path)
    rewards = build_rewards(resolved.prefdata["rewards"])
    assert rewards.names == ["accuracy"] and rewards.weights == [1.0]
    settings = monitor_settings(resolved.prefdata["monitor"])
    assert (
        settings["enabled"] and settings["length_warn"] == raw["prefdata"]["monitor"]["length_warn"]
    )
    assert resolved.trl["num_generations"] == 8 and resolved.prefdata["allow_small_groups"] is False
    with pytest.raises(RecipeError, match="unknown GRPO config key 'num_generation'"):
        load_recipe("grpo", {"num_generation": 8})


# ---- the monitor in a real run, and the CLI ------------------------------------------------


@pytest.mark.slow
def test_monitor_stops_a_real_run_when_kl_crosses_its_limit(
    tiny: Path, gsm8k_prompts: pl.DataFrame, tmp_path: Path
) -> None:
    # KL is exactly 0 at step 1 (policy == reference) and positive once the adapter moved:
    # a limit of 1e-8 nats stops the run at step 2 of 4, and the model is still saved.
    recipe = grpo_recipe(
        max_steps=4,
        max_completion_length=8,
        prefdata={
            "rewards": [_judge(tiny, tmp_path / "calls.sqlite", weight=1.0)],
            "monitor": {"kl_warn": 1e-9, "kl_stop": 1e-8, "patience": 1, "window": 1},
        },
    )
    report = prepare("grpo", recipe=recipe, data=gsm8k_prompts, model=tiny, out=tmp_path).fit(
        tmp_path
    )
    monitor = report["monitor"]
    assert report["steps"] == 2
    assert monitor["stopped"] and monitor["status"] == "stopped"
    assert "KL to the reference" in monitor["stop_reason"]
    # Eight-token completions sit at the cap, so the length_cap watch warns too.
    kl_alerts = [(a["level"], a["step"]) for a in monitor["alerts"] if a["signal"] == "kl"]
    assert kl_alerts == [("warn", 2), ("stop", 2)]
    assert any("monitor step 2" in w for w in report["warnings"])
    assert (tmp_path / "adapter_model.safetensors").is_file()


def test_cli_train_grpo_end_to_end(tiny: Path, gsm8k_prompts: pl.DataFrame, tmp_path: Path) -> None:
    from prefdata.cli import app

    data = tmp_path / "prompts.parquet"
    gsm8k_prompts.head(4).write_parquet(data)
    out = tmp_path / "run"
    args = [
        "train",
        "grpo",
        "max_steps=1",
        "num_generations=4",
        "per_device_train_batch_size=4",
        "gradient_accumulation_steps=1",
        "max_completion_length=8",
        "save_strategy=no",
        "logging_steps=1",
        "peft.r=4",
        "--recipe",
        str(builtin_recipe("grpo")),
        "--data",
        str(data),
        "--model",
        str(tiny),
        "-o",
        str(out),
    ]
    runner = CliRunner()
    refused = runner.invoke(app, args)
    assert refused.exit_code != 0 and "num_generations=4 is below 8" in refused.output
    assert not (out / "recipe.yaml").exists()
    result = runner.invoke(app, [*args, "--allow-small-groups"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "prefdata-train.json").read_text())
    assert report["steps"] == 1 and report["num_generations"] == 4
    assert report["recipe"]["prefdata"]["allow_small_groups"] is True
    assert any("below 8" in w for w in report["warnings"])
    assert report["reward_stats"]["rewards/accuracy/mean"]["first"] == 0.0
    assert (out / "adapter_model.safetensors").is_file()


def test_prompt_token_limit_applies_to_training_and_eval_prompts(
    tiny: Path, gsm8k_prompts: pl.DataFrame, tmp_path: Path
) -> None:
    from prefdata.models.loader import load_tokenizer
    from prefdata.train.data import token_ids

    tokenizer = load_tokenizer(str(tiny))
    lengths = [
        len(token_ids(tokenizer.apply_chat_template(list(p), add_generation_prompt=True)))
        for p in gsm8k_prompts["prompt"].to_list()
    ]
    limit = sorted(lengths)[len(lengths) // 2]
    over = sum(n > limit for n in lengths)
    assert 0 < over < len(lengths)
    # Monitor off: all 8 training prompts count; eval_data is the other 8.
    recipe = grpo_recipe(prefdata={"max_prompt_tokens": limit, "monitor": {"enabled": False}})
    train_rows, eval_rows = gsm8k_prompts.head(8), gsm8k_prompts.tail(8)
    prepared = prepare(
        "grpo", recipe=recipe, data=train_rows, eval_data=eval_rows, model=tiny, out=tmp_path
    )
    report = prepared.report
    assert report["dropped_prompt_too_long"] == sum(n > limit for n in lengths[:8])
    assert report["dropped_eval_prompt_too_long"] == sum(n > limit for n in lengths[8:])
    assert report["dropped_prompt_too_long"] + report["dropped_eval_prompt_too_long"] == over
    assert report["prompts"] == 8 - report["dropped_prompt_too_long"]
    assert len(prepared.trainer.eval_dataset) == 8 - report["dropped_eval_prompt_too_long"]
    with pytest.raises(InputError, match=r"every one of the 16 prompts is longer than .*=5 "):
        prepare(
            "grpo",
            recipe=grpo_recipe(),
            data=gsm8k_prompts,
            model=tiny,
            out=tmp_path,
            overrides=["prefdata.max_prompt_tokens=5"],
        )
    with pytest.raises(RecipeError, match="max_prompt_tokens is a positive integer or null"):
        prepare(
            "grpo",
            recipe=grpo_recipe(),
            data=gsm8k_prompts,
            model=tiny,
            out=tmp_path,
            overrides=["prefdata.max_prompt_tokens=0"],
        )


# ---- generation by vLLM (issue 18) -----------------------------------------------------------


def test_vllm_generation_is_passed_to_trl_and_refused_where_it_cannot_run(
    tiny: Path, gsm8k_prompts: pl.DataFrame, tmp_path: Path
) -> None:
    import importlib.util

    from prefdata.errors import MissingExtraError, TrainingError
    from prefdata.train.grpo import SPEC, check_vllm_generation
    from prefdata.train.hardware import Hardware
    from prefdata.train.recipe import build_config

    served = load_recipe("grpo", grpo_recipe(use_vllm=True, vllm_mode="server"))
    config = build_config(served, SPEC, tmp_path / "out")
    # TRL's own fields, unchanged: TRL's trainer starts the vLLM client from them
    assert config.use_vllm is True and config.vllm_mode == "server"
    with pytest.raises(RecipeError, match="vllm_mode must be one of colocate, server"):
        check_vllm_generation(
            load_recipe("grpo", grpo_recipe(use_vllm=True, vllm_mode="remote")),
            Hardware("cpu", "cpu", False, 1, None),
        )
    if importlib.util.find_spec("vllm") is None:  # the main venv: vLLM lives in .venv-vllm
        with pytest.raises(MissingExtraError, match=r"pip install 'prefdata\[vllm\]'"):
            prepare(
                "grpo",
                recipe=grpo_recipe(use_vllm=True),
                data=gsm8k_prompts,
                model=tiny,
                out=tmp_path / "run",
            )
    else:
        with pytest.raises(
            TrainingError, match="vllm_mode: colocate runs vLLM on the training GPU"
        ):
            check_vllm_generation(
                load_recipe("grpo", grpo_recipe(use_vllm=True)),
                Hardware("cpu", "cpu", False, 1, None),
            )
    # without use_vllm nothing changes
    check_vllm_generation(
        load_recipe("grpo", grpo_recipe()), Hardware("cpu", "cpu", False, 1, None)
    )

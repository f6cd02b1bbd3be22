"""Recipes, overrides, hardware precision and the small pure pieces of the training package.

No model is loaded here: these run in about a second.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import yaml

from prefdata.train import METHODS, load_recipe, spec
from prefdata.train.dpo import (
    ConfidenceWeights,
    _apply_label_noise,
    dpo_loss_types,
    label_noise_rate,
)
from prefdata.train.hardware import Hardware
from prefdata.train.kto import balance_weights, weighted_ratio
from prefdata.train.launch import accelerate_command
from prefdata.train.recipe import (
    RECIPES_DIR,
    RecipeError,
    apply_overrides,
    parse_override,
    read_recipe,
    resolve_recipe,
)
from prefdata.train.reward import margins

REPO = Path(__file__).resolve().parents[2]
TRAIN = RECIPES_DIR
ACCELERATE = REPO / "train" / "accelerate"
CPU = Hardware("cpu", "CPU", bf16=False, devices=1, memory_bytes=None)
H100 = Hardware("cuda", "NVIDIA H100", bf16=True, devices=1, memory_bytes=80 * 2**30)
T4 = Hardware("cuda", "Tesla T4", bf16=False, devices=1, memory_bytes=15 * 2**30)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "rlhf"])
def test_each_recipe_file_loads_and_validates(method: str) -> None:
    path = TRAIN / f"{method}.yaml"
    raw = yaml.safe_load(path.read_text())
    assert raw["method"] == method
    resolved = load_recipe(method, path)  # builds TRL's config too: its checks run
    assert resolved.method == method
    # TRL fields pass through unchanged (types aside: YAML's 5.0e-5 stays a float).
    # GRPO / RLOO have no max_length (prompts are not cut); theirs is the completions'.
    length = "max_completion_length" if method in ("grpo", "rloo") else "max_length"
    for key in ("learning_rate", "per_device_train_batch_size", length, "seed"):
        assert resolved.trl[key] == raw[key], key
    assert isinstance(resolved.trl["learning_rate"], float)
    assert resolved.peft["target_modules"] == "all-linear"
    assert resolved.prefdata["full_finetune"] is False
    # The recipes leave precision to prefdata; on this CPU that is fp32 without checkpointing.
    assert "bf16" not in raw
    assert resolved.trl["bf16"] is False and resolved.trl["fp16"] is False


def test_rlhf_recipe_file_resolves_each_stage_from_its_own_recipe(tmp_path: Path) -> None:
    from prefdata.train.recipe import build_config
    from prefdata.train.rlhf_recipe import stage_recipe

    path = TRAIN / "rlhf.yaml"
    raw = yaml.safe_load(path.read_text())
    assert raw["method"] == "rlhf"
    resolved = load_recipe("rlhf", path)  # every stage's recipe and TRL config is checked
    assert resolved.trl == {"seed": 42, "logging_steps": 10}
    stages = resolved.prefdata["stages"]
    files = {"sft": "sft.yaml", "reward": "reward.yaml", "rl": "rloo.yaml"}
    for name, file in files.items():
        # Stage recipe paths are relative to the rlhf recipe's folder.
        assert stages[name]["recipe"] == str(TRAIN / file)
        own = yaml.safe_load((TRAIN / file).read_text())
        stage, method = stage_recipe(resolved, name, hardware=CPU, reward_model=tmp_path)
        assert method.name == own["method"]
        overrides = raw["prefdata"]["stages"][name]["overrides"] or {}
        for key in ("learning_rate", "per_device_train_batch_size", "num_train_epochs"):
            assert stage.trl[key] == overrides.get(key, own[key]), (name, key)
        assert stage.trl["seed"] == 42 and stage.trl["logging_steps"] == 10  # shared
        assert stage.trl["bf16"] is False  # each stage picks its precision (CPU: fp32)
        config = build_config(stage, method, tmp_path / name)
        assert config.seed == 42
    rl, _ = stage_recipe(resolved, "rl", hardware=CPU, reward_model=tmp_path / "rm")
    assert rl.trl["beta"] == 0.05 and rl.trl["max_completion_length"] == 128
    # The RL reward is always the stage's reward model (rloo.yaml's accuracy reward is not).
    assert rl.prefdata["rewards"] == [
        {
            "name": "reward_model",
            "weight": 1.0,
            "options": {"batch_size": 8, "path": str(tmp_path / "rm")},
        }
    ]


def test_rlhf_overrides_go_to_their_stage(tmp_path: Path) -> None:
    from prefdata.train.rlhf_recipe import split_overrides, stage_recipe

    shared, staged = split_overrides(["seed=7", "sft.max_steps=3", "rl.peft.r=8", "rl.beta=0.2"])
    assert shared == ["seed=7"]
    assert staged == {"sft": ["max_steps=3"], "reward": [], "rl": ["peft.r=8", "beta=0.2"]}
    resolved = load_recipe(
        "rlhf", TRAIN / "rlhf.yaml", overrides=["seed=7", "sft.max_steps=3", "rl.beta=0.2"]
    )
    sft, _ = stage_recipe(resolved, "sft", hardware=CPU, reward_model=None)
    reward, _ = stage_recipe(resolved, "reward", hardware=CPU, reward_model=None)
    rl, _ = stage_recipe(resolved, "rl", hardware=CPU, reward_model=tmp_path)
    assert (sft.trl["seed"], reward.trl["seed"], rl.trl["seed"]) == (7, 7, 7)
    assert sft.trl["max_steps"] == 3 and "max_steps" not in reward.trl
    assert rl.trl["beta"] == 0.2  # the command line wins over the stage's own overrides
    with pytest.raises(RecipeError, match=r"needs a KL term.*beta > 0"):
        load_recipe("rlhf", TRAIN / "rlhf.yaml", overrides=["rl.beta=0"])
    with pytest.raises(RecipeError, match="for 'rloo', not 'grpo'"):
        load_recipe("rlhf", TRAIN / "rlhf.yaml", overrides=["prefdata.rl_method=grpo"])
    with pytest.raises(RecipeError, match=r"TRL 1\.16 has no PPO"):
        load_recipe("rlhf", {"prefdata": {"rl_method": "ppo"}})
    with pytest.raises(RecipeError, match=r"unknown rlhf stage key 'prefdata\.stages\.ppo'"):
        load_recipe("rlhf", {"prefdata": {"stages": {"ppo": {}}}})
    # A stage-only TRL field at the top level is refused: it is not shared by every stage.
    with pytest.raises(RecipeError, match="unknown shared TrainingArguments key 'max_length'"):
        load_recipe("rlhf", {"max_length": 512})


def test_rlhf_heldout_split_is_by_prompt_and_stable() -> None:
    from prefdata.train.rlhf_recipe import heldout_split

    pairs = pl.DataFrame(
        {"prompt_id": [f"p{i // 3}" for i in range(30)], "pair_id": [str(i) for i in range(30)]}
    )
    train, held = heldout_split(pairs, 0.2)
    assert held["prompt_id"].n_unique() == 2 and train["prompt_id"].n_unique() == 8
    assert not set(held["prompt_id"]) & set(train["prompt_id"])
    assert held.height == 6 and train.height + held.height == 30
    again, _ = heldout_split(pairs.reverse(), 0.2)
    assert set(again["prompt_id"]) == set(train["prompt_id"])
    assert heldout_split(pairs, 0.0)[1].height == 0
    assert heldout_split(pairs.head(3), 0.5)[1].height == 0  # one prompt: nothing to hold out


def test_accelerate_configs_parse_and_name_their_backend() -> None:
    kinds = {
        name: yaml.safe_load((ACCELERATE / f"{name}.yaml").read_text())
        for name in ("ddp", "zero3", "fsdp")
    }
    assert kinds["ddp"]["distributed_type"] == "MULTI_GPU"
    assert kinds["zero3"]["distributed_type"] == "DEEPSPEED"
    assert kinds["zero3"]["deepspeed_config"]["zero_stage"] == 3
    assert kinds["fsdp"]["distributed_type"] == "FSDP"
    assert kinds["fsdp"]["fsdp_config"]["fsdp_version"] == 2


def test_overrides_address_the_three_parts_and_read_yaml_values() -> None:
    base = read_recipe(TRAIN / "dpo.yaml", method="dpo")
    changed = apply_overrides(
        base,
        [
            "beta=0.25",
            "peft.r=8",
            "prefdata.full_finetune=true",
            "loss_type=[sigmoid, sft]",
            "loss_weights=[1.0, 0.5]",
            "learning_rate=1e-5",
        ],
    )
    resolved = resolve_recipe(changed, spec("dpo"), hardware=CPU)
    assert resolved.trl["beta"] == 0.25
    assert resolved.peft["r"] == 8
    assert resolved.prefdata["full_finetune"] is True
    assert resolved.trl["loss_type"] == ["sigmoid", "sft"]
    # PyYAML reads 1e-5 as a string (YAML 1.1); the field's type makes it a float again.
    assert resolved.trl["learning_rate"] == 1e-5
    assert {"beta", "loss_type", "learning_rate"} <= resolved.user_fields
    assert base.trl["beta"] == 0.1  # the original is untouched
    assert parse_override("report_to=") == ("report_to", None)
    with pytest.raises(RecipeError, match="key=value"):
        parse_override("beta")


def test_unknown_keys_are_refused_with_a_suggestion() -> None:
    with pytest.raises(RecipeError, match=r"'betta'.*did you mean beta"):
        load_recipe("dpo", {"betta": 0.1})
    with pytest.raises(RecipeError, match=r"prefdata\.confidence_weigting"):
        load_recipe("dpo", {"prefdata": {"confidence_weigting": "linear"}})
    with pytest.raises(RecipeError, match=r"peft\.rank"):
        load_recipe("dpo", {"peft": {"rank": 8}})
    with pytest.raises(RecipeError, match="for 'kto', not 'dpo'"):
        load_recipe("dpo", TRAIN / "kto.yaml")


def test_trl_checks_run_when_the_recipe_loads() -> None:
    # TRL's DPOConfig refuses loss_weights whose length differs from loss_type's.
    with pytest.raises(RecipeError, match=r"TRL rejected.*loss_weights"):
        load_recipe("dpo", {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]})


def test_precision_follows_the_hardware_unless_the_recipe_sets_it() -> None:
    dpo = spec("dpo")
    cpu = resolve_recipe(read_recipe({}, method="dpo"), dpo, hardware=CPU)
    assert (cpu.trl["bf16"], cpu.trl["fp16"], cpu.trl["activation_checkpointing"]) == (
        False,
        False,
        False,
    )
    assert cpu.trl["report_to"] == "none"
    assert not cpu.warnings
    h100 = resolve_recipe(read_recipe({}, method="dpo"), dpo, hardware=H100)
    assert (h100.trl["bf16"], h100.trl["fp16"], h100.trl["activation_checkpointing"]) == (
        True,
        False,
        True,
    )
    t4 = resolve_recipe(read_recipe({}, method="dpo"), dpo, hardware=T4)
    assert (t4.trl["bf16"], t4.trl["fp16"]) == (False, True)
    # A choice the recipe makes is kept, with a warning when it is a known trap.
    forced = resolve_recipe(read_recipe({"bf16": True}, method="dpo"), dpo, hardware=CPU)
    assert forced.trl["bf16"] is True
    assert any("bf16=true on cpu" in w for w in forced.warnings)
    with pytest.raises(RecipeError, match="does not support bf16"):
        resolve_recipe(read_recipe({"bf16": True}, method="dpo"), dpo, hardware=T4)
    kept = resolve_recipe(
        read_recipe({"gradient_checkpointing": True}, method="dpo"), dpo, hardware=CPU
    )
    assert kept.trl["gradient_checkpointing"] is True
    assert "activation_checkpointing" not in kept.trl


def test_dpo_offers_the_loss_types_the_issue_names() -> None:
    offered = dpo_loss_types()
    assert {"sigmoid", "ipo", "robust", "hinge"} <= set(offered)
    assert len(offered) >= 10


def test_label_noise_from_a_number_or_an_audit_rate_report(tmp_path: Path) -> None:
    from prefdata.quality.sample import mislabel_rate

    assert label_noise_rate(None) is None
    assert label_noise_rate(0.12) == 0.12
    reviewed = pl.DataFrame({"mislabeled": [True] * 3 + [False] * 17 + [None] * 5})
    report = mislabel_rate(reviewed).report
    path = tmp_path / "rate.json"
    path.write_text(json.dumps(report))
    assert label_noise_rate(str(path)) == pytest.approx(3 / 20)
    with pytest.raises(RecipeError, match=r"\[0, 0.5\)"):
        label_noise_rate(0.5)
    nothing = mislabel_rate(
        pl.DataFrame({"mislabeled": [None, None]}, schema={"mislabeled": pl.Boolean})
    ).report
    path.write_text(json.dumps(nothing))
    with pytest.raises(RecipeError, match="no `rate`"):
        label_noise_rate(path)


def test_label_noise_becomes_the_robust_flip_rate() -> None:
    dpo = spec("dpo")
    robust = resolve_recipe(
        read_recipe({"loss_type": "robust", "prefdata": {"label_noise": 0.15}}, method="dpo"),
        dpo,
        hardware=CPU,
    )
    assert _apply_label_noise(robust) == 0.15
    assert robust.trl["label_smoothing"] == 0.15
    explicit = resolve_recipe(
        read_recipe(
            {"loss_type": "robust", "label_smoothing": 0.05, "prefdata": {"label_noise": 0.15}},
            method="dpo",
        ),
        dpo,
        hardware=CPU,
    )
    _apply_label_noise(explicit)
    assert explicit.trl["label_smoothing"] == 0.05
    assert any("kept" in note for note in explicit.notes)
    sigmoid = resolve_recipe(
        read_recipe({"prefdata": {"label_noise": 0.15}}, method="dpo"), dpo, hardware=CPU
    )
    _apply_label_noise(sigmoid)
    assert "label_smoothing" not in sigmoid.trl
    assert any("no effect" in w for w in sigmoid.warnings)


def test_confidence_weights() -> None:
    linear = ConfidenceWeights("linear", missing=1.0)
    assert [linear(c) for c in (0.9, 0.5, None)] == [0.9, 0.5, 1.0]
    centered = ConfidenceWeights("centered", missing=0.5)
    assert [centered(c) for c in (0.9, 0.5, 0.3, None)] == pytest.approx([0.8, 0.0, 0.0, 0.5])
    assert ConfidenceWeights("none")(0.2) == 1.0
    settings = {
        "confidence_weighting": "linear",
        "missing_confidence_weight": 1.0,
        "normalize_weights": True,
    }
    normalised = ConfidenceWeights.for_table([0.6, 1.0, None], settings)
    assert sum(normalised(c) for c in (0.6, 1.0, None)) / 3 == pytest.approx(1.0)
    assert normalised(0.6) / normalised(1.0) == pytest.approx(0.6)
    with pytest.raises(RecipeError, match="confidence_weighting"):
        ConfidenceWeights("squared")


def test_reward_margin_is_the_logit_of_confidence() -> None:
    pairs = pl.DataFrame(
        {"confidence": [0.5, 0.75, 0.99, 0.999, None, 0.3], "margin": [1.0, 2.0, None, 0, 3, 1]}
    )
    settings = {"margin_from": "confidence", "margin_scale": 1.0, "max_confidence": 0.99}
    got = margins(pairs, settings)
    assert got is not None
    expected = [0.0, math.log(3), math.log(99), math.log(99), 0.0, 0.0]
    assert got.to_list() == pytest.approx(expected)
    by_column = margins(pairs, {**settings, "margin_from": "margin", "margin_scale": 0.5})
    assert by_column is not None
    assert by_column.to_list() == [0.5, 1.0, 0.0, 0.0, 1.5, 0.5]
    assert margins(pairs, {**settings, "margin_from": "none"}) is None


def test_kto_balance_follows_trl_advice() -> None:
    # OASST-like counts: many more thumbs up than down.
    dw, uw = balance_weights(334, 96)
    assert dw == 1.0
    ratio = weighted_ratio(334, 96, dw, uw)
    assert ratio is not None and 1.0 <= ratio <= 4 / 3
    # TRL's own check (KTOTrainer._prepare_dataset): the undesirable weight, rounded bounds.
    lo = round(334 * dw / 96 / 1.33, 2)
    hi = round(334 * dw / 96, 2)
    assert lo <= uw <= hi
    dw, uw = balance_weights(20, 80)
    assert uw == 1.0 and 1.0 <= 20 * dw / 80 <= 4 / 3
    assert balance_weights(50, 50) == (1.0, 1.0)
    assert balance_weights(0, 10) == (1.0, 1.0)


def test_accelerate_command_runs_this_package_under_accelerate(tmp_path: Path) -> None:
    # A CPU config: the GPU configs are refused on this machine (test_launch checks that).
    config = tmp_path / "cpu.yaml"
    config.write_text("distributed_type: MULTI_CPU\nnum_processes: 2\nuse_cpu: true\n")
    command = accelerate_command(
        "dpo",
        recipe="train/dpo.yaml",
        data="pairs.parquet",
        out="runs/dpo",
        accelerate_config=config,
        accelerate_args=["--num_machines", "2", "--machine_rank", "1"],
        overrides=["beta=0.2"],
    )
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[command.index("--config_file") + 1].endswith("cpu.yaml")
    module = command.index("prefdata.train")
    assert command[module - 1] == "-m" and command[module + 1] == "dpo"
    assert command.index("--machine_rank") < module
    assert command[-1] == "beta=0.2"
    with pytest.raises(Exception, match="no such accelerate config"):
        accelerate_command("dpo", recipe="r", data="d", out="o", accelerate_config="missing.yaml")


def test_a_model_that_cannot_fit_is_refused_before_loading(tiny: Path) -> None:
    from prefdata.train.hardware import check_fits, estimate_memory
    from prefdata.train.recipe import TrainingError

    lora = estimate_memory(
        str(tiny), full_finetune=False, dtype="float32", separate_reference=False
    )
    full = estimate_memory(str(tiny), full_finetune=True, dtype="float32", separate_reference=True)
    n = lora["parameters"]
    assert n == full["parameters"] and n > 1_000_000
    assert lora["bytes_lower_bound"] == 4 * n  # frozen fp32 weights
    assert full["bytes_lower_bound"] == (4 + 4 + 8 + 4) * n  # + grads, AdamW moments, reference
    small = Hardware("cuda", "a small GPU", bf16=True, devices=1, memory_bytes=8 * n)
    check_fits(lora, small, source="tiny")
    with pytest.raises(TrainingError, match=r"does not fit.*LoRA.*zero3"):
        check_fits(full, small, source="tiny")


def test_out_of_memory_during_training_comes_back_with_advice() -> None:
    from prefdata.train.hardware import friendly_oom
    from prefdata.train.recipe import TrainingError

    oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with (
        pytest.raises(TrainingError, match=r"out of memory.*per_device_train_batch_size"),
        friendly_oom(),
    ):
        raise oom
    with pytest.raises(RuntimeError, match="shape mismatch"), friendly_oom():
        raise RuntimeError("shape mismatch")

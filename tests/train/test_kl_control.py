"""The adaptive KL controller: its update rule on synthetic KL sequences, and a real tiny GRPO
(and RLOO) run in which the callback changes the beta TRL's loss (rewards) actually use."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from prefdata.train.kl_control import (
    KL_CONTROL_DEFAULTS,
    MAX_ERROR,
    AdaptiveKLController,
    attach_adaptive_kl,
    attach_kl_control,
)
from prefdata.train.recipe import RecipeError

# --------------------------------------------------------------------------------------------
# The controller alone
# --------------------------------------------------------------------------------------------


def test_beta_rises_above_target_and_falls_below() -> None:
    c = AdaptiveKLController(0.1, target=0.05, horizon=1000)
    # 10% over target, 100 completions: beta * (1 + 0.1 * 0.1).
    assert c.update(0.055, 100) == pytest.approx(0.1 * 1.01)
    # 40% under target: the error is clipped to -0.2.
    assert c.update(0.03, 100) == pytest.approx(0.1 * 1.01 * 0.98)
    # Far above target: clipped to +0.2 however far.
    before = c.beta
    assert c.update(50.0, 100) == pytest.approx(before * 1.02)
    # On target: unchanged.
    assert c.update(0.05, 100) == pytest.approx(before * 1.02)
    assert [h["beta_next"] > h["beta"] for h in c.history] == [True, False, True, False]


def test_each_step_is_bounded_and_beta_stays_positive() -> None:
    c = AdaptiveKLController(1.0, target=0.1, horizon=10)
    for kl in (0.0, 1e9, 0.0, 0.2, 0.0):
        before = c.beta
        # n >> horizon: the step is capped at the clipped error itself (+-20%).
        after = c.update(kl, 10_000)
        assert 1 - MAX_ERROR - 1e-12 <= after / before <= 1 + MAX_ERROR + 1e-12
        assert after > 0
    low = AdaptiveKLController(1.0, target=0.1, horizon=10)
    for _ in range(200):
        low.update(0.0, 10_000)
    assert 0 < low.beta == pytest.approx(0.8**200)
    # Nothing measured (TRL logs None / NaN): beta stays.
    assert c.update(float("nan"), 100) == c.beta


def test_controller_drives_a_responsive_kl_to_its_target() -> None:
    # A stand-in for the policy: the KL it drifts to is inversely proportional to beta, so
    # KL == target exactly at beta = 0.5 / 5 = 0.1.
    c = AdaptiveKLController(1.0, target=5.0, horizon=1000)
    kls = []
    for _ in range(400):
        kl = 0.5 / c.beta
        kls.append(kl)
        c.update(kl, 100)
    assert kls[0] == pytest.approx(0.5)  # starts far below target: beta falls
    assert c.beta == pytest.approx(0.1, rel=0.02)
    assert abs(kls[-1] - 5.0) / 5.0 < 0.02


def test_settings_are_checked() -> None:
    with pytest.raises(RecipeError, match="target_kl > 0"):
        AdaptiveKLController(0.1, target=0.0, horizon=100)
    with pytest.raises(RecipeError, match="beta=0 keeps no reference"):
        AdaptiveKLController(0.0, target=0.1, horizon=100)
    with pytest.raises(RecipeError, match="kl_horizon > 0"):
        AdaptiveKLController(0.1, target=0.1, horizon=-5)
    assert KL_CONTROL_DEFAULTS == {"target_kl": None, "kl_horizon": 10000}
    assert attach_kl_control(object(), KL_CONTROL_DEFAULTS) is None
    with pytest.raises(RecipeError, match="has no `beta`"):
        attach_kl_control(object(), {"target_kl": 0.1, "kl_horizon": 100})
    with pytest.raises(RecipeError, match=r"prefdata\.target_kl must be a number"):
        attach_kl_control(object(), {"target_kl": "lots", "kl_horizon": 100})


# --------------------------------------------------------------------------------------------
# A real GRPO run on the tiny model
# --------------------------------------------------------------------------------------------

PROMPTS = ["What is 2+2?", "Name a colour.", "Say hello.", "Count to three."]


def _length_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    return [float(len(c[0]["content"])) for c in completions]


def _rl_run(
    trainer_name: str, tiny: Path, out: Path, spied: str, **overrides: Any
) -> dict[str, Any]:
    import datasets
    import trl

    from prefdata.models import from_pretrained, inspect_model
    from prefdata.models.loader import load_tokenizer

    config_class = getattr(trl, f"{trainer_name}Config")
    trainer_class = getattr(trl, f"{trainer_name}Trainer")
    config = config_class(
        output_dir=str(out),
        max_steps=4,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        learning_rate=5e-2,
        beta=0.1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        seed=0,
        **overrides,
    )
    dataset = datasets.Dataset.from_list(
        [{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS]
    )
    trainer = trainer_class(
        model=from_pretrained(inspect_model(tiny)),
        reward_funcs=_length_reward,
        args=config,
        train_dataset=dataset,
        processing_class=load_tokenizer(str(tiny)),
    )
    # A tiny target: step 1 measures KL 0 (policy == reference), so beta first falls, then
    # rises once training has moved the policy.
    callback = attach_kl_control(trainer, {"target_kl": 1e-4, "kl_horizon": 4})
    # Record, at the moment TRL uses beta, the value it reads (TRL's own method, wrapped).
    seen: list[float] = []
    original = getattr(trainer, spied)

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(trainer.beta)
        if spied == "_compute_loss":
            inputs.append(args[1])
        result = original(*args, **kwargs)
        if spied == "_generate_and_score_completions":
            generated.append(len(result["completion_ids"]))
        return result

    inputs: list[dict[str, Any]] = []
    generated: list[int] = []
    setattr(trainer, spied, spy)
    trainer.train()
    setattr(trainer, spied, original)
    return {
        "trainer": trainer,
        "callback": callback,
        "seen": seen,
        "inputs": inputs,
        "generated": generated,
    }


def _check_run(run: dict[str, Any]) -> None:
    trainer, history = run["trainer"], run["callback"].controller.history
    assert len(history) == 4  # one update per logged step
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-6) and history[0]["beta_next"] < 0.1
    assert any(h["beta_next"] > h["beta"] for h in history)  # KL above the tiny target
    for h in history:
        assert (h["beta_next"] > h["beta"]) == (h["kl"] > 1e-4)
        assert h["n"] == 2  # completions per optimizer step: 2 per device x 1 accumulation
    # The beta in force whenever TRL used it is the controller's latest value.
    assert run["seen"] == pytest.approx([0.1] + [h["beta_next"] for h in history[:-1]])
    assert trainer.beta == pytest.approx(history[-1]["beta_next"])
    assert trainer.args.beta == 0.1  # the config keeps the starting value
    logged = [e for e in trainer.state.log_history if "beta" in e]
    assert [e["beta"] for e in logged] == pytest.approx([h["beta"] for h in history])
    assert [e["kl"] for e in logged] == pytest.approx([h["kl"] for h in history])


def test_grpo_loss_uses_the_adapted_beta(tiny: Path, tmp_path: Path) -> None:
    import torch

    run = _rl_run("GRPO", tiny, tmp_path, "_compute_loss")
    _check_run(run)
    # GRPO's loss reads trainer.beta when it is computed: on one real batch it is affine in
    # beta with a positive slope (the KL term), so the value the callback sets is the one used.
    trainer, batch = run["trainer"], run["inputs"][-1]
    losses = {}
    with torch.no_grad():
        for beta in (0.05, 0.1, 0.3):
            trainer.beta = beta
            losses[beta] = float(trainer._compute_loss(trainer.model, batch))
    slope = (losses[0.3] - losses[0.1]) / 0.2
    assert slope > 0
    assert losses[0.1] - losses[0.05] == pytest.approx(slope * 0.05, rel=1e-3, abs=1e-9)
    assert math.isfinite(losses[0.1])


def test_rloo_rewards_use_the_adapted_beta(tiny: Path, tmp_path: Path) -> None:
    # RLOO puts beta * KL into the rewards when it scores a generation batch.
    run = _rl_run("RLOO", tiny, tmp_path, "_generate_and_score_completions")
    _check_run(run)


def test_reused_generations_count_once(tiny: Path, tmp_path: Path) -> None:
    """num_iterations = 2: TRL trains each generation batch twice; the controller's n counts
    the completions TRL generated, not the passes over them."""
    from trl import GRPOConfig, RLOOConfig

    from prefdata.train.kl_control import _completions_per_step

    for config_class in (GRPOConfig, RLOOConfig):
        args = config_class(
            output_dir=str(tmp_path),
            per_device_train_batch_size=2,
            gradient_accumulation_steps=3,
            num_generations=2,
            num_iterations=3,
            report_to="none",
            bf16=False,
        )
        assert _completions_per_step(args) == 2  # 2 x 3 trained per step, a third of them new
    run = _rl_run("GRPO", tiny, tmp_path, "_generate_and_score_completions", num_iterations=2)
    history = run["callback"].controller.history
    assert run["generated"] == [2, 2]  # 4 steps: generated at steps 1 and 3
    assert [h["n"] for h in history] == [1.0] * 4
    assert sum(h["n"] for h in history) == sum(run["generated"])


def test_attach_starts_from_the_trainers_beta(tiny: Path, tmp_path: Path) -> None:
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from prefdata.models import from_pretrained, inspect_model
    from prefdata.models.loader import load_tokenizer

    config = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        num_generations=2,
        beta=0.0,
        report_to="none",
        bf16=False,
        gradient_checkpointing=False,
    )
    trainer = GRPOTrainer(
        model=from_pretrained(inspect_model(tiny)),
        reward_funcs=_length_reward,
        args=config,
        train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in PROMPTS]),
        processing_class=load_tokenizer(str(tiny)),
    )
    # beta = 0: TRL loads no reference, so there is no KL to control.
    with pytest.raises(RecipeError, match="beta=0 keeps no reference"):
        attach_adaptive_kl(trainer, target_kl=0.1)
    trainer.beta = 0.04
    callback = attach_adaptive_kl(trainer, target_kl=0.1, horizon=100)
    assert callback.controller.beta == 0.04
    assert callback in trainer.callback_handler.callbacks

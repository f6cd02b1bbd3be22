"""An adaptive KL coefficient for on-policy RL (GRPO, RLOO): the controller of Ziegler et al.
(2019, "Fine-Tuning Language Models from Human Preferences"), also used by InstructGPT.

After every logged interval, with KL the policy-to-reference KL that TRL logged over it:

    error = clip(KL / target - 1, -0.2, 0.2)
    beta <- beta * (1 + error * n / horizon)

where n is the number of new completions generated since the last update (a generation batch
that GRPO / RLOO train on `num_iterations` times counts once). KL above target raises
beta (a stronger pull back to the reference), below target lowers it; the proportional error is
clipped, so one update moves beta by at most 20% of n / horizon. Unlike the paper, n / horizon
is capped at 1 (a short horizon or a long logging interval cannot push beta to zero or below),
so beta stays positive: TRL skips the reference model entirely at beta == 0.

Units. `target_kl` is in the units TRL logs as `kl`: the mean per-token KL over completion
tokens (TRL 1.16: GRPOTrainer logs the k3 estimate exp(r) - r - 1 with r = ref - policy
log-prob, always >= 0; RLOOTrainer logs the mean of policy - ref log-prob, which can be
negative). `kl_horizon` is in completions (10000 in the paper).

Where it acts. Both trainers read `self.beta` (the trainer attribute, copied from the config's
`beta` at construction) when they use it: GRPOTrainer adds `self.beta * per_token_kl` to the
per-token loss in `_compute_loss`; RLOOTrainer subtracts `self.beta * kl` from the rewards in
`_generate_and_score_completions`. The callback sets `trainer.beta`; `args.beta` keeps the
starting value. Each update is written into the trainer's log history as `beta` (the value in
force over the logged interval) and `beta_next`.

Recipe keys (a method's `prefdata:` section, see KL_CONTROL_DEFAULTS): `target_kl` (null = off)
and `kl_horizon`. Attach with `attach_kl_control(trainer, recipe.prefdata)` after building the
trainer, before `fit`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

from prefdata.errors import OptionError
from prefdata.train.recipe import RecipeError

__all__ = [
    "KL_CONTROL_DEFAULTS",
    "MAX_ERROR",
    "AdaptiveKLController",
    "adaptive_kl_callback_class",
    "attach_adaptive_kl",
    "attach_kl_control",
]

KL_CONTROL_DEFAULTS: dict[str, Any] = {
    # Target per-token KL (the `kl` TRL logs); null keeps beta fixed.
    "target_kl": None,
    # Completions over which beta may change by the clipped proportional error (20%).
    "kl_horizon": 10000,
}

MAX_ERROR = 0.2
"""The clip on the proportional error (Ziegler et al.)."""


class AdaptiveKLController:
    """beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * min(n / horizon, 1)).

    `beta`: the starting coefficient (> 0); `target`: the KL aimed at (> 0); `horizon`: in
    completions (> 0). `update(kl, n)` returns the new beta; `history` keeps every update.
    """

    def __init__(
        self, beta: float, target: float, horizon: float, *, max_error: float = MAX_ERROR
    ) -> None:
        for name, value in (("beta", beta), ("target_kl", target), ("kl_horizon", horizon)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                why = " (beta=0 keeps no reference model to measure KL against)"
                raise RecipeError(
                    f"the adaptive KL controller needs {name} > 0, got {value!r}"
                    + (why if name == "beta" else ""),
                    column=name if name == "beta" else f"prefdata.{name}",
                )
        if not 0 < max_error < 1:
            raise OptionError("must lie in (0, 1)", option="max_error")
        self.beta = float(beta)
        self.target = float(target)
        self.horizon = float(horizon)
        self.max_error = float(max_error)
        self.history: list[dict[str, float]] = []

    def error(self, kl: float) -> float:
        """The clipped proportional error of a measured KL."""
        raw = kl / self.target - 1.0
        return max(-self.max_error, min(self.max_error, raw))

    def update(self, kl: float, n_steps: float) -> float:
        """Move beta after `n_steps` completions whose mean KL was `kl`; returns the new beta.

        A non-finite KL (TRL logs None / NaN when nothing was measured) leaves beta alone.
        """
        if n_steps < 0:
            raise OptionError(f"must be >= 0, got {n_steps}", option="n_steps")
        if kl is None or not math.isfinite(kl):
            return self.beta
        before = self.beta
        factor = 1.0 + self.error(kl) * min(n_steps / self.horizon, 1.0)
        self.beta = before * factor
        self.history.append(
            {"kl": float(kl), "n": float(n_steps), "beta": before, "beta_next": self.beta}
        )
        return self.beta


def _completions_per_step(args: Any) -> float:
    """New completions behind one optimizer step: TRL 1.16's GRPO / RLOO batch sizes count
    completions, and per device x processes x accumulation of them are trained per optimizer
    step; with `num_iterations` > 1 each generation batch is trained that many times before the
    next is generated (generate_every = steps_per_generation * num_iterations), so only
    1 / num_iterations of them are new."""
    trained = (
        int(args.per_device_train_batch_size)
        * int(args.gradient_accumulation_steps)
        * int(getattr(args, "world_size", 1) or 1)
    )
    return trained / max(1, int(getattr(args, "num_iterations", 1) or 1))


@functools.cache
def adaptive_kl_callback_class() -> type:
    """The transformers TrainerCallback that runs an AdaptiveKLController on a trainer."""
    from transformers import TrainerCallback

    class AdaptiveKLCallback(TrainerCallback):
        """On each training log carrying `kl`: update the controller, set `trainer.beta`."""

        def __init__(self, trainer: Any, controller: AdaptiveKLController) -> None:
            self.trainer = trainer
            self.controller = controller
            self.last_step = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.last_step = int(state.global_step)
            self.trainer.beta = self.controller.beta

        def on_log(
            self,
            args: Any,
            state: Any,
            control: Any,
            logs: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> None:
            kl = (logs or {}).get("kl")  # evaluation logs carry eval_kl instead
            steps = int(state.global_step) - self.last_step
            if kl is None or steps <= 0 or not math.isfinite(kl):
                return
            used = self.trainer.beta
            new = self.controller.update(float(kl), steps * _completions_per_step(args))
            self.trainer.beta = new
            self.last_step = int(state.global_step)
            # Trainer.log stores a copy of `logs` before calling back: annotate that copy.
            if state.log_history and state.log_history[-1].get("kl") == kl:
                state.log_history[-1].update({"beta": used, "beta_next": new})

    return AdaptiveKLCallback


def attach_adaptive_kl(trainer: Any, *, target_kl: float, horizon: float = 10000) -> Any:
    """Add an adaptive KL callback to a TRL GRPOTrainer / RLOOTrainer (anything with `beta`
    that logs `kl`), starting from the trainer's beta. Returns the callback (its
    `.controller.history` lists every update)."""
    if not hasattr(trainer, "beta"):
        raise RecipeError(
            f"{type(trainer).__name__} has no `beta` to adapt; prefdata.target_kl works with "
            "GRPO and RLOO",
            column="prefdata.target_kl",
        )
    controller = AdaptiveKLController(float(trainer.beta), float(target_kl), float(horizon))
    callback = adaptive_kl_callback_class()(trainer, controller)
    trainer.add_callback(callback)
    return callback


def attach_kl_control(trainer: Any, settings: Mapping[str, Any]) -> Any | None:
    """Attach the adaptive KL callback when `settings["target_kl"]` is set (a recipe's
    `prefdata` section holding KL_CONTROL_DEFAULTS' keys); None when it is off."""
    target = settings.get("target_kl")
    if target is None:
        return None
    horizon = settings.get("kl_horizon", KL_CONTROL_DEFAULTS["kl_horizon"])
    return attach_adaptive_kl(
        trainer,
        target_kl=_number(target, "prefdata.target_kl"),
        horizon=_number(horizon, "prefdata.kl_horizon"),
    )


def _number(value: Any, key: str) -> float:
    # YAML 1.1 reads 1e-3 as a string; a bool is a number to Python but not to a recipe.
    if isinstance(value, bool):
        raise RecipeError(f"{key} must be a number, got {value!r}", column=key)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RecipeError(f"{key} must be a number, got {value!r}", column=key) from None

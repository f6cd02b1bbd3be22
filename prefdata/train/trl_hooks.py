"""The parts of TRL prefdata relies on beyond its documented API, in one list.

prefdata overrides or reads a few of TRL's private methods and attributes (TRL has no public
hook for them): per-pair confidence weights in DPO (prefdata.train.dpo), advantage statistics
in GRPO / RLOO (prefdata.train.grpo), the adaptive KL coefficient (prefdata.train.kl_control),
the fused LM head evaluation uses. A TRL release that renames or reshapes one of them would
break training silently, so pyproject pins TRL to the minor version tested (`>=1.16,<1.17`),
`check_trl_hooks()` runs before those trainers are built (a changed hook is one clear error
naming it), and tests/train/test_trl_hooks.py checks the same list in CI.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass
from typing import Any

from prefdata.errors import TrainingError

__all__ = ["HOOKS", "Hook", "check_trl_hooks", "hook_problems"]

TESTED_TRL = ">=1.16,<1.17"


@dataclass(frozen=True)
class Hook:
    """One TRL internal: `target` ("module:Class.method", "module:function" or
    "module:Class"), the parameter names expected (in order; None: not checked), and source
    fragments that must appear in `source_of` (an attribute assigned or read there)."""

    target: str
    params: tuple[str, ...] | None = None
    source_of: str | None = None
    fragments: tuple[str, ...] = ()
    why: str = ""


HOOKS: tuple[Hook, ...] = (
    Hook(
        "trl:GRPOTrainer._generate_and_score_completions",
        ("self", "inputs"),
        fragments=('"advantages"',),
        why="advantage statistics are read from its output (grpo.online_trainer_class)",
    ),
    Hook(
        "trl:RLOOTrainer._generate_and_score_completions",
        ("self", "inputs"),
        fragments=('"advantages"', "self.beta"),
        why="advantage statistics; RLOO reads the adaptive beta here (kl_control)",
    ),
    Hook(
        "trl:GRPOTrainer.__init__",
        None,
        fragments=("self._metrics = {", "self.beta = args.beta"),
        why="prefdata appends to self._metrics[mode] and sets self.beta",
    ),
    Hook(
        "trl:RLOOTrainer.__init__",
        None,
        fragments=("self._metrics = {", "self.beta = args.beta"),
        why="prefdata appends to self._metrics[mode] and sets self.beta",
    ),
    Hook(
        "trl:GRPOTrainer._compute_loss",
        ("self", "model", "inputs"),
        fragments=("self.beta",),
        why="GRPO reads the adaptive beta in its loss (kl_control)",
    ),
    Hook(
        "trl:DPOTrainer.compute_ref_log_probs",
        ("self", "model", "inputs"),
        why="the confidence-weighted trainer drops the pair weights before the reference pass",
    ),
    Hook(
        "trl:DPOTrainer.compute_loss",
        ("self", "model", "inputs", "return_outputs", "num_items_in_batch"),
        why="the confidence-weighted trainer sets the pair weights for the policy's forward",
    ),
    Hook(
        "trl:DPOTrainer._compute_loss",
        ("self", "model", "inputs", "return_outputs"),
        fragments=("fused_lm_head=True", "outputs.log_probs"),
        why="the pair-weight gradient hook sits on the policy output's log_probs",
    ),
    Hook(
        "trl:DPOTrainer.log",
        ("self", "logs", "start_time"),
        why="pair_weight_mean is added to each log",
    ),
    Hook(
        "trl.trainer.dpo_trainer:DataCollatorForPreference",
        ("pad_token_id", "max_length", "truncation_mode", "pad_to_multiple_of", "return_tensors"),
        why="wrapped by the confidence collator",
    ),
    Hook(
        "trl.trainer.utils:add_fused_lm_head",
        ("model", "temperature", "cast_lm_head_to_fp32", "outputs"),
        why="evaluation takes TRL's per-token log-probabilities",
    ),
    Hook("trl.data_utils:common_prefix_length", why="where a completion starts (eval, KTO)"),
    Hook(
        "trl.trainer.reward_trainer:suppress_seqcls_warning",
        why="quiet new reward heads (optional: absent, the warning shows)",
    ),
)
"""Every TRL internal prefdata depends on."""


def _resolve(target: str) -> Any:
    module_name, _, path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _params(obj: Any) -> tuple[str, ...]:
    func = obj.__init__ if inspect.isclass(obj) else obj
    names = tuple(inspect.signature(func).parameters)
    return names[1:] if inspect.isclass(obj) and names[:1] == ("self",) else names


def hook_problems(hooks: tuple[Hook, ...] = HOOKS) -> list[str]:
    """What no longer matches in the installed TRL: one message per changed hook."""
    problems = []
    for hook in hooks:
        try:
            obj = _resolve(hook.target)
        except (ImportError, AttributeError):
            problems.append(f"{hook.target} is gone ({hook.why})")
            continue
        if hook.params is not None and _params(obj) != hook.params:
            problems.append(
                f"{hook.target} takes {_params(obj)}, prefdata expects {hook.params} ({hook.why})"
            )
        if hook.fragments:
            source = inspect.getsource(obj)
            missing = [f for f in hook.fragments if f not in source]
            if missing:
                problems.append(f"{hook.target} no longer has {missing} ({hook.why})")
    return problems


@functools.cache
def check_trl_hooks() -> None:
    """Raise TrainingError naming every changed hook (once per process; cheap after that)."""
    problems = hook_problems()
    if problems:
        from importlib.metadata import version

        raise TrainingError(
            f"the installed TRL {version('trl')} differs from the one prefdata was tested with "
            f"(trl{TESTED_TRL}): " + "; ".join(problems)
        )

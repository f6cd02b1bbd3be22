"""RLOO with TRL's RLOOTrainer: on-policy RL from prompts, the leave-one-out baseline.

Everything but the advantage is GRPO's (prefdata.train.grpo, whose `prepare_online` builds
both): the same data (a prompts table, or a pairs table's distinct prompts), the same reward
functions (`prefdata.rewards`: accuracy, format, judge, reward_model), the reward-hacking
monitor, the reward and advantage statistics in the report, the adaptive KL coefficient
(`prefdata.target_kl`), and the prompt-length guard (`prefdata.max_prompt_tokens`, 512:
longer prompts are left out and counted as `dropped_prompt_too_long`, since TRL never
shortens a prompt).

What differs (TRL 1.16, Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style
Optimization for Learning from Human Feedback in LLMs"):

- **Advantage**: a completion's reward minus the mean reward of the other
  `num_generations - 1` completions of its prompt (no division by the group's standard
  deviation; `normalize_advantages: true` standardises over the whole batch instead).
- **KL is in the reward**: with `beta` > 0 (TRL's default 0.05), each completion's reward
  is reduced by beta times its summed per-token log-ratio to the reference before the
  baseline is taken (GRPO adds the KL to the loss instead). The `kl` TRL logs is the mean
  per-token log-ratio, which can be negative.
- **Group size**: TRL's default is 2. prefdata refuses `num_generations` below 4 unless
  `prefdata.allow_small_groups` (`--allow-small-groups`): with k completions each baseline is
  the mean of k - 1 others, a single sample at k = 2, and the RLOO paper's own comparison
  found k = 4 clearly better than k = 2. The threshold is lower than GRPO's 8 because no
  standard deviation is estimated from the group.
"""

from __future__ import annotations

from prefdata.train.grpo import PREFDATA_DEFAULTS, OnlineMethod, prepare_online
from prefdata.train.method import Data, MethodRun
from prefdata.train.outputs import Prepared
from prefdata.train.recipe import MethodSpec, Recipe

__all__ = ["MIN_GROUP", "PREFDATA_DEFAULTS", "RLOO", "SPEC", "prepare"]

MIN_GROUP = 4
"""The smallest `num_generations` accepted without prefdata.allow_small_groups."""


def _rloo_config() -> type:
    from trl import RLOOConfig

    return RLOOConfig


# reference="none": prefdata never loads a reference copy. With LoRA TRL disables the adapter;
# with full fine-tuning and beta > 0 TRL loads its own copy from the model's path.
SPEC = MethodSpec(
    "rloo",
    _rloo_config,
    PREFDATA_DEFAULTS,
    reference="none",
    data_contracts=("prompts", "pairs"),
)

RLOO = OnlineMethod(
    SPEC,
    "RLOOTrainer",
    MIN_GROUP,
    "RLOO's baseline for each completion is the mean reward of the other {others} "
    "completion(s) of its prompt; from so few it is noisy, so the advantages are "
    "high-variance, and with 0/1 rewards small groups are often all-equal and teach nothing "
    "(the RLOO paper found k = 4 clearly better than k = 2).",
    ("normalize_advantages", "reward_clip_range", "use_vllm", "vllm_mode"),
)


def prepare(recipe: Recipe, data: Data, run: MethodRun) -> Prepared:
    """Build the RLOO trainer from a resolved recipe and a prompts (or pairs) table; see
    prefdata.train.grpo.prepare_online for what is checked and attached."""
    return prepare_online(RLOO, recipe, data, run)

"""GRPO with TRL's GRPOTrainer: on-policy RL from prompts, with verifiable or judged rewards.

The same `prepare` serves RLOO (prefdata.train.rloo): `prepare_online` takes an
`OnlineMethod` (the MethodSpec, TRL's trainer class, the smallest group accepted and why), and
everything below (data, rewards, group-size guard, monitor, reward statistics, adaptive KL)
applies to both.

Input: a prompts table (prefdata.schema "prompts": prompt_id, prompt messages, optional
`answer`, e.g. from `prefdata import gsm8k` / `math500`), or a pairs table, whose distinct
prompts are used (its completions are not: GRPO samples its own). TRL sees rows with `prompt`
(messages), `prompt_id` and, when present, `answer`; the reward functions receive the last two
as keyword columns.

For each prompt TRL samples `num_generations` completions (a group), scores each with the
reward functions, and the advantage of a completion is its (weighted, summed) reward minus its
group's mean, divided by the group's standard deviation (`scale_rewards`). KL to the reference
is TRL's `beta` (0 by default: no reference at all); with LoRA the reference is the base model
with the adapter disabled, checked frozen before training starts.

prefdata's keys (`prefdata:` section):

- `rewards`: a list of `{name, weight, options}`: `accuracy`, `format`, `judge`,
  `reward_model` (prefdata.train.rewards documents each); the weights become TRL's
  `reward_weights` unless the recipe sets that itself. Default: `[{name: accuracy}]`.
- `max_prompt_tokens` (512): prompts longer than this many tokens (chat template applied,
  with the generation prompt, as TRL tokenizes them) are left out, of the training prompts and
  of `eval_data`, and counted in the report (`dropped_prompt_too_long`,
  `dropped_eval_prompt_too_long`); null keeps all. TRL 1.16's GRPO and RLOO never shorten a
  prompt, and memory grows with prompt length times `num_generations`: on a CPU one
  1,272-token OpenAssistant conversation in a group of 8 SmolLM2-135M completions took a run
  past 20 GB.
- `allow_small_groups` (false): `num_generations` below 8 is refused unless this is true
  (CLI: `--allow-small-groups`). A group's mean and standard deviation from a handful of
  samples are noisy, and with 0/1 rewards small groups are often all-equal and teach nothing:
  with a 30% success rate, a group of 4 has equal rewards 25% of the time, a group of 8 6%.
- `target_kl` (null), `kl_horizon` (10000): an adaptive KL coefficient
  (prefdata.train.kl_control): beta, starting from the recipe's `beta` (> 0), is moved after
  each logged step towards the per-token KL `target_kl`; each update is in the log history as
  `beta` / `beta_next`.
- `monitor`: the reward-hacking monitor's settings (prefdata.train.monitor:
  `MONITOR_DEFAULTS`; `enabled: false` turns it off). Its held-out prompts, when
  `monitor.judge_every` > 0, come from `eval_data`, else `judge_prompts` prompts are held
  out of the training data.

What the report (`prefdata-train.json`) adds: the rewards and weights, TRL's per-step reward
metrics (`reward`, `reward_std`, `frac_reward_zero_std`, `rewards/<name>/mean|std`, `kl`,
completion lengths), advantage statistics prefdata logs beside them (`advantages/mean`,
`advantages/std`, `advantages/abs_mean`, `advantages/frac_zero`: the share of completions
that carry no learning signal), their first / last / mean values under `reward_stats`, and
the monitor's summary under `monitor`.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from prefdata.errors import InputError, MissingExtraError, TrainingError
from prefdata.models.loader import load_tokenizer
from prefdata.train.data import token_ids
from prefdata.train.hardware import Hardware
from prefdata.train.kl_control import KL_CONTROL_DEFAULTS
from prefdata.train.method import Data, MethodRun, build_trainer, read_training_table
from prefdata.train.outputs import Prepared
from prefdata.train.recipe import MethodSpec, Recipe, RecipeError
from prefdata.train.reference import check_reference_frozen, trainable_parameters

__all__ = [
    "GRPO",
    "MIN_GROUP",
    "PREFDATA_DEFAULTS",
    "SPEC",
    "VLLM_MODES",
    "OnlineMethod",
    "check_group_size",
    "check_vllm_generation",
    "drop_long_prompts",
    "grpo_rows",
    "grpo_trainer_class",
    "online_trainer_class",
    "prepare",
    "prepare_online",
    "prompt_token_limit",
    "reward_stats_callback",
]

MIN_GROUP = 8
"""The smallest `num_generations` accepted without prefdata.allow_small_groups."""

PREFDATA_DEFAULTS: dict[str, Any] = {
    "rewards": [{"name": "accuracy", "weight": 1.0}],
    "allow_small_groups": False,
    # Prompts longer than this many tokens (chat template applied) are left out; null keeps
    # all. TRL 1.16 never shortens a prompt; see the module doc.
    "max_prompt_tokens": 512,
    "monitor": {},
    # The adaptive KL coefficient (prefdata.train.kl_control): target_kl, kl_horizon.
    **KL_CONTROL_DEFAULTS,
}


def _grpo_config() -> type:
    from trl import GRPOConfig

    return GRPOConfig


# reference="none": prefdata never loads a reference copy for GRPO. With LoRA TRL disables the
# adapter; with full fine-tuning and beta > 0 TRL loads its own copy from the model's path.
SPEC = MethodSpec(
    "grpo",
    _grpo_config,
    PREFDATA_DEFAULTS,
    reference="none",
    data_contracts=("prompts", "pairs"),
)


@dataclass(frozen=True)
class OnlineMethod:
    """What differs between the on-policy methods `prepare_online` builds (GRPO, RLOO).

    `trainer`: the TRL trainer class's name in `trl`; `min_group`: the smallest
    `num_generations` accepted without prefdata.allow_small_groups, and `small_groups`: why
    (the refusal's explanation); `report_fields`: TRL config fields copied into the report.
    """

    spec: MethodSpec
    trainer: str
    min_group: int
    small_groups: str
    report_fields: tuple[str, ...] = ()


GRPO = OnlineMethod(
    SPEC,
    "GRPOTrainer",
    MIN_GROUP,
    "GRPO's advantage is each completion's reward minus its group's mean, divided by the "
    "group's standard deviation; from {n} samples both are noisy, so the advantages are "
    "high-variance, and with 0/1 rewards small groups are often all-equal and teach nothing "
    "(with a 30% success rate a group of 4 is all-equal 25% of the time, a group of 8 6%).",
    ("loss_type", "scale_rewards", "use_vllm", "vllm_mode"),
)

VLLM_MODES = ("colocate", "server")


def check_vllm_generation(recipe: Recipe, hardware: Hardware) -> None:
    """Generation by vLLM instead of transformers `generate` (TRL's own recipe fields
    `use_vllm: true` and `vllm_mode: colocate | server`, passed through to the config):
    refused here, before any model loads, when it cannot run. colocate runs vLLM inside the
    training processes, on their GPUs; server sends generation to `trl vllm-serve` on GPUs of
    its own (train/README.md shows the launch). Both need vLLM installed where training runs
    (TRL syncs the weights to vLLM after each step)."""
    if not recipe.trl.get("use_vllm"):
        return
    mode = recipe.trl.get("vllm_mode", "colocate")
    if mode not in VLLM_MODES:
        raise RecipeError(f"vllm_mode must be one of {', '.join(VLLM_MODES)}, got {mode!r}")
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise MissingExtraError(
            "use_vllm: true needs vLLM where training runs: pip install 'prefdata[vllm]'"
            + (
                " (and `trl vllm-serve --model MODEL` on GPUs of its own first)"
                if mode == "server"
                else ""
            )
            + "; or use_vllm: false (generation by transformers)"
        )
    if mode == "colocate" and hardware.accelerator != "cuda":
        raise TrainingError(
            f"vllm_mode: colocate runs vLLM on the training GPUs, and this machine trains on "
            f"{hardware.accelerator}; use a CUDA GPU, vllm_mode: server, or use_vllm: false"
        )


# Metrics collected per logged step into the report (prefixes of TRL's and our names).
_TRACKED = (
    "reward",
    "reward_std",
    "rewards/",
    "advantages/",
    "frac_reward_zero_std",
    "kl",
    "entropy",
    "completions/mean_length",
    "completions/clipped_ratio",
    "loss",
)


def check_group_size(recipe: Recipe, method: OnlineMethod = GRPO) -> int:
    """The run's `num_generations`; raises RecipeError below `method.min_group` unless
    prefdata.allow_small_groups."""
    config_class: Any = method.spec.config_class()
    default: Any = config_class.__dataclass_fields__["num_generations"].default
    n = int(recipe.trl.get("num_generations") or default or method.min_group)
    if n < method.min_group and not recipe.prefdata["allow_small_groups"]:
        raise RecipeError(
            f"num_generations={n} is below {method.min_group}. "
            + method.small_groups.format(n=n, others=n - 1)
            + " Raise num_generations (per_device_train_batch_size x "
            "gradient_accumulation_steps must be a multiple of it), or accept it with "
            "--allow-small-groups (prefdata.allow_small_groups=true).",
            source=recipe.source,
            column="num_generations",
        )
    return n


def grpo_rows(table: pl.DataFrame, contract: str) -> pl.DataFrame:
    """Prompts or pairs -> TRL's GRPO rows: prompt (messages), prompt_id[, answer].

    A pairs table gives one row per distinct prompt_id (its first occurrence).
    """
    keep = ["prompt", "prompt_id"] + (["answer"] if "answer" in table.columns else [])
    rows = table.select(keep)
    if contract == "pairs":
        rows = rows.unique("prompt_id", keep="first", maintain_order=True)
    if "answer" in rows.columns:
        rows = rows.with_columns(pl.col("answer").cast(pl.String))
    return rows


def prompt_token_limit(recipe: Recipe) -> int | None:
    """prefdata.max_prompt_tokens of a resolved recipe: a positive integer, or None (keep every
    prompt); raises RecipeError for anything else."""
    limit = recipe.prefdata.get("max_prompt_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise RecipeError(
            f"prefdata.max_prompt_tokens is a positive integer or null, got {limit!r}",
            source=recipe.source,
            column="prefdata.max_prompt_tokens",
        )
    return limit


def drop_long_prompts(
    rows: pl.DataFrame, tokenizer: Any, max_tokens: int | None
) -> tuple[pl.DataFrame, int]:
    """Rows with a `prompt` (chat messages) -> (the rows whose prompt is at most `max_tokens`
    tokens once the chat template is applied with the generation prompt, as TRL tokenizes it;
    how many were left out). Columns are kept; `max_tokens` None keeps every row."""
    if max_tokens is None or rows.height == 0:
        return rows, 0
    lengths = [
        len(
            token_ids(
                tokenizer.apply_chat_template(list(p), add_generation_prompt=True, tokenize=True)
            )
        )
        for p in rows["prompt"].to_list()
    ]
    kept = rows.filter(pl.Series(lengths) <= max_tokens)
    return kept, rows.height - kept.height


@functools.cache
def online_trainer_class(name: str = "GRPOTrainer") -> type:
    """TRL's trainer `name` (GRPOTrainer, RLOOTrainer) that also logs advantage statistics
    beside TRL's reward metrics. Both build their advantages in
    `_generate_and_score_completions` and return them under `advantages`."""
    import trl

    from prefdata.train.trl_hooks import check_trl_hooks

    check_trl_hooks()
    base: Any = getattr(trl, name)

    class PrefdataOnlineTrainer(base):
        """TRL's trainer + `advantages/{mean,std,abs_mean,frac_zero}` per generation batch."""

        def _generate_and_score_completions(self, inputs: Any) -> Any:
            output = super()._generate_and_score_completions(inputs)
            advantages = self.accelerator.gather(output["advantages"].detach().float())
            policy: Any = self.model
            metrics = self._metrics["train" if policy.training else "eval"]
            metrics["advantages/mean"].append(advantages.mean().item())
            metrics["advantages/std"].append(
                advantages.std().item() if advantages.numel() > 1 else 0.0
            )
            metrics["advantages/abs_mean"].append(advantages.abs().mean().item())
            # Groups whose rewards are all equal give zero advantages (no signal).
            metrics["advantages/frac_zero"].append((advantages.abs() < 1e-6).float().mean().item())
            return output

    PrefdataOnlineTrainer.__name__ = PrefdataOnlineTrainer.__qualname__ = f"Prefdata{name}"
    return PrefdataOnlineTrainer


def grpo_trainer_class() -> type:
    """TRL's GRPOTrainer that also logs advantage statistics (see online_trainer_class)."""
    return online_trainer_class("GRPOTrainer")


def reward_stats_callback(report: dict[str, Any], *, close: Sequence[Any] = ()) -> Any:
    """A TrainerCallback that keeps the tracked metrics of every logged training step and
    writes `reward_history` and `reward_stats` (first, last, mean per metric) into `report`
    when training ends; then calls `close()` on the objects in `close` that have it (the
    reward functions: a judge's client, call cache and event loop; they reopen if used
    again)."""
    from transformers import TrainerCallback

    class RewardStats(TrainerCallback):
        def __init__(self) -> None:
            self.history: list[dict[str, Any]] = []

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if not logs or "reward" not in logs:
                return
            entry = {"step": int(state.global_step)}
            for key, value in logs.items():
                if any(key == t or (t.endswith("/") and key.startswith(t)) for t in _TRACKED):
                    entry[key] = value
            self.history.append(entry)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            stats: dict[str, Any] = {}
            keys = dict.fromkeys(k for e in self.history for k in e if k != "step")
            for key in keys:
                values = [
                    float(e[key])
                    for e in self.history
                    if isinstance(e.get(key), int | float) and e[key] == e[key]
                ]
                if values:
                    stats[key] = {
                        "first": values[0],
                        "last": values[-1],
                        "mean": statistics.fmean(values),
                    }
            report["reward_history"] = self.history
            report["reward_stats"] = stats
            for item in close:
                closer = getattr(item, "close", None)
                if callable(closer):
                    closer()

    return RewardStats()


def _heldout(
    rows: pl.DataFrame,
    eval_rows: pl.DataFrame | None,
    n: int,
    notes: list[str],
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """(training rows, held-out rows for the monitor's judge)."""
    if eval_rows is not None:
        return rows, eval_rows.head(n).to_dicts()
    if rows.height <= n:
        raise InputError(
            f"the monitor's held-out judge needs {n} prompts held out of {rows.height}; give "
            "eval_data or lower prefdata.monitor.judge_prompts"
        )
    notes.append(f"monitor: the last {n} prompts held out of training for the held-out judge")
    return rows.head(rows.height - n), rows.tail(n).to_dicts()


def prepare(recipe: Recipe, data: Data, run: MethodRun) -> Prepared:
    """Build the GRPO trainer from a resolved recipe and a prompts (or pairs) table
    (see prepare_online)."""
    return prepare_online(GRPO, recipe, data, run)


def prepare_online(method: OnlineMethod, recipe: Recipe, data: Data, run: MethodRun) -> Prepared:
    """Build `method`'s trainer (GRPO, RLOO) from a resolved recipe and a prompts (or pairs)
    table.

    Refuses num_generations below `method.min_group` unless prefdata.allow_small_groups;
    leaves out prompts (training and eval_data) longer than prefdata.max_prompt_tokens tokens;
    builds the reward functions (checked against the data's columns before any model loads);
    with beta > 0 checks the reference frozen; attaches the reward-statistics and monitor
    callbacks and, with prefdata.target_kl, the adaptive KL coefficient.
    """
    from prefdata.train.kl_control import attach_kl_control
    from prefdata.train.monitor import RewardHackingMonitor, monitor_callback, monitor_settings
    from prefdata.train.rewards import build_reward, build_rewards

    spec = method.spec
    recipe = recipe.copy()
    groups = check_group_size(recipe, method)
    check_vllm_generation(recipe, run.hardware)
    limit = prompt_token_limit(recipe)
    rewards = build_rewards(recipe.prefdata["rewards"])
    settings = monitor_settings(recipe.prefdata["monitor"])
    notes: list[str] = []
    if "reward_weights" in recipe.user_fields:
        notes.append("reward_weights from the recipe; the weights in prefdata.rewards are unused")
    else:
        recipe.trl["reward_weights"] = rewards.weights

    table, source, contract = read_training_table(data, spec, recipe, notes)
    rows = grpo_rows(table, contract)
    for name, given in zip(rewards.names, rewards.specs, strict=True):
        column = (given.get("options") or {}).get("answer_column", "answer")
        if name.startswith("accuracy") and column not in rows.columns:
            raise InputError(
                f"the accuracy reward needs a reference answer column '{column}'; the data has "
                f"{rows.columns}. Prompts from `prefdata import gsm8k` / `math500` have one.",
                source=source,
                column=column,
            )
    eval_rows = run.eval_rows(spec, grpo_rows)
    too_long = eval_too_long = 0
    if limit is not None:
        tokenizer = load_tokenizer(run.model)
        total = rows.height
        rows, too_long = drop_long_prompts(rows, tokenizer, limit)
        if rows.height == 0:
            raise InputError(
                f"every one of the {total} prompts is longer than "
                f"prefdata.max_prompt_tokens={limit} tokens",
                source=source,
                column="prompt",
            )
        if too_long:
            notes.append(
                f"{too_long} of {total} prompts longer than {limit} tokens left out "
                "(prefdata.max_prompt_tokens)"
            )
        if eval_rows is not None:
            eval_rows, eval_too_long = drop_long_prompts(eval_rows, tokenizer, limit)
    monitoring = bool(settings["enabled"])
    heldout: list[dict[str, Any]] = []
    scorer = None
    if monitoring and settings["judge_every"]:
        rows, heldout = _heldout(rows, eval_rows, int(settings["judge_prompts"]), notes)
        scorer, _ = build_reward(settings["judge"], where="prefdata.monitor.judge")

    with_answer = int(rows["answer"].is_not_null().sum()) if "answer" in rows.columns else 0

    config, models = run.load(recipe, spec)
    report: dict[str, Any] = {}
    callbacks = [reward_stats_callback(report, close=[*rewards.funcs, scorer])]
    if monitoring:
        monitor = RewardHackingMonitor(settings)
        callbacks.append(monitor_callback(monitor, report=report, heldout=heldout, scorer=scorer))
    trainer = build_trainer(
        online_trainer_class(method.trainer),
        config,
        models,
        rows,
        eval_rows,
        reward_funcs=rewards.funcs,
        callbacks=callbacks,
    )
    kl_control = attach_kl_control(trainer, recipe.prefdata)
    if config.beta:
        if trainer.ref_model is not None:
            # TRL loads the full fine-tuning reference itself and only puts it in eval mode;
            # its log-probs are taken without gradients, and frozen it provably stays put.
            trainer.accelerator.unwrap_model(trainer.ref_model).requires_grad_(False)
        reference = check_reference_frozen(trainer)
    else:
        reference = {
            "reference": "none (beta = 0: no KL term, no reference model)",
            "reference_parameters": 0,
            "trainable_parameters": trainable_parameters(trainer.model),
        }
    report.update(
        {
            "model": models.path,
            "data": source,
            "data_contract": contract,
            "prompts": rows.height,
            "prompts_with_answer": with_answer,
            "max_prompt_tokens": limit,
            "dropped_prompt_too_long": too_long,
            "dropped_eval_prompt_too_long": eval_too_long,
            "heldout_prompts": len(heldout),
            "rewards": rewards.describe(),
            "reward_weights": list(config.reward_weights or rewards.weights),
            "num_generations": groups,
            "generation_batch_size": config.generation_batch_size,
            "max_completion_length": config.max_completion_length,
            "beta": config.beta,
            "target_kl": None if kl_control is None else recipe.prefdata["target_kl"],
            **{name: getattr(config, name) for name in method.report_fields},
            "temperature": config.temperature,
            "weights_dtype": models.dtype,
            "finetune": models.finetune,
            **reference,
            "monitor_enabled": monitoring,
            "notes": notes,
        }
    )
    if groups < method.min_group:
        report.setdefault("warnings", []).append(
            f"num_generations={groups} below {method.min_group} (allowed by "
            "prefdata.allow_small_groups): expect noisy advantages"
        )
    if with_answer < rows.height and any(n.startswith("accuracy") for n in rewards.names):
        report.setdefault("warnings", []).append(
            f"{rows.height - with_answer} of {rows.height} prompts have no reference answer: "
            "the accuracy reward scores their completions None"
        )
    return Prepared(trainer, spec, recipe, run.hardware, report)

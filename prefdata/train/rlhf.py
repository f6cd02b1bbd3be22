"""Classic RLHF in three stages, each output feeding the next (InstructGPT's recipe on TRL 1.16):

1. **sft**: supervised fine-tuning on demonstrations (prefdata.train.sft); with LoRA the
   adapter is merged into a full model folder (`OUT/sft/model`, with its tokenizer), which is
   both the starting policy and the frozen reference of stage 3.
2. **reward**: a reward model on the pairs (prefdata.train.reward), starting from the SFT model
   (`prefdata.reward_from: sft`, as InstructGPT) or the base model (`base`).
3. **rl**: on-policy RL from the SFT model against the reward model (`prefdata.rl_method`:
   `rloo` (default) or `grpo`; TRL 1.16 has no PPO), with the `reward_model` reward of
   prefdata.train.rewards, KL to the SFT reference (`beta` > 0 is required; with
   `prefdata.target_kl` beta adapts) and the reward-hacking monitor.

Data. `data` (DATA) is a pairs table, or OpenAssistant trees (imported to pairs as
prefdata.train.sft does). Unless a stage names its own (`stages.<stage>.data`), SFT trains on
DATA's chosen replies (the best-ranked ones for OpenAssistant ranks), the reward model on
DATA's pairs, and RL on DATA's distinct prompts. The RL stage leaves out prompts longer than
`prefdata.max_prompt_tokens` tokens (TRL 1.16's GRPO / RLOO never cut a prompt): the rlhf key
becomes the RL stage's own `prefdata.max_prompt_tokens` (prefdata.train.grpo.prepare_online
applies it) unless the RL stage's recipe or overrides set that themselves; `prepare` counts
them beforehand and refuses when none would be left. Held-out pairs for the reward model's accuracy:
`eval_data`, else DATA's rows with split "test" (when it has a split column), else
`prefdata.heldout_fraction` of DATA's prompts (chosen by a hash of prompt_id, so the same run
holds out the same prompts); held-out prompts are left out of all three stages. Derived tables
go to `OUT/data/` (written only when their content changes).

Recipe (`train/rlhf.yaml`): top-level TrainingArguments fields (`seed`, `logging_steps`,
`report_to`, ...) and `peft:` keys apply to every stage; `prefdata:` holds this module's keys
(PREFDATA_DEFAULTS) and `full_finetune` / `model_dtype` / `check_memory`, which also apply to
every stage. Each stage is `prefdata.stages.<sft|reward|rl>`: `recipe` (a recipe file, relative
to the rlhf recipe's folder, or an inline mapping; null: the method's defaults), `overrides`
(a list of `key=value`, or a mapping) and `data` (a path; relative paths are read from the rlhf
recipe's folder). Command-line overrides prefixed with a stage name go to that stage:
`sft.max_steps=100`, `reward.peft.r=8`, `rl.beta=0.1`; unprefixed ones are shared. Precedence:
the stage recipe < shared keys < the stage's `overrides` < prefixed command-line overrides.
The RL stage's `prefdata.rewards` is always the stage's reward model (options from
`prefdata.reward_options`) plus `prefdata.extra_rewards`.

Resuming. Each stage writes `OUT/<stage>/manifest.json` (prefdata.manifest) when it
has finished: the content hashes of its data and models and the hash of its resolved recipe.
A stage whose manifest matches and whose outputs exist is skipped, so a second run trains
nothing, and changing only an RL option re-runs only the RL stage (a re-run SFT stage that
produces different weights re-runs the two after it). A model's hash (`model_hash`) covers
what defines it (weights or adapter, configs, tokenizer files), not the bookkeeping beside it
(`prefdata-train.json` with its timings, `recipe.yaml`, `training_args.bin`, the model card),
so a stage re-run that writes the same weights does not re-run the stages after it.

Outputs: `OUT/sft/adapter` (LoRA; the SFT training output), `OUT/sft/model` (the merged or full
SFT model), `OUT/reward/model`, `OUT/rl/model` (the policy: an adapter over `OUT/sft/model`, or
full weights) and `OUT/rl/curves.json` (every logged RL step), `OUT/recipe.yaml` (the resolved
rlhf recipe) and `OUT/rlhf-summary.json`, which `fit` also returns: each stage's status, time and
output, the reward model's held-out accuracy, the RL reward / KL / completion-length curves and
their drift, the monitor's summary (with the held-out judge's scores when one is configured).

Several processes (`--launcher accelerate`): every process runs each stage's trainer; the
derived data, the merge, the manifests, the held-out evaluation and the summary are written by
the main process, with a barrier after each. Tested with two CPU processes (torchrun, gloo);
not on several GPUs, nor under DeepSpeed ZeRO-3 / FSDP (where the RL stage's `starts_from`
check cannot see partitioned weights and records `equal: null`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prefdata.errors import InputError
from prefdata.train.method import Data, MethodRun
from prefdata.train.models import model_path
from prefdata.train.recipe import Recipe, RecipeError
from prefdata.train.rlhf_recipe import SPEC, STAGES, load_recipe, read_rlhf_data
from prefdata.train.rlhf_run import RLHFRun, StagePlan

__all__ = ["SPEC", "RLHFRun", "load_recipe", "prepare"]


def _count_rl_prompts(run: RLHFRun, plan: StagePlan) -> int | None:
    """How many of the RL prompts derived from DATA the RL stage will keep under its
    max_prompt_tokens (counted with the same function it uses); sets the count of those left
    out and a note on `run.data`; InputError when none would be left, before anything trains."""
    from prefdata.models.loader import load_tokenizer
    from prefdata.train.grpo import drop_long_prompts, prompt_token_limit

    read = run.data
    if read.prompts is None:
        return None
    limit = prompt_token_limit(plan.recipe)
    if limit is None:
        return read.prompts.height
    tokenizer = load_tokenizer(run.model)
    kept, read.prompts_too_long = drop_long_prompts(read.prompts, tokenizer, limit)
    if kept.height == 0:
        raise InputError(
            f"every RL prompt is longer than prefdata.max_prompt_tokens={limit} tokens",
            source=read.source,
        )
    if read.prompts_too_long:
        read.notes.append(
            f"RL: {read.prompts_too_long} of {read.prompts.height} prompts longer than "
            f"{limit} tokens left out (prefdata.max_prompt_tokens)"
        )
    return kept.height


def prepare(recipe: Recipe, data: Data, run: MethodRun) -> RLHFRun:
    """Read DATA, hold out the evaluation pairs and check every stage's recipe; nothing
    trains until `fit(out)`. `recipe` is an rlhf Recipe from `load_recipe`."""
    if recipe.method != SPEC.name or "stages" not in recipe.prefdata:
        raise RecipeError("prefdata.train.rlhf.prepare needs a recipe from rlhf.load_recipe")
    read = read_rlhf_data(data, run.eval_data, recipe.prefdata)
    if read.pairs is not None and recipe.prefdata["stages"]["rl"]["data"] is None:
        from prefdata.train.grpo import grpo_rows

        # Every distinct prompt goes to OUT/data/prompts.parquet; the RL stage leaves out the
        # long ones itself (prepare_online), so they are only counted here, to refuse early.
        read.prompts = grpo_rows(read.pairs, "pairs")
    rlhf = RLHFRun(
        recipe=dataclasses.replace(recipe, notes=list(recipe.notes)),
        data=read,
        model=str(run.model),
        hardware=run.hardware,
        out=Path(run.out).resolve(),
        report={},
    )
    plans = {name: rlhf.stage(name) for name in STAGES}
    rl_prompts = _count_rl_prompts(rlhf, plans["rl"])
    rlhf.report.update(
        {
            "method": "rlhf",
            "model": model_path(run.model),
            "data": read.source,
            "pairs": None if read.pairs is None else read.pairs.height,
            "heldout_pairs": 0 if read.heldout is None else read.heldout.height,
            "heldout_from": read.heldout_from,
            "rl_prompts": rl_prompts,
            "rl_prompts_too_long": read.prompts_too_long,
            "stages": {
                name: {
                    "method": plan.spec.name,
                    "data": str(plan.data),
                    "model": plan.model,
                    "output": str(plan.model_out),
                }
                for name, plan in plans.items()
            },
            "notes": read.notes + [n for p in plans.values() for n in p.recipe.notes],
        }
    )
    return rlhf

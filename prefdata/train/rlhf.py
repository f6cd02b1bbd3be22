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
import gc
import hashlib
import io
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from prefdata.errors import InputError
from prefdata.train.common import (
    Hardware,
    MethodSpec,
    Prepared,
    Recipe,
    RecipeError,
    TrainingError,
    _check_keys,
    _coerce,
    _config_fields,
    _write_text_atomic,
    apply_overrides,
    build_config,
    detect_hardware,
    model_path,
    read_recipe,
    read_train_report,
    resolve_recipe,
    select_split,
    write_recipe,
)

__all__ = [
    "PREFDATA_DEFAULTS",
    "RL_METHODS",
    "SHARED_PREFDATA",
    "SPEC",
    "STAGES",
    "RLHFRun",
    "heldout_split",
    "load_recipe",
    "merge_adapter",
    "model_hash",
    "prepare",
    "split_overrides",
    "stage_recipe",
]

log = logging.getLogger(__name__)

STAGES = ("sft", "reward", "rl")
"""The stages, in the order they run."""
RL_METHODS = ("rloo", "grpo")
SHARED_PREFDATA = ("full_finetune", "model_dtype", "check_memory")
"""prefdata keys an rlhf recipe may set once for every stage."""
_STAGE_KEYS = ("recipe", "overrides", "data")

PREFDATA_DEFAULTS: dict[str, Any] = {
    # The RL stage's trainer: rloo or grpo (TRL 1.16 has no PPO).
    "rl_method": "rloo",
    # The reward model's starting weights: the SFT model (InstructGPT) or the base model.
    "reward_from": "sft",
    # Per stage: {recipe, overrides, data}; see the module doc.
    "stages": {},
    # Which rows of DATA to use when it has a `split` column (as every method's `split`).
    "split": "auto",
    # Share of DATA's prompts held out for the reward model's accuracy when neither eval_data
    # nor a "test" split is given; 0 holds out nothing (no accuracy in the summary).
    "heldout_fraction": 0.1,
    # RL prompts longer than this many tokens (chat template applied) are left out of the RL
    # stage; null keeps all. It becomes the RL stage's prefdata.max_prompt_tokens (GRPO and
    # RLOO's guard, prefdata.train.grpo) unless that stage sets its own. TRL 1.16's GRPO /
    # RLOO never cut prompts, and on a CPU one 1,272-token OpenAssistant conversation in a
    # batch of 8 completions of SmolLM2-135M ran a 24 GB machine out of memory.
    "max_prompt_tokens": 512,
    # Options of the RL stage's reward_model reward (batch_size, max_length, device).
    "reward_options": {},
    # More RL rewards beside the reward model, as prefdata.rewards entries.
    "extra_rewards": [],
    # Pairs per batch when scoring the held-out pairs with the reward model.
    "eval_batch_size": 8,
}
_REWARD_FROM = ("sft", "base")


def _training_arguments() -> type:
    from transformers import TrainingArguments

    return TrainingArguments


# The rlhf recipe's own top-level fields are TrainingArguments', which every stage's TRL config
# extends; each stage's method-specific fields go in its own recipe or overrides.
SPEC = MethodSpec(
    "rlhf",
    _training_arguments,
    PREFDATA_DEFAULTS,
    reference="none",
    data_contracts=("pairs",),
)


# --------------------------------------------------------------------------------------------
# Recipe
# --------------------------------------------------------------------------------------------


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """`key=value` overrides -> (shared ones, {stage: its ones without the prefix}).

    `sft.max_steps=1` goes to the sft stage as `max_steps=1`; `seed=1` is shared.
    """
    shared: list[str] = []
    staged: dict[str, list[str]] = {name: [] for name in STAGES}
    for item in overrides:
        head, dot, rest = item.partition(".")
        if dot and head in STAGES:
            staged[head].append(rest)
        else:
            shared.append(item)
    return shared, staged


def _stage_overrides(value: Any, where: str, source: str | None) -> list[str]:
    """A stage's `overrides`: a list of key=value strings, or a mapping (values as they are)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        # JSON is YAML: each value reads back as itself.
        return [f"{k}={json.dumps(v)}" for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise RecipeError(
        "a stage's overrides are a list of key=value strings or a mapping",
        source=source,
        column=where,
    )


def _stages(
    given: Any, base_dir: Path, staged: Mapping[str, list[str]], source: str | None
) -> dict[str, dict[str, Any]]:
    """prefdata.stages, checked, with paths made absolute and command-line overrides added."""
    if not isinstance(given, Mapping):
        raise RecipeError("prefdata.stages is a mapping of stages", source=source, column="stages")
    _check_keys(given, STAGES, "rlhf stage", source, prefix="prefdata.stages.")
    out: dict[str, dict[str, Any]] = {}
    for name in STAGES:
        stage = given.get(name) or {}
        where = f"prefdata.stages.{name}"
        if not isinstance(stage, Mapping):
            raise RecipeError(
                f"{where} is a mapping {{recipe, overrides, data}}", source=source, column=where
            )
        _check_keys(stage, _STAGE_KEYS, "stage", source, prefix=f"{where}.")
        recipe = stage.get("recipe")
        if isinstance(recipe, str | Path):
            path = Path(recipe).expanduser()
            recipe = str(path if path.is_absolute() else (base_dir / path).resolve())
            if not Path(recipe).is_file():
                raise RecipeError("no such stage recipe file", source=recipe, column=where)
        elif recipe is not None and not isinstance(recipe, Mapping):
            raise RecipeError(
                f"{where}.recipe is a recipe file or a mapping", source=source, column=where
            )
        data = stage.get("data")
        if data is not None:
            path = Path(str(data)).expanduser()
            data = str(path if path.is_absolute() else (base_dir / path).resolve())
        overrides = _stage_overrides(stage.get("overrides"), f"{where}.overrides", source)
        out[name] = {
            "recipe": dict(recipe) if isinstance(recipe, Mapping) else recipe,
            "overrides": overrides + list(staged.get(name, [])),
            "data": data,
        }
    return out


def load_recipe(
    recipe: str | Path | Mapping[str, Any],
    *,
    overrides: Sequence[str] = (),
    hardware: Hardware | None = None,
) -> Recipe:
    """Read, override and check an rlhf recipe, and every stage's recipe (TRL's own checks of
    each stage's config included), so a mistake in the RL stage is reported before SFT trains.

    Returns the rlhf Recipe: `trl` the shared TrainingArguments fields, `peft` the shared LoRA
    keys (only those set), `prefdata` this module's keys with `stages` resolved (absolute
    paths, command-line stage overrides appended).
    """
    from peft import LoraConfig

    shared, staged = split_overrides(overrides)
    out = apply_overrides(read_recipe(recipe, method=SPEC.name), shared)
    source = out.source
    fields = _config_fields(SPEC.config_class())
    _check_keys(out.trl, list(fields), "shared TrainingArguments", source)
    out.trl = {k: _coerce(v, fields[k]) for k, v in out.trl.items()}
    if "output_dir" in out.trl:
        raise RecipeError("output_dir comes from -o/--out", source=source, column="output_dir")
    lora_fields = _config_fields(LoraConfig)
    _check_keys(out.peft, list(lora_fields), "peft (LoraConfig)", source, prefix="peft.")
    out.peft = {k: _coerce(v, lora_fields[k]) for k, v in out.peft.items()}
    known = [*PREFDATA_DEFAULTS, *SHARED_PREFDATA]
    _check_keys(out.prefdata, known, "prefdata", source, prefix="prefdata.")
    settings = {**PREFDATA_DEFAULTS, **out.prefdata}
    if settings["rl_method"] not in RL_METHODS:
        raise RecipeError(
            f"prefdata.rl_method must be one of {', '.join(RL_METHODS)} (TRL 1.16 has no PPO), "
            f"got '{settings['rl_method']}'",
            source=source,
            column="prefdata.rl_method",
        )
    if settings["reward_from"] not in _REWARD_FROM:
        raise RecipeError(
            f"prefdata.reward_from must be sft or base, got '{settings['reward_from']}'",
            source=source,
            column="prefdata.reward_from",
        )
    fraction = settings["heldout_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
        raise RecipeError(
            f"prefdata.heldout_fraction must lie in [0, 1), got {fraction!r}",
            source=source,
            column="prefdata.heldout_fraction",
        )
    # max_prompt_tokens is checked as the RL stage's own key (_check_rl, below).
    if not isinstance(settings["extra_rewards"], list):
        raise RecipeError("prefdata.extra_rewards is a list", column="prefdata.extra_rewards")
    if not isinstance(settings["reward_options"], Mapping):
        raise RecipeError("prefdata.reward_options is a mapping", column="prefdata.reward_options")
    base_dir = Path(source).resolve().parent if source else Path.cwd()
    settings["stages"] = _stages(settings["stages"], base_dir, staged, source)
    out.prefdata = settings
    hw = hardware or detect_hardware()
    with tempfile.TemporaryDirectory() as tmp:
        for name in STAGES:
            resolved, spec = stage_recipe(out, name, hardware=hw, reward_model=Path(tmp))
            config = build_config(resolved, spec, Path(tmp) / name)
            if name == "rl":
                _check_rl(resolved, spec, config)
    return out


def _stage_spec(name: str, rl_method: str) -> MethodSpec:
    from prefdata.train import spec

    return spec({"sft": "sft", "reward": "reward", "rl": rl_method}[name])


def stage_recipe(
    recipe: Recipe, name: str, *, hardware: Hardware | None = None, reward_model: Path | None
) -> tuple[Recipe, MethodSpec]:
    """The resolved recipe of stage `name` ("sft", "reward", "rl") of an rlhf recipe from
    `load_recipe`, and its method's spec. For "rl", `reward_model` is the reward model folder
    its `reward_model` reward reads."""
    settings = recipe.prefdata
    stage = settings["stages"][name]
    spec = _stage_spec(name, settings["rl_method"])
    given = read_recipe(stage["recipe"] or {}, method=spec.name)
    given.trl.update(recipe.trl)
    given.user_fields |= set(recipe.trl)
    given.peft.update(recipe.peft)
    given.prefdata.update({k: settings[k] for k in SHARED_PREFDATA if k in settings})
    given = apply_overrides(given, stage["overrides"])
    if name == "rl":
        if "rewards" in given.prefdata:
            given.notes.append(
                "rlhf: the RL recipe's own prefdata.rewards are replaced by the reward model "
                "(plus prefdata.extra_rewards)"
            )
        options = {**dict(settings["reward_options"]), "path": str(reward_model)}
        given.prefdata["rewards"] = [
            {"name": "reward_model", "weight": 1.0, "options": options},
            *settings["extra_rewards"],
        ]
        given.prefdata.setdefault("max_prompt_tokens", settings["max_prompt_tokens"])
    return resolve_recipe(given, spec, hardware=hardware), spec


def _check_rl(recipe: Recipe, spec: MethodSpec, config: Any) -> None:
    """Classic RLHF keeps the policy near the SFT model: beta must be > 0."""
    from prefdata.train.grpo import check_group_size, prompt_token_limit
    from prefdata.train.rewards import build_reward

    if not config.beta or config.beta <= 0:
        raise RecipeError(
            f"RLHF's RL stage needs a KL term to the SFT model: beta > 0 (this {spec.name} "
            f"recipe has beta={config.beta}); set e.g. rl.beta=0.05, and prefdata.target_kl "
            "(rl.prefdata.target_kl=0.05) to adapt it",
            source=recipe.source,
            column="beta",
        )
    method = _online_method(spec.name)
    check_group_size(recipe, method)
    prompt_token_limit(recipe)
    for i, extra in enumerate(recipe.prefdata["rewards"][1:]):
        # Unknown names and options fail here, before any stage trains.
        build_reward(extra, where=f"prefdata.extra_rewards[{i}]")


def _online_method(name: str) -> Any:
    from prefdata.train.grpo import GRPO
    from prefdata.train.rloo import RLOO

    return {"grpo": GRPO, "rloo": RLOO}[name]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def heldout_split(pairs: pl.DataFrame, fraction: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training pairs, held-out pairs): `fraction` of the distinct prompt_ids (at least one,
    never all), picked by a hash of the prompt_id so the choice is stable across runs."""
    ids = sorted(set(pairs["prompt_id"].to_list()))
    if fraction <= 0 or len(ids) < 2:
        return pairs, pairs.head(0)
    n = min(max(1, round(fraction * len(ids))), len(ids) - 1)
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"rlhf-heldout\0{i}".encode()).hexdigest())
    held = pl.col("prompt_id").is_in(ranked[:n])
    return pairs.filter(~held), pairs.filter(held)


def _write_if_changed(table: pl.DataFrame, path: Path) -> Path:
    """Write `table` as Parquet atomically, unless the file already holds the same bytes (so
    re-runs leave derived data untouched)."""
    from prefdata.io.tables import atomic_path

    buffer = io.BytesIO()
    table.write_parquet(buffer, compression="zstd", statistics=False)
    data = buffer.getvalue()
    if path.is_file() and path.read_bytes() == data:
        return path
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


@dataclass
class _Data:
    """DATA read once: the pairs (None when DATA is not pairs), held-out pairs, the RL
    prompts derived from the pairs, notes."""

    source: str | None
    pairs: pl.DataFrame | None
    heldout: pl.DataFrame | None
    heldout_from: str
    demos: pl.DataFrame | None = None
    prompts: pl.DataFrame | None = None
    prompts_too_long: int = 0
    notes: list[str] = field(default_factory=list)


def _read(
    data: str | Path | pl.DataFrame,
    eval_data: str | Path | pl.DataFrame | None,
    settings: Mapping[str, Any],
) -> _Data:
    from prefdata.train.common import read_data
    from prefdata.train.sft import read_demonstrations

    source = None if isinstance(data, pl.DataFrame) else str(data)
    table, notes = read_demonstrations(data)
    heldout: pl.DataFrame | None = None
    heldout_from = "none"
    if eval_data is not None:
        heldout, _, _ = read_data(eval_data, ("pairs",))
        heldout_from = "eval_data"
    if not {"prompt", "chosen", "rejected"} <= set(table.columns):
        notes.append("DATA is not pairs: it trains the SFT stage only")
        return _Data(source, None, heldout, heldout_from, demos=table, notes=notes)
    pairs, _, _ = read_data(table, ("pairs",))
    split = settings["split"]
    if heldout is None and split == "auto" and "split" in pairs.columns:
        test = pairs.filter(pl.col("split") == "test")
        if test.height:
            heldout, heldout_from = test, "DATA's split 'test'"
    pairs = select_split(pairs, split, notes)
    if heldout is None:
        fraction = float(settings["heldout_fraction"])
        pairs, held = heldout_split(pairs, fraction)
        if held.height:
            heldout = held
            heldout_from = f"{held['prompt_id'].n_unique()} of DATA's prompts ({fraction:g})"
    elif heldout_from == "eval_data":
        # The same prompt in training and held-out data would flatter the accuracy.
        pairs = pairs.filter(~pl.col("prompt_id").is_in(heldout["prompt_id"].unique().to_list()))
    if pairs.height == 0:
        raise InputError(
            "no training pairs left after holding out the evaluation pairs", source=source
        )
    return _Data(source, pairs, heldout, heldout_from, notes=notes)


# --------------------------------------------------------------------------------------------
# Merging, hashing, manifests
# --------------------------------------------------------------------------------------------


def merge_adapter(adapter: str | Path, base: str | Path, dest: str | Path) -> Path:
    """A LoRA adapter merged into its base model, saved with the adapter folder's tokenizer to
    `dest` (atomically; float32 weights). Returns `dest`."""
    from peft import PeftModel

    from prefdata.io.tables import atomic_path
    from prefdata.train.common import load_policy, load_tokenizer

    model = load_policy(model_path(base), dtype="float32")
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tokenizer = load_tokenizer(str(adapter))
    with atomic_path(dest, directory=True) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info = {"merged_from": {"adapter": str(adapter), "base": model_path(base)}}
        (tmp / "prefdata-merge.json").write_text(json.dumps(info, indent=1) + "\n")
    del merged, model
    return Path(dest)


def _hash(path: str | Path) -> str:
    """Content hash of a file or folder; a name that is no local path (a hub id) as itself."""
    from prefdata.manifest import hash_path

    p = Path(path)
    return hash_path(p) if p.exists() else f"name:{path}"


# Files a training or merge writes beside a model that do not define it: the report (with
# its timings), the resolved recipe, the pickled TrainingArguments and PEFT's model card.
_BOOKKEEPING = frozenset(
    {"prefdata-train.json", "prefdata-merge.json", "recipe.yaml", "training_args.bin", "README.md"}
)


def model_hash(path: str | Path) -> str:
    """Content hash of what defines a model folder: its files (weights or adapter, configs,
    tokenizer) without the bookkeeping beside them (prefdata-train.json, prefdata-merge.json,
    recipe.yaml, training_args.bin, README.md), checkpoint-* and runs/ folders and hidden
    files. So a re-trained model with the same weights hashes the same. A file, or a name that
    is no local path, hashes as `_hash`."""
    from prefdata.manifest import hash_path

    p = Path(path)
    if not p.is_dir():
        return _hash(p)
    digest = hashlib.sha256()
    for file in sorted(p.rglob("*")):
        rel = file.relative_to(p)
        if (
            not file.is_file()
            or rel.name in _BOOKKEEPING
            or any(part.startswith(".") for part in rel.parts)
            or rel.parts[0].startswith("checkpoint-")
            or rel.parts[0] == "runs"
        ):
            continue
        digest.update(rel.as_posix().encode() + b"\0")
        digest.update(hash_path(file).encode() + b"\0")
    return "model:" + digest.hexdigest()


class _Sync:
    """The main-process flag and barrier (accelerate's PartialState; one process: no-ops)."""

    def __init__(self) -> None:
        from accelerate import PartialState

        self.state = PartialState()

    @property
    def main(self) -> bool:
        return bool(self.state.is_main_process)

    def barrier(self) -> None:
        if self.state.num_processes > 1:
            self.state.wait_for_everyone()


def _say(sync: _Sync, message: str) -> None:
    log.info(message)
    if sync.main:
        print(f"rlhf: {message}", file=sys.stderr, flush=True)


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _starts_from(model: Any, folder: Path) -> dict[str, Any]:
    """Compare one LoRA-targeted weight (layer 0's q_proj) of the policy as the RL trainer
    holds it with the same tensor in `folder`'s safetensors: the policy must start there."""
    import torch
    from accelerate.utils import is_peft_model
    from safetensors import safe_open

    base = model.get_base_model() if is_peft_model(model) else model
    files = sorted(folder.glob("*.safetensors"))
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            names = [n for n in handle.keys() if n.endswith("q_proj.weight")]  # noqa: SIM118
            if not names:
                continue
            name = sorted(names)[0]
            module = base.get_submodule(name.removesuffix(".weight"))
            param = getattr(module, "base_layer", module).weight.detach()
            if param.numel() == 0:  # partitioned away (DeepSpeed ZeRO-3): nothing to compare
                return {"tensor": name, "equal": None, "from": str(folder)}
            saved = handle.get_tensor(name).to(param.dtype)
            equal = bool(torch.equal(param.cpu(), saved))
            return {"tensor": name, "equal": equal, "from": str(folder)}
    return {"tensor": None, "equal": None, "from": str(folder)}


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class _Stage:
    """One stage's plan: what it trains, on what, and where it writes."""

    name: str
    recipe: Recipe
    spec: MethodSpec
    data: Path
    model: str
    train_out: Path
    model_out: Path
    eval_data: Path | None = None
    reward_model: Path | None = None

    @property
    def merges(self) -> bool:
        return self.name == "sft" and self.train_out != self.model_out


@dataclass
class RLHFRun:
    """What `prepare` returns for rlhf: the checked plan; `fit(out)` runs the stages."""

    recipe: Recipe
    data: _Data
    model: str
    hardware: Hardware
    out: Path
    report: dict[str, Any]
    spec: MethodSpec = SPEC

    # ---- plan --------------------------------------------------------------------------

    def _data_files(self, out: Path) -> dict[str, Path]:
        """The derived data files (written by `fit`)."""
        files: dict[str, Path] = {}
        if self.data.pairs is not None:
            files["pairs"] = out / "data" / "pairs.parquet"
        if self.data.prompts is not None:
            files["prompts"] = out / "data" / "prompts.parquet"
        elif self.data.demos is not None:
            files["demos"] = (
                Path(self.data.source)
                if self.data.source is not None
                else out / "data" / "demos.parquet"
            )
        if self.data.heldout is not None and self.data.heldout.height:
            files["heldout"] = out / "data" / "heldout.parquet"
        return files

    def stage(self, name: str, out: str | Path | None = None) -> _Stage:
        """The plan of stage `name` for the output folder `out` (default: prepare's)."""
        out = Path(out).resolve() if out is not None else self.out
        settings = self.recipe.prefdata
        given = settings["stages"][name]
        files = self._data_files(out)
        default = (files.get("prompts") if name == "rl" else None) or files.get("pairs")
        if name == "sft":
            default = default or files.get("demos")
        data = Path(given["data"]) if given["data"] else default
        if data is None:
            raise InputError(
                f"DATA is not a pairs table, so the {name} stage needs its own data "
                f"(prefdata.stages.{name}.data)",
                source=self.data.source,
            )
        sft_model = out / "sft" / "model"
        reward_model = out / "reward" / "model"
        resolved, spec = stage_recipe(
            self.recipe, name, hardware=self.hardware, reward_model=reward_model
        )
        full = bool(resolved.prefdata["full_finetune"])
        if name == "sft":
            train_out = sft_model if full else out / "sft" / "adapter"
            return _Stage(name, resolved, spec, data, self.model, train_out, sft_model)
        if name == "reward":
            start = str(sft_model) if settings["reward_from"] == "sft" else self.model
            return _Stage(name, resolved, spec, data, start, reward_model, reward_model)
        from prefdata.train.monitor import monitor_settings

        monitor = monitor_settings(resolved.prefdata["monitor"])
        heldout = files.get("heldout")
        judged = bool(monitor["enabled"] and monitor["judge_every"] and heldout is not None)
        policy = out / "rl" / "model"
        return _Stage(
            name,
            resolved,
            spec,
            data,
            str(sft_model),
            policy,
            policy,
            eval_data=heldout if judged else None,
            reward_model=reward_model,
        )

    def prepare_stage(self, name: str, out: str | Path | None = None) -> Prepared:
        """The trainer of stage `name`, built as `fit` builds it (the stages before it must
        have run): for "rl", the policy loaded from the SFT model, checked to hold its weights
        (report `starts_from`), the reward model as its reward."""
        from prefdata.train import _module

        plan = self.stage(name, out)
        prepared: Prepared = _module(plan.spec.name).prepare(
            plan.recipe,
            plan.data,
            model=plan.model,
            out=plan.train_out,
            eval_data=plan.eval_data,
            hardware=self.hardware,
        )
        if name == "rl":
            check = _starts_from(prepared.trainer.model, Path(plan.model))
            if check["equal"] is False:
                raise TrainingError(
                    f"the RL policy does not hold the SFT model's weights ({check['tensor']})"
                )
            prepared.report["starts_from"] = check
        return prepared

    # ---- running -------------------------------------------------------------------------

    def _options(self, plan: _Stage) -> dict[str, Any]:
        return {
            "recipe": plan.recipe.as_yaml_dict(),
            "merge": plan.merges,
            "rl_method": self.recipe.prefdata["rl_method"] if plan.name == "rl" else None,
        }

    def _inputs(self, plan: _Stage) -> dict[str, str]:
        inputs = {"data": _hash(plan.data), "model": model_hash(model_path(plan.model))}
        if plan.reward_model is not None:
            inputs["reward_model"] = model_hash(plan.reward_model)
        if plan.eval_data is not None:
            inputs["eval_data"] = _hash(plan.eval_data)
        return inputs

    def _run_stage(self, plan: _Stage, out: Path, sync: _Sync) -> dict[str, Any]:
        from prefdata import manifest as mf

        kind = f"rlhf-{plan.name}"
        stage_dir = out / plan.name
        options = self._options(plan)
        digest = mf.options_hash(kind, options)
        inputs = self._inputs(plan)
        outputs = {"model": plan.model_out.relative_to(out).as_posix()}
        if plan.merges:
            outputs["adapter"] = plan.train_out.relative_to(out).as_posix()
        recorded = mf.read_manifest(stage_dir)
        why = mf.up_to_date(recorded, kind=kind, options_digest=digest, inputs=inputs, run_dir=out)
        outcome: dict[str, Any] = {"method": plan.spec.name, "output": str(plan.model_out)}
        if plan.merges:
            outcome["adapter"] = str(plan.train_out)
        if why is None:
            assert recorded is not None
            _say(sync, f"{plan.name}: up to date, skipped ({plan.model_out})")
            report = read_train_report(plan.train_out) or {}
            outcome.update(status="skipped", seconds=0.0, trained_seconds=recorded.get("seconds"))
            return {**outcome, "report": report}
        _say(sync, f"{plan.name} ({plan.spec.name}): running ({why})")
        if sync.main:
            (stage_dir / mf.MANIFEST).unlink(missing_ok=True)
            for folder in {plan.train_out, plan.model_out}:
                shutil.rmtree(folder, ignore_errors=True)
            if plan.name == "rl":
                (stage_dir / "curves.json").unlink(missing_ok=True)
        sync.barrier()
        started = time.perf_counter()
        prepared = self.prepare_stage(plan.name, out)
        report = prepared.fit(plan.train_out)
        curves = _curves(prepared.trainer.state.log_history) if plan.name == "rl" else None
        del prepared
        _free_memory()
        if plan.merges:
            if sync.main:
                merge_adapter(plan.train_out, plan.model, plan.model_out)
            sync.barrier()
        seconds = time.perf_counter() - started
        if sync.main:
            if curves is not None:
                _write_text_atomic(stage_dir / "curves.json", json.dumps(curves, indent=1) + "\n")
            mf.write_manifest(
                stage_dir,
                {
                    "kind": kind,
                    "options_hash": digest,
                    "inputs": inputs,
                    "outputs": outputs,
                    "seconds": seconds,
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            )
        sync.barrier()
        _say(sync, f"{plan.name}: done in {seconds:.1f} s ({plan.model_out})")
        outcome.update(status="ran", reason=why, seconds=seconds, trained_seconds=seconds)
        return {**outcome, "report": report}

    def fit(self, out: str | Path) -> dict[str, Any]:
        """Run the three stages into `out` (skipping those up to date), evaluate the reward
        model on the held-out pairs, and write and return the summary (see the module doc)."""
        out = Path(out).resolve()
        sync = _Sync()
        if sync.main:
            out.mkdir(parents=True, exist_ok=True)
            write_recipe(self.recipe, out)
            files = self._data_files(out)
            if "pairs" in files and self.data.pairs is not None:
                _write_if_changed(self.data.pairs, files["pairs"])
            if "prompts" in files and self.data.prompts is not None:
                _write_if_changed(self.data.prompts, files["prompts"])
            if self.data.demos is not None and self.data.source is None:
                _write_if_changed(self.data.demos, files["demos"])
            if "heldout" in files and self.data.heldout is not None:
                _write_if_changed(self.data.heldout, files["heldout"])
        sync.barrier()
        stages: dict[str, dict[str, Any]] = {}
        for name in STAGES:
            plan = self.stage(name, out)
            stages[name] = self._run_stage(plan, out, sync)
        heldout = self._data_files(out).get("heldout")
        accuracy = _reward_accuracy(
            out, heldout, int(self.recipe.prefdata["eval_batch_size"]), self.data, sync
        )
        summary = _summary(self, out, stages, accuracy)
        if sync.main:
            _write_text_atomic(
                out / "rlhf-summary.json", json.dumps(summary, indent=1, default=str) + "\n"
            )
        sync.barrier()
        return summary


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------

_CURVE_KEYS = {
    "reward": "reward",
    "reward_std": "reward_std",
    "kl": "kl",
    "completions/mean_length": "completion_length",
    "beta": "beta",
    "beta_next": "beta_next",
    "loss": "loss",
}


def _curves(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per logged training step: reward, reward_std, kl, completion length, beta, loss, and
    every reward function's mean (`rewards/<name>/mean`)."""
    rows = []
    for entry in history:
        if "reward" not in entry or "step" not in entry:
            continue
        row: dict[str, Any] = {"step": int(entry["step"])}
        for key, name in _CURVE_KEYS.items():
            if key in entry:
                row[name] = entry[key]
        for key, value in entry.items():
            if key.startswith("rewards/") and key.endswith("/mean"):
                row[key] = value
        rows.append(row)
    return rows


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _first_last(curves: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any] | None:
    values = [v for v in (_finite(c.get(key)) for c in curves) if v is not None]
    if not values:
        return None
    return {"first": values[0], "last": values[-1], "change": values[-1] - values[0]}


def _reward_accuracy(
    out: Path, heldout: Path | None, batch_size: int, data: _Data, sync: _Sync
) -> dict[str, Any]:
    """prefdata.train.evaluate of the reward model on the held-out pairs, cached in
    `OUT/reward/heldout-eval.json` under the hashes of the model and the pairs."""
    if heldout is None:
        return {"note": "no held-out pairs (give eval_data, or prefdata.heldout_fraction > 0)"}
    from prefdata.train import evaluate

    model = out / "reward" / "model"
    cache = out / "reward" / "heldout-eval.json"
    key = hashlib.sha256(
        f"{model_hash(model)}\0{_hash(heldout)}\0{batch_size}".encode()
    ).hexdigest()
    if sync.main:
        found = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
        if found.get("key") != key:
            result = evaluate(model, heldout, batch_size=batch_size)
            found = {"key": key, "result": result}
            _write_text_atomic(cache, json.dumps(found, indent=1, default=str) + "\n")
    sync.barrier()
    result = json.loads(cache.read_text(encoding="utf-8"))["result"]
    keep = ("pairs", "accuracy", "ties", "margin_mean", "margin_median", "kind")
    return {
        "heldout": str(heldout),
        "heldout_from": data.heldout_from,
        **{k: result[k] for k in keep if k in result},
    }


def _summary(
    run: RLHFRun, out: Path, stages: Mapping[str, dict[str, Any]], accuracy: dict[str, Any]
) -> dict[str, Any]:
    rl = stages["rl"]
    rl_report = rl["report"]
    curves_file = out / "rl" / "curves.json"
    curves = json.loads(curves_file.read_text(encoding="utf-8")) if curves_file.is_file() else []
    length = _first_last(curves, "completion_length")
    if length is not None:
        length["ratio"] = length["last"] / length["first"] if length["first"] else None
    monitor = rl_report.get("monitor") or {}
    settings = run.recipe.prefdata
    summary: dict[str, Any] = {
        "method": "rlhf",
        "out": str(out),
        "rl_method": settings["rl_method"],
        "reward_from": settings["reward_from"],
        "data": run.data.source,
        # As the RL stage counted them (prefdata.train.grpo.prepare_online).
        "rl_prompts": rl_report.get("prompts", run.report.get("rl_prompts")),
        "rl_prompts_too_long": rl_report.get(
            "dropped_prompt_too_long", run.report.get("rl_prompts_too_long")
        ),
        "stages": {
            name: {
                **{k: v for k, v in stage.items() if k != "report"},
                "steps": stage["report"].get("steps"),
                "train_loss": stage["report"].get("train_loss"),
            }
            for name, stage in stages.items()
        },
        "outputs": {
            "sft_model": stages["sft"]["output"],
            "reward_model": stages["reward"]["output"],
            "policy": stages["rl"]["output"],
        },
        "reward_model": accuracy,
        "rl": {
            "reference": str(out / "sft" / "model"),
            "beta": rl_report.get("beta"),
            "target_kl": rl_report.get("target_kl"),
            "rewards": rl_report.get("rewards"),
            "starts_from": rl_report.get("starts_from"),
            "reward": _first_last(curves, "reward"),
            "kl": _first_last(curves, "kl"),
            "completion_length": length,
            "curves": curves,
        },
        "monitor": {
            "status": monitor.get("status"),
            "stopped": monitor.get("stopped"),
            "alerts": monitor.get("alerts", []),
            "checks": monitor.get("checks", {}),
        },
        "heldout_judge": (monitor.get("checks") or {}).get("judge")
        or {"note": "no held-out judge configured (rl.prefdata.monitor.judge, judge_every)"},
        "notes": list(dict.fromkeys(run.report.get("notes", []))),
        "warnings": [w for s in stages.values() for w in s["report"].get("warnings", [])],
    }
    return summary


def _count_rl_prompts(run: RLHFRun, plan: _Stage) -> int | None:
    """How many of the RL prompts derived from DATA the RL stage will keep under its
    max_prompt_tokens (counted with the same function it uses); sets the count of those left
    out and a note on `run.data`; InputError when none would be left, before anything trains."""
    from prefdata.train.common import load_tokenizer
    from prefdata.train.grpo import drop_long_prompts, prompt_token_limit

    read = run.data
    if read.prompts is None:
        return None
    limit = prompt_token_limit(plan.recipe)
    if limit is None:
        return read.prompts.height
    tokenizer = load_tokenizer(model_path(run.model))
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


def prepare(
    recipe: Recipe,
    data: str | Path | pl.DataFrame,
    *,
    model: str | Path = "smollm2",
    out: str | Path,
    eval_data: str | Path | pl.DataFrame | None = None,
    hardware: Hardware | None = None,
) -> RLHFRun:
    """Read DATA, hold out the evaluation pairs and check every stage's recipe; nothing
    trains until `fit(out)`. `recipe` is an rlhf Recipe from `load_recipe`."""
    hw = hardware or detect_hardware()
    if recipe.method != SPEC.name or "stages" not in recipe.prefdata:
        raise RecipeError("prefdata.train.rlhf.prepare needs a recipe from rlhf.load_recipe")
    read = _read(data, eval_data, recipe.prefdata)
    if read.pairs is not None and recipe.prefdata["stages"]["rl"]["data"] is None:
        from prefdata.train.grpo import grpo_rows

        # Every distinct prompt goes to OUT/data/prompts.parquet; the RL stage leaves out the
        # long ones itself (prepare_online), so they are only counted here, to refuse early.
        read.prompts = grpo_rows(read.pairs, "pairs")
    run = RLHFRun(
        recipe=dataclasses.replace(recipe, notes=list(recipe.notes)),
        data=read,
        model=str(model),
        hardware=hw,
        out=Path(out).resolve(),
        report={},
    )
    plans = {name: run.stage(name) for name in STAGES}
    rl_prompts = _count_rl_prompts(run, plans["rl"])
    run.report.update(
        {
            "method": "rlhf",
            "model": model_path(model),
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
    return run

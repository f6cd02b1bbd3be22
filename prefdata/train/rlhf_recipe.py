"""The rlhf recipe and data: its stages, stage-prefixed overrides, the held-out split and the
content hashes that decide which stages are up to date (prefdata.train.rlhf documents the
whole chain; prefdata.train.rlhf_run runs it)."""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from prefdata.errors import InputError
from prefdata.train.data import select_split
from prefdata.train.hardware import Hardware, detect_hardware
from prefdata.train.recipe import (
    MethodSpec,
    Recipe,
    RecipeError,
    apply_overrides,
    build_config,
    check_keys,
    coerce,
    config_fields,
    read_recipe,
    resolve_recipe,
)

__all__ = [
    "PREFDATA_DEFAULTS",
    "RL_METHODS",
    "SHARED_PREFDATA",
    "SPEC",
    "STAGES",
    "RLHFData",
    "content_hash",
    "heldout_split",
    "load_recipe",
    "model_hash",
    "read_rlhf_data",
    "split_overrides",
    "stage_recipe",
    "write_if_changed",
]

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
    check_keys(given, STAGES, "rlhf stage", source, prefix="prefdata.stages.")
    out: dict[str, dict[str, Any]] = {}
    for name in STAGES:
        stage = given.get(name) or {}
        where = f"prefdata.stages.{name}"
        if not isinstance(stage, Mapping):
            raise RecipeError(
                f"{where} is a mapping {{recipe, overrides, data}}", source=source, column=where
            )
        check_keys(stage, _STAGE_KEYS, "stage", source, prefix=f"{where}.")
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
    fields = config_fields(SPEC.config_class())
    check_keys(out.trl, list(fields), "shared TrainingArguments", source)
    out.trl = {k: coerce(v, fields[k]) for k, v in out.trl.items()}
    if "output_dir" in out.trl:
        raise RecipeError("output_dir comes from -o/--out", source=source, column="output_dir")
    lora_fields = config_fields(LoraConfig)
    check_keys(out.peft, list(lora_fields), "peft (LoraConfig)", source, prefix="peft.")
    out.peft = {k: coerce(v, lora_fields[k]) for k, v in out.peft.items()}
    known = [*PREFDATA_DEFAULTS, *SHARED_PREFDATA]
    check_keys(out.prefdata, known, "prefdata", source, prefix="prefdata.")
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


def write_if_changed(table: pl.DataFrame, path: Path) -> Path:
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
class RLHFData:
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


def read_rlhf_data(
    data: str | Path | pl.DataFrame,
    eval_data: str | Path | pl.DataFrame | None,
    settings: Mapping[str, Any],
) -> RLHFData:
    from prefdata.train.data import read_data
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
        return RLHFData(source, None, heldout, heldout_from, demos=table, notes=notes)
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
    return RLHFData(source, pairs, heldout, heldout_from, notes=notes)


def content_hash(path: str | Path) -> str:
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
    is no local path, hashes as `content_hash`."""
    from prefdata.manifest import hash_path

    p = Path(path)
    if not p.is_dir():
        return content_hash(p)
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

"""What every training method shares: recipes, hardware, models, LoRA, the reference guard, outputs.

A recipe is YAML (or a mapping) in three parts:

    # TRL's own config fields, at the top level, passed to the method's TRL config unchanged
    beta: 0.1
    learning_rate: 5.0e-6
    per_device_train_batch_size: 4
    peft:        # peft.LoraConfig fields (LoRA is the default; prefdata.full_finetune turns it off)
      r: 16
    prefdata:    # prefdata's own keys; see each method's PREFDATA_DEFAULTS
      full_finetune: false

`key=value` overrides address the same three parts: `beta=0.2`, `peft.r=8`,
`prefdata.full_finetune=true` (values are read as YAML: `loss_type=[sigmoid,sft]`).

Fields the recipe leaves unset keep TRL's defaults, except these, chosen from the hardware
(TRL 1.x defaults `bf16=True` and `gradient_checkpointing=True`, which on a CPU without bf16
support makes a DPO step on SmolLM2 about ten times slower):

- `bf16` / `fp16`: bf16 on a GPU that supports it, fp16 on an older GPU, neither (fp32) on CPU
  and Apple MPS;
- `gradient_checkpointing` (`activation_checkpointing` in transformers 5, which warns on the
  old name that TRL 1.16 still sets): off on CPU and MPS (it only trades time for memory
  there), on for GPUs as TRL defaults;
- `report_to`: "none" (no tracker is contacted unless the recipe names one);
- `output_dir`: the `out` folder given to `train()`.

A value the recipe or an override sets is never replaced; a risky one (bf16 on a CPU) is kept
with a warning in the report.

The resolved recipe is written to `<out>/recipe.yaml` before training starts (run it again
with `--recipe <out>/recipe.yaml`), and the report, with the full TRL config, hardware and
versions, to `<out>/prefdata-train.json` when training ends.

New methods (GRPO, RLHF) plug in with a `MethodSpec` and the same helpers: `read_recipe`,
`resolve_recipe`, `build_config`, `load_policy` / `load_reference`, `lora_config`,
`check_reference_frozen` and `fit`.

torch, transformers, TRL and PEFT are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from prefdata.errors import InputError, MissingExtraError, PrefdataError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "LORA_DEFAULTS",
    "PREFDATA_COMMON_DEFAULTS",
    "Hardware",
    "MethodSpec",
    "Prepared",
    "Recipe",
    "RecipeError",
    "TrainingError",
    "apply_overrides",
    "build_config",
    "check_reference_frozen",
    "detect_hardware",
    "estimate_memory",
    "fit",
    "load_policy",
    "load_reference",
    "load_reward_model",
    "load_tokenizer",
    "lora_config",
    "model_path",
    "read_data",
    "read_recipe",
    "resolve_recipe",
    "tiny_model",
    "to_dataset",
]

log = logging.getLogger(__name__)

_TRAIN_INSTALL = "pip install 'prefdata[train]'"
_TRAIN_MODULES = ("torch", "transformers", "trl", "peft", "accelerate")

SECTIONS = ("peft", "prefdata")
"""Recipe sections that are not TRL fields."""

PREFDATA_COMMON_DEFAULTS: dict[str, Any] = {
    # True: train every weight; the DPO/KTO reference is then a second, frozen copy of the model
    # (or precomputed log-probabilities with TRL's precompute_ref_log_probs). False: LoRA, and
    # the reference is the same model with the adapter disabled (one copy in memory).
    "full_finetune": False,
    # Weights' dtype when loading: "auto" keeps a frozen LoRA base in bf16 on bf16 GPUs (half the
    # memory; the adapter stays fp32) and float32 everywhere else; or "float32", "bfloat16".
    "model_dtype": "auto",
    # Which rows of a table with a `split` column to train on: "auto" = rows whose split is
    # "train" when the column exists, else all rows; null = all rows; any other value = that split.
    "split": "auto",
    # Refuse before loading when weights + gradients + optimizer state surely exceed the free
    # memory (activations come on top, so passing this check is no promise).
    "check_memory": True,
}

LORA_DEFAULTS: dict[str, Any] = {
    "r": 16,
    "lora_alpha": 32,
    # TRL disables dropout in the model (disable_dropout=True), LoRA's dropout modules included.
    "lora_dropout": 0.0,
    # PEFT's "all-linear" leaves the LM head out, which TRL requires (its fused LM head reads
    # lm_head.weight directly, so an adapter there would never train).
    "target_modules": "all-linear",
    "bias": "none",
}

# TRL fields prefdata sets itself (see the module doc); never a recipe's business.
_OWNED_FIELDS = ("output_dir",)


class RecipeError(InputError):
    """A recipe or override that cannot work: unknown key, wrong type, conflicting settings."""


class TrainingError(PrefdataError):
    """Training could not run: the model does not fit, the reference is not frozen, ..."""


def _require_train_extra() -> None:
    import importlib.util

    missing = [m for m in _TRAIN_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"training needs the package(s) {', '.join(missing)}. Install with: {_TRAIN_INSTALL}"
        )


# --------------------------------------------------------------------------------------------
# Methods and recipes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodSpec:
    """How one training method plugs into the shared machinery.

    `config_class` imports the TRL config class lazily. `prefdata_defaults` are the method's own
    keys (on top of PREFDATA_COMMON_DEFAULTS). `task_type` is PEFT's ("CAUSAL_LM" for policies,
    "SEQ_CLS" for reward models). `reference`: "policy" when TRL keeps a reference policy (DPO,
    KTO), "none" otherwise.
    """

    name: str
    config_class: Callable[[], type]
    prefdata_defaults: Mapping[str, Any] = field(default_factory=dict)
    task_type: str = "CAUSAL_LM"
    reference: str = "policy"
    experimental: bool = False
    data_contracts: tuple[str, ...] = ("pairs",)


@dataclass
class Recipe:
    """A recipe split into its three parts. `user_fields`: TRL fields the recipe or an override
    set (prefdata's hardware choices never replace those)."""

    method: str
    trl: dict[str, Any]
    peft: dict[str, Any]
    prefdata: dict[str, Any]
    source: str | None = None
    user_fields: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_yaml_dict(self) -> dict[str, Any]:
        """The recipe as it would be written: TRL fields, then the two sections."""
        out: dict[str, Any] = {"method": self.method}
        out.update({k: v for k, v in self.trl.items() if k not in _OWNED_FIELDS})
        out["peft"] = dict(self.peft)
        out["prefdata"] = dict(self.prefdata)
        return out


def _load_yaml_text(text: str, source: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RecipeError(f"not valid YAML: {err}", source=source) from None


def read_recipe(recipe: str | Path | Mapping[str, Any], *, method: str | None = None) -> Recipe:
    """Read a recipe file (YAML) or mapping into its three parts, without validating values.

    `method` (e.g. "dpo") must match the recipe's own `method:` key when it has one.
    """
    source: str | None
    if isinstance(recipe, Mapping):
        raw: Any = dict(recipe)
        source = None
    else:
        path = Path(recipe)
        source = str(path)
        if not path.is_file():
            raise RecipeError("no such recipe file", source=source)
        raw = _load_yaml_text(path.read_text(encoding="utf-8"), source)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"a recipe is a mapping of keys, got {type(raw).__name__}", source=source)
    raw = dict(raw)
    declared = raw.pop("method", None)
    if declared is not None and method is not None and declared != method:
        raise RecipeError(
            f"this recipe is for '{declared}', not '{method}'", source=source, column="method"
        )
    name = method or declared
    if not name:
        raise RecipeError("the recipe names no method (add `method: dpo`)", source=source)
    sections: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        value = raw.pop(section, None) or {}
        if not isinstance(value, dict):
            raise RecipeError(
                f"'{section}' must be a mapping of keys", source=source, column=section
            )
        sections[section] = dict(value)
    return Recipe(
        method=str(name),
        trl=raw,
        peft=sections["peft"],
        prefdata=sections["prefdata"],
        source=source,
        user_fields=set(raw),
    )


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value` -> (key, value read as YAML). Raises RecipeError without '='."""
    if "=" not in item:
        raise RecipeError(f"an override is key=value, got '{item}'")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise RecipeError(f"an override needs a key, got '{item}'")
    value = _load_yaml_text(text, f"override {key}") if text.strip() else None
    return key, value


def apply_overrides(recipe: Recipe, overrides: Sequence[str]) -> Recipe:
    """A copy of `recipe` with `key=value` overrides applied (`peft.r=8`, `beta=0.2`, ...)."""
    out = dataclasses.replace(
        recipe,
        trl=dict(recipe.trl),
        peft=dict(recipe.peft),
        prefdata=dict(recipe.prefdata),
        user_fields=set(recipe.user_fields),
        notes=list(recipe.notes),
        warnings=list(recipe.warnings),
    )
    for item in overrides:
        key, value = parse_override(item)
        section, _, rest = key.partition(".")
        if section in SECTIONS and rest:
            getattr(out, section)[rest] = value
        elif key in SECTIONS:
            raise RecipeError(f"override one key of '{key}' at a time: {key}.<name>=value")
        else:
            out.trl[key] = value
            out.user_fields.add(key)
    return out


def _type_members(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _coerce(value: Any, annotation: Any) -> Any:
    """Coerce a YAML value to a dataclass field's type where YAML and Python disagree.

    PyYAML reads `5e-6` as a string (YAML 1.1 wants `5.0e-6`), and `loss_type: sigmoid` as a
    string for a list field; both are what users write.
    """
    members = _type_members(annotation)
    if isinstance(value, bool) and bool not in members and str in members:
        # YAML 1.1 reads an unquoted `no` / `yes` as a boolean: `save_strategy: no` means "no".
        return "yes" if value else "no"
    if isinstance(value, str):
        if float in members and int not in members:
            try:
                return float(value)
            except ValueError:
                return value
        if int in members and str not in members:
            try:
                return int(value)
            except ValueError:
                try:
                    return float(value)
                except ValueError:
                    return value
    return value


def _config_fields(config_class: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_class)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_class) if f.init}


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _check_keys(
    given: Mapping[str, Any], known: Sequence[str], what: str, source: str | None, prefix: str = ""
) -> None:
    for key in given:
        if key not in known:
            raise RecipeError(
                f"unknown {what} key '{prefix}{key}'{_suggest(key, known)}",
                source=source,
                column=f"{prefix}{key}",
            )


# --------------------------------------------------------------------------------------------
# Hardware
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hardware:
    """The accelerator training will run on, as prefdata sees it before training starts."""

    accelerator: str  # "cuda", "mps" or "cpu"
    name: str
    bf16: bool  # bf16 arithmetic is supported and fast
    devices: int
    memory_bytes: int | None  # free memory on one device (GPU) or available RAM (CPU)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def detect_hardware() -> Hardware:
    """CUDA GPU (bf16 when the GPU supports it), else Apple MPS, else CPU (fp32)."""
    import torch

    if torch.cuda.is_available():
        free: int | None
        try:
            free = int(torch.cuda.mem_get_info()[0])
        except RuntimeError:
            free = None
        return Hardware(
            accelerator="cuda",
            name=torch.cuda.get_device_name(0),
            bf16=bool(torch.cuda.is_bf16_supported()),
            devices=torch.cuda.device_count(),
            memory_bytes=free,
        )
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return Hardware("mps", "Apple MPS", bf16=False, devices=1, memory_bytes=_available_ram())
    # CPUs: even where bf16 instructions exist, mixed precision measured ~10x slower than fp32
    # for a DPO step here (autocast casts every op), so fp32 it is.
    return Hardware("cpu", "CPU", bf16=False, devices=1, memory_bytes=_available_ram())


def _precision_fields(hw: Hardware, recipe: Recipe, fields: Mapping[str, Any]) -> None:
    """Set bf16 / fp16 / gradient_checkpointing / report_to where the recipe did not."""
    user = recipe.user_fields
    if "bf16" not in user and "fp16" not in user:
        if hw.accelerator == "cuda":
            recipe.trl["bf16"] = hw.bf16
            recipe.trl["fp16"] = not hw.bf16
        else:
            recipe.trl["bf16"] = False
            recipe.trl["fp16"] = False
        mode = "bf16" if recipe.trl["bf16"] else "fp16" if recipe.trl["fp16"] else "fp32"
        recipe.notes.append(f"precision {mode} chosen for {hw.accelerator} ({hw.name})")
    elif "bf16" not in user:
        # fp16 chosen by the user: TRL would still default bf16 to `not fp16`, which is False.
        recipe.trl["bf16"] = False
    if recipe.trl.get("bf16") and hw.accelerator == "cuda" and not hw.bf16:
        raise RecipeError(
            f"bf16=true but this GPU ({hw.name}) does not support bf16; use fp16=true or drop "
            "bf16 and let prefdata choose",
            source=recipe.source,
            column="bf16",
        )
    if recipe.trl.get("bf16") and hw.accelerator != "cuda":
        recipe.warnings.append(
            f"bf16=true on {hw.accelerator}: mixed precision there is often far slower than fp32 "
            "(a DPO step on SmolLM2 measured ~10x slower on CPU); drop bf16 to let prefdata choose"
        )
    if not {"gradient_checkpointing", "activation_checkpointing"} & user:
        # TRL's default is on; it only trades time for memory, which a CPU rarely needs.
        wanted = hw.accelerator == "cuda"
        # transformers 5 renamed the field and warns on the old name, which TRL 1.16 still
        # defaults: setting the new one keeps TRL's choice on GPUs without the warning.
        name = (
            "activation_checkpointing"
            if "activation_checkpointing" in fields
            else ("gradient_checkpointing")
        )
        recipe.trl[name] = wanted
    if "report_to" not in user:
        recipe.trl["report_to"] = "none"


# --------------------------------------------------------------------------------------------
# Resolving a recipe into a TRL config
# --------------------------------------------------------------------------------------------


def resolve_recipe(
    recipe: Recipe,
    spec: MethodSpec,
    *,
    hardware: Hardware | None = None,
) -> Recipe:
    """Check every key, fill prefdata's defaults and the hardware's precision (see module doc).

    Raises RecipeError naming the key for unknown keys (with a close match when there is one)
    and values that cannot work. TRL's own checks run later, in `build_config`.
    """
    _require_train_extra()
    from peft import LoraConfig

    if recipe.method != spec.name:
        raise RecipeError(
            f"this recipe is for '{recipe.method}', not '{spec.name}'", source=recipe.source
        )
    out = apply_overrides(recipe, [])  # a copy
    fields = _config_fields(spec.config_class())
    for key in _OWNED_FIELDS:
        if key in out.trl:
            out.trl.pop(key)
            out.user_fields.discard(key)
            out.notes.append(
                f"'{key}' comes from the output folder given to train(), not the recipe"
            )
    _check_keys(out.trl, list(fields), f"{spec.name.upper()} config", out.source)
    out.trl = {k: _coerce(v, fields[k]) for k, v in out.trl.items()}

    defaults = {**PREFDATA_COMMON_DEFAULTS, **spec.prefdata_defaults}
    _check_keys(out.prefdata, list(defaults), "prefdata", out.source, prefix="prefdata.")
    out.prefdata = {**defaults, **out.prefdata}

    lora_fields = _config_fields(LoraConfig)
    _check_keys(out.peft, list(lora_fields), "peft (LoraConfig)", out.source, prefix="peft.")
    out.peft = {k: _coerce(v, lora_fields[k]) for k, v in {**LORA_DEFAULTS, **out.peft}.items()}

    if out.prefdata["model_dtype"] not in ("auto", "float32", "bfloat16", "float16"):
        raise RecipeError(
            "prefdata.model_dtype must be auto, float32, bfloat16 or float16",
            source=out.source,
            column="prefdata.model_dtype",
        )
    _precision_fields(hardware or detect_hardware(), out, fields)
    return out


def build_config(recipe: Recipe, spec: MethodSpec, out: str | Path) -> Any:
    """The method's TRL config object from a resolved recipe, writing to `out`.

    TRL's own validation runs here; its errors come back as RecipeError with TRL's message.
    """
    config_class = spec.config_class()
    try:
        return config_class(output_dir=str(out), **recipe.trl)
    except (ValueError, TypeError) as err:
        raise RecipeError(f"TRL rejected the recipe: {err}", source=recipe.source) from err


def load_recipe(
    recipe: str | Path | Mapping[str, Any],
    spec: MethodSpec,
    *,
    overrides: Sequence[str] = (),
    hardware: Hardware | None = None,
) -> Recipe:
    """read_recipe + apply_overrides + resolve_recipe, in that order."""
    return resolve_recipe(
        apply_overrides(read_recipe(recipe, method=spec.name), overrides), spec, hardware=hardware
    )


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def read_data(
    data: str | Path | pl.DataFrame, contracts: Sequence[str]
) -> tuple[pl.DataFrame, str | None, str]:
    """A table in one of `contracts` (validated), its source path, and which contract it met.

    `data` is a path (Parquet, JSONL, ... as prefdata.io.tables.read_table reads) or a table.
    """
    from prefdata.io.tables import read_table
    from prefdata.schema import guess_contract, validate

    source = None if isinstance(data, pl.DataFrame) else str(data)
    table = data if isinstance(data, pl.DataFrame) else read_table(data)
    contract = guess_contract(table)
    if contract is None or contract not in contracts:
        hint = ""
        if {"prompt", "chosen", "rejected"} <= set(table.columns):
            hint = " (TRL-format rows become a pairs table with `prefdata import trl`)"
        raise InputError(
            f"expected a {' or '.join(contracts)} table, found columns {table.columns}{hint}",
            source=source,
        )
    return validate(table, contract, source=source), source, contract


def select_split(table: pl.DataFrame, split: str | None, notes: list[str]) -> pl.DataFrame:
    """Rows of the requested split (see PREFDATA_COMMON_DEFAULTS['split'])."""
    if split is None or "split" not in table.columns:
        if split not in (None, "auto"):
            raise InputError(f"prefdata.split is '{split}' but the data has no `split` column")
        return table
    wanted = "train" if split == "auto" else split
    kept = table.filter(pl.col("split") == wanted)
    notes.append(f"split '{wanted}': {kept.height} of {table.height} rows")
    if kept.height == 0:
        raise InputError(f"no rows with split '{wanted}' (set prefdata.split=null for all rows)")
    return kept


def to_dataset(table: pl.DataFrame) -> Any:
    """A `datasets.Dataset` of TRL rows (message lists stay lists of {role, content} dicts)."""
    from prefdata.io.tables import to_hf_dataset

    return to_hf_dataset(table)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def model_path(model: str | Path) -> str:
    """A loadable model location: "smollm2" -> the embedded model's folder; else as given."""
    from prefdata.models import EMBEDDED_MODEL, embedded_model_path

    if str(model) == EMBEDDED_MODEL:
        return str(embedded_model_path())
    path = Path(model).expanduser()
    if path.exists() and not (path / "config.json").is_file():
        raise InputError("not a model folder: config.json is missing", source=path)
    return str(path) if path.exists() else str(model)


def _dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def weights_dtype(recipe: Recipe, hw: Hardware) -> str:
    """The dtype to load weights in (see PREFDATA_COMMON_DEFAULTS['model_dtype'])."""
    choice = str(recipe.prefdata["model_dtype"])
    if choice != "auto":
        return choice
    frozen_base = not recipe.prefdata["full_finetune"]
    if hw.accelerator == "cuda" and recipe.trl.get("bf16") and frozen_base:
        return "bfloat16"
    return "float32"


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (eos when it has none)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise InputError(f"could not load the tokenizer: {err}", source=path) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(path: str, *, dtype: str = "float32") -> PreTrainedModel:
    """A causal LM to train, left where it loads: the trainer places it (and under DeepSpeed
    ZeRO-3 it arrives already partitioned, which a move would break)."""
    from transformers import AutoModelForCausalLM

    try:
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(dtype))
    except OSError as err:
        raise InputError(f"could not load the model: {err}", source=path) from err
    return model


def load_reference(path: str, *, dtype: str = "float32") -> PreTrainedModel:
    """A second copy of the model as a frozen reference: eval mode, no parameter trainable."""
    model = load_policy(path, dtype=dtype)
    model.requires_grad_(False)
    model.eval()
    return model


def load_reward_model(path: str, *, dtype: str = "float32") -> PreTrainedModel:
    """A sequence classifier with one output (the reward) on top of a causal LM checkpoint.

    The score head is new (randomly initialised, seeded by the trainer's seed beforehand).
    """
    from transformers import AutoModelForSequenceClassification

    try:
        from trl.trainer.reward_trainer import suppress_seqcls_warning
    except ImportError:  # an older or newer TRL without it: the warning is harmless
        suppress_seqcls_warning = contextlib.nullcontext  # type: ignore[assignment]
    try:
        # Loading a causal LM checkpoint as a classifier reports the new score head as missing;
        # that is expected here.
        with suppress_seqcls_warning():
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=1, dtype=_dtype(dtype)
            )
    except OSError as err:
        raise InputError(f"could not load the model: {err}", source=path) from err
    return model


def lora_config(fields: Mapping[str, Any], *, task_type: str) -> Any:
    """A peft.LoraConfig from the recipe's `peft` section (LORA_DEFAULTS filled in)."""
    from peft import LoraConfig

    values = {**LORA_DEFAULTS, **fields}
    values.setdefault("task_type", task_type)
    try:
        return LoraConfig(**values)
    except (ValueError, TypeError) as err:
        raise RecipeError(f"PEFT rejected the LoRA settings: {err}", column="peft") from err


_TINY_FORMAT = 1


def tiny_model(
    dest: str | Path | None = None,
    *,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Path:
    """A small randomly initialised model with SmolLM2's architecture and its real tokenizer.

    The config is SmolLM2-135M's (vocabulary, rotary settings, special tokens, tied
    embeddings) with `layers` layers of width `hidden`; the tokenizer and chat template are
    the embedded model's. Saved to `dest`, or to `<cache>/models/tiny-<hash>/` (reused while the
    settings match). For tests and benchmarks: it trains in seconds on a CPU and exercises the
    same code paths as the real model. Returns the folder.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from prefdata.io.tables import atomic_path
    from prefdata.models import embedded_model_path
    from prefdata.paths import cache_root

    if hidden % heads or heads % kv_heads:
        raise ValueError("hidden must be a multiple of heads, and heads a multiple of kv_heads")
    source = embedded_model_path(cache_dir=cache_dir)
    settings: dict[str, Any] = {
        "layers": layers,
        "hidden": hidden,
        "heads": heads,
        "kv_heads": kv_heads,
        "intermediate": intermediate or 2 * hidden,
        "seed": seed,
        "source": source.name,
        "format": _TINY_FORMAT,
    }
    if dest is None:
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        folder = cache_root(cache_dir) / "models" / f"tiny-smollm2-{key}"
        if (folder / "prefdata-tiny.json").is_file():
            return folder
    else:
        folder = Path(dest)
    config = LlamaConfig.from_pretrained(source)
    config.num_hidden_layers = layers
    config.hidden_size = hidden
    config.num_attention_heads = heads
    config.num_key_value_heads = kv_heads
    config.head_dim = hidden // heads
    config.intermediate_size = int(settings["intermediate"])
    config.dtype = "float32"
    devices: list[int] = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    tokenizer = load_tokenizer(str(source))
    with atomic_path(folder, directory=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "prefdata-tiny.json").write_text(json.dumps(settings, indent=2) + "\n")
    return folder


def estimate_memory(
    path: str, *, full_finetune: bool, dtype: str, separate_reference: bool
) -> dict[str, Any]:
    """A lower bound on training memory from the parameter count (no activations).

    Full fine-tuning with AdamW: weights + fp32 gradients + two fp32 moments (+ a reference copy
    when it is separate). LoRA: the frozen weights (adapters are small). Returns parameters and
    bytes.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in meta.parameters())
    width = torch.tensor([], dtype=_dtype(dtype)).element_size()
    need = params * width
    if full_finetune:
        need += params * (4 + 8)
        if separate_reference:
            need += params * width
    return {"parameters": int(params), "bytes_lower_bound": int(need)}


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_fits(estimate: Mapping[str, Any], hw: Hardware, *, source: str) -> None:
    """Refuse early when the lower bound already exceeds the free memory of one device."""
    if os.environ.get("WORLD_SIZE", "1") != "1" or hw.memory_bytes is None:
        return  # sharded or unknown: the estimate per device is not known here
    need = int(estimate["bytes_lower_bound"])
    if need > hw.memory_bytes:
        raise TrainingError(
            f"{source} does not fit: training needs at least {_gib(need)} for weights, gradients "
            f"and optimizer state ({estimate['parameters']:,} parameters), and {hw.accelerator} "
            f"has {_gib(hw.memory_bytes)} free. Try LoRA (prefdata.full_finetune=false), "
            "precompute_ref_log_probs=true, bf16 weights (prefdata.model_dtype=bfloat16), or "
            "several GPUs with train/accelerate/zero3.yaml. "
            "Set prefdata.check_memory=false to try anyway."
        )


_OOM_ADVICE = (
    "lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the effective "
    "batch), lower max_length, set activation_checkpointing=true (gradient_checkpointing before "
    "transformers 5), keep LoRA "
    "(prefdata.full_finetune=false), set precompute_ref_log_probs=true, or shard the model over "
    "several GPUs with --launcher accelerate --accelerate-config train/accelerate/zero3.yaml"
)


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, MemoryError):
        return True
    text = str(err).lower()
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text


# --------------------------------------------------------------------------------------------
# Reference guard
# --------------------------------------------------------------------------------------------


def _numel(param: Any) -> int:
    # DeepSpeed ZeRO-3 leaves an empty local tensor and keeps the real size in ds_numel.
    return int(getattr(param, "ds_numel", param.numel()))


def _is_adapter_param(name: str) -> bool:
    return "lora_" in name or ".modules_to_save." in name


def check_reference_frozen(trainer: Any) -> dict[str, Any]:
    """Verify the reference cannot change before training starts; raise TrainingError if it can.

    - separate reference model: every parameter has requires_grad=False and none shares
      storage with the policy (a shared tensor would be trained through the policy);
    - LoRA with the adapter disabled as reference: every base (non-adapter) parameter has
      requires_grad=False, so disabling the adapter gives back the untouched base model;
    - precomputed reference log-probabilities: nothing to freeze.

    Returns {"reference": kind, "reference_parameters": n, "trainable_parameters": n}.
    """
    from accelerate.utils import is_peft_model

    model = trainer.model
    trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    ref = getattr(trainer, "ref_model", None)
    if ref is not None:
        ref = trainer.accelerator.unwrap_model(ref)
        loose = [n for n, p in ref.named_parameters() if p.requires_grad]
        if loose:
            raise TrainingError(
                f"the reference model has {len(loose)} trainable parameter(s) (e.g. {loose[0]}); "
                "it must be frozen"
            )
        # Parameters partitioned away by DeepSpeed ZeRO-3 are empty here: nothing to compare.
        policy_storage = {p.data_ptr() for p in model.parameters() if p.numel() > 0}
        shared = [
            n for n, p in ref.named_parameters() if p.numel() > 0 and p.data_ptr() in policy_storage
        ]
        if shared:
            raise TrainingError(
                f"the reference model shares {len(shared)} tensor(s) with the policy (e.g. "
                f"{shared[0]}); training would change the reference. Load it separately."
            )
        count = sum(_numel(p) for p in ref.parameters())
        return {
            "reference": "separate frozen model",
            "reference_parameters": int(count),
            "trainable_parameters": int(trainable),
        }
    if is_peft_model(model):
        loose = [
            n for n, p in model.named_parameters() if p.requires_grad and not _is_adapter_param(n)
        ]
        if loose:
            raise TrainingError(
                f"{len(loose)} base parameter(s) are trainable (e.g. {loose[0]}); with LoRA the "
                "reference is the base model with the adapter disabled, so the base must be frozen"
            )
        count = sum(_numel(p) for n, p in model.named_parameters() if not _is_adapter_param(n))
        return {
            "reference": "base model with the adapter disabled",
            "reference_parameters": int(count),
            "trainable_parameters": int(trainable),
        }
    if getattr(trainer.args, "precompute_ref_log_probs", False):
        return {
            "reference": "precomputed log-probabilities",
            "reference_parameters": 0,
            "trainable_parameters": int(trainable),
        }
    raise TrainingError("no reference model, no adapter and no precomputed reference log-probs")


# --------------------------------------------------------------------------------------------
# Training and outputs
# --------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("prefdata", "trl", "peft", "transformers", "torch", "accelerate", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        # mkstemp makes the file private (0600); outputs are meant to be shared like the model.
        os.chmod(name, 0o644)
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


def write_recipe(recipe: Recipe, out: Path) -> Path:
    """Write the resolved, re-runnable recipe to `<out>/recipe.yaml`."""
    import yaml

    chosen = [k for k in recipe.trl if k not in recipe.user_fields]
    header = [
        f"# resolved by prefdata from {recipe.source or 'a mapping'}, overrides applied: what ran.",
    ]
    if chosen:
        header.append(
            f"# {', '.join(chosen)}: chosen by prefdata (for this hardware and data); delete "
            "them to let it choose again."
        )
    text = (
        "\n".join(header)
        + "\n"
        + yaml.safe_dump(recipe.as_yaml_dict(), sort_keys=False, allow_unicode=True)
    )
    path = out / "recipe.yaml"
    _write_text_atomic(path, text)
    return path


def _strict(value: Any) -> Any:
    # A non-finite figure (a length ratio of inf when completions collapse to 0) would be
    # written as the non-standard token `Infinity`, which strict JSON readers refuse.
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    """`value` as strict JSON data: unknown objects as text, inf as "inf", NaN as null."""
    return _strict(json.loads(json.dumps(value, default=str)))


@contextlib.contextmanager
def _friendly_oom() -> Iterator[None]:
    try:
        yield
    except (RuntimeError, MemoryError) as err:
        if _is_oom(err):
            raise TrainingError(
                f"out of memory during training ({err}). Try: {_OOM_ADVICE}"
            ) from err
        raise


def fit(
    trainer: Any,
    *,
    spec: MethodSpec,
    recipe: Recipe,
    hardware: Hardware,
    out: str | Path,
    report: dict[str, Any],
) -> dict[str, Any]:
    """Train, save the model (adapter or full weights) and tokenizer, and write the report.

    `report` holds what the method already knows (data counts, reference check, notes); the
    training figures are added. Returns the report, also written to `<out>/prefdata-train.json`.
    """
    out = Path(out)
    main = trainer.is_world_process_zero()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_recipe(recipe, out)
    with _friendly_oom():
        result = trainer.train()
    trainer.save_model(str(out))
    history = [dict(entry) for entry in trainer.state.log_history]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    report.update(
        {
            "method": spec.name,
            "experimental": spec.experimental,
            "out": str(out),
            "steps": int(result.global_step),
            "train_loss": float(result.training_loss),
            "losses": losses,
            "metrics": dict(result.metrics),
            "last_log": next((e for e in reversed(history) if "loss" in e), {}),
            "precision": {
                "bf16": bool(trainer.args.bf16),
                "fp16": bool(trainer.args.fp16),
                "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
            },
            "hardware": hardware.as_dict(),
            "notes": list(recipe.notes) + list(report.get("notes", [])),
            "warnings": list(recipe.warnings) + list(report.get("warnings", [])),
            "versions": _versions(),
            "recipe": recipe.as_yaml_dict(),
            "trl_config": trainer.args.to_dict(),
        }
    )
    report = _jsonable(report)
    if main:
        _write_text_atomic(out / "prefdata-train.json", json.dumps(report, indent=1) + "\n")
    return report


def read_train_report(model_dir: str | Path) -> dict[str, Any] | None:
    """The report `fit` wrote into a training output folder, or None for other folders."""
    path = Path(model_dir) / "prefdata-train.json"
    if not path.is_file():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def remove_checkpoints(out: str | Path) -> None:
    """Remove Trainer's intermediate `checkpoint-*` folders (tests and benchmarks)."""
    for folder in Path(out).glob("checkpoint-*"):
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Prepared:
    """A trainer built from a resolved recipe, ready to `fit`; `report` holds what is known
    before training (data counts, reference check, notes, warnings)."""

    trainer: Any
    spec: MethodSpec
    recipe: Recipe
    hardware: Hardware
    report: dict[str, Any]

    def fit(self, out: str | Path) -> dict[str, Any]:
        """Train and write the outputs (see `fit`)."""
        return fit(
            self.trainer,
            spec=self.spec,
            recipe=self.recipe,
            hardware=self.hardware,
            out=out,
            report=self.report,
        )


@dataclass
class Models:
    """What `load_models` returns: the model folder, the policy (or reward model), the frozen
    reference when one is kept separately, the LoRA config (None for full fine-tuning), the
    tokenizer and the weights' dtype."""

    path: str
    policy: Any
    reference: Any | None
    peft_config: Any | None
    tokenizer: Any
    dtype: str


def load_models(
    recipe: Recipe,
    spec: MethodSpec,
    hardware: Hardware,
    model: str | Path,
    config: Any,
    *,
    loader: Callable[..., Any] = load_policy,
) -> Models:
    """Load what a method trains, after `build_config` (so DeepSpeed ZeRO-3 can partition the
    weights as they load).

    LoRA (default): the policy plus a LoraConfig; TRL wraps it and, for DPO/KTO, uses the
    base model with the adapter disabled as reference. Full fine-tuning (prefdata.full_finetune)
    of a method with a reference: a second, frozen copy, unless TRL's precompute_ref_log_probs
    is set. Refuses early when weights and optimizer state surely do not fit (check_memory).
    """
    from transformers import set_seed

    path = model_path(model)
    full = bool(recipe.prefdata["full_finetune"])
    dtype = weights_dtype(recipe, hardware)
    separate = (
        full
        and spec.reference == "policy"
        and not getattr(config, "precompute_ref_log_probs", False)
    )
    if recipe.prefdata["check_memory"] and Path(path).is_dir():
        estimate = estimate_memory(
            path, full_finetune=full, dtype=dtype, separate_reference=separate
        )
        check_fits(estimate, hardware, source=path)
    # New weights (a LoRA adapter, a reward head) are drawn at load or wrap time: seed first so
    # a run repeats exactly.
    set_seed(config.seed)
    tokenizer = load_tokenizer(path)
    policy = loader(path, dtype=dtype)
    reference = load_reference(path, dtype=dtype) if separate else None
    peft = None if full else lora_config(recipe.peft, task_type=spec.task_type)
    return Models(path, policy, reference, peft, tokenizer, dtype)

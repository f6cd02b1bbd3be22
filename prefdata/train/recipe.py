"""Recipes: reading, overriding and checking them, and the built-in ones shipped in the package.

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

Every method has a built-in recipe, `prefdata/train/recipes/<method>.yaml` (package data, so a
wheel install has them): `prefdata train dpo --data D -o OUT` uses it when no `--recipe` is
given, and `prefdata recipes list|show|copy` shows them or copies one to start your own.

Fields the recipe leaves unset keep TRL's defaults, except those prefdata chooses from the
hardware (prefdata.train.hardware: precision, activation checkpointing) and `report_to`
("none": no tracker is contacted unless the recipe names one). `output_dir` is always the
`out` folder given to `train()`. A value the recipe or an override sets is never replaced.

torch, transformers, TRL and PEFT are imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefdata.errors import MissingExtraError, RecipeError, TrainingError

if TYPE_CHECKING:
    from prefdata.train.hardware import Hardware

__all__ = [
    "LORA_DEFAULTS",
    "PREFDATA_COMMON_DEFAULTS",
    "RECIPES_DIR",
    "MethodSpec",
    "Recipe",
    "RecipeError",
    "TrainingError",
    "apply_overrides",
    "build_config",
    "builtin_recipe",
    "check_keys",
    "coerce",
    "config_fields",
    "copy_recipe",
    "load_recipe",
    "parse_override",
    "read_recipe",
    "resolve_recipe",
]

_TRAIN_INSTALL = "pip install 'prefdata[train]'"
_TRAIN_MODULES = ("torch", "transformers", "trl", "peft", "accelerate")

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
"""The built-in recipes, one `<method>.yaml` per training method (package data)."""

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
    # QLoRA: null (full-precision base), "4bit" (NF4, double quantisation) or "8bit": the frozen
    # base loads quantised by bitsandbytes (CUDA GPUs only) and LoRA trains on top.
    "quantization": None,
    # transformers' attention implementation for the loaded model (e.g. "sdpa", "eager",
    # "flash_attention_2"); null: transformers' default.
    "attn_implementation": None,
    # A git revision (branch, tag, commit) of a model named by hub id; a local folder has one
    # version, so it is refused there.
    "model_revision": None,
    # TRL's sync_ref_model (and ref_model_sync_steps / ref_model_mixup_alpha) move the reference
    # towards the policy during training. Refused unless this is true; then the report says
    # "reference synced every N steps" instead of claiming a frozen one.
    "allow_reference_sync": False,
    # DPO, KTO and reward on pairs: refuse to train when more than this share of the pairs would
    # be degenerate at the token level (identical, empty or cut; prefdata.train.integrity); the
    # degenerate pairs of a run that starts are left out. 1 (or --allow-degenerate): never refuse.
    "max_degenerate_share": 0.05,
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

# TRL fields prefdata sets itself; never a recipe's business.
_OWNED_FIELDS = ("output_dir",)


def require_train_extra() -> None:
    """Raise MissingExtraError naming the pip install when a training package is missing."""
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

    def copy(self) -> Recipe:
        """A copy whose mappings, sets and lists can change without touching this one."""
        return dataclasses.replace(
            self,
            trl=dict(self.trl),
            peft=dict(self.peft),
            prefdata=dict(self.prefdata),
            user_fields=set(self.user_fields),
            notes=list(self.notes),
            warnings=list(self.warnings),
        )


def _load_yaml_text(text: str, source: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RecipeError(f"not valid YAML: {err}", source=source) from None


def builtin_recipe(method: str) -> Path:
    """The built-in recipe file of `method` (RecipeError when there is none)."""
    path = RECIPES_DIR / f"{method}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
        raise RecipeError(f"no built-in recipe for '{method}'; there are: {', '.join(known)}")
    return path


def read_recipe(
    recipe: str | Path | Mapping[str, Any] | None, *, method: str | None = None
) -> Recipe:
    """Read a recipe file (YAML) or mapping into its three parts, without validating values.

    `method` (e.g. "dpo") must match the recipe's own `method:` key when it has one. `recipe`
    None reads the method's built-in recipe (prefdata/train/recipes/<method>.yaml).
    """
    source: str | None
    if recipe is None:
        if method is None:
            raise RecipeError("no recipe and no method to pick a built-in recipe for")
        recipe = builtin_recipe(method)
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


def copy_recipe(method: str, dest: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Copy the built-in recipe of `method` to `dest` (a .yaml file, or a folder to put
    `<method>.yaml` in, made when missing) to start your own. rlhf's recipe names the stage
    recipes beside it (`sft.yaml`, ...), so those are copied beside it too. Refuses to replace
    an existing file unless `overwrite`. Returns the files written."""
    source = builtin_recipe(method)
    target = Path(dest)
    if target.is_dir() or target.suffix not in (".yaml", ".yml"):
        target = target / source.name
    files = [(source, target)]
    if method == "rlhf":
        stages = (read_recipe(source).prefdata.get("stages") or {}).values()
        for stage in stages:
            name = stage.get("recipe") if isinstance(stage, Mapping) else None
            if isinstance(name, str):
                files.append((RECIPES_DIR / name, target.parent / name))
    existing = [str(t) for _, t in files if t.exists()]
    if existing and not overwrite:
        raise RecipeError(f"already exists: {', '.join(existing)} (pass --overwrite to replace)")
    from prefdata.io.tables import atomic_path

    for src, dst in files:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst) as tmp:
            tmp.write_bytes(src.read_bytes())
    return [t for _, t in files]


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
    out = recipe.copy()
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


def coerce(value: Any, annotation: Any) -> Any:
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


def config_fields(config_class: type) -> dict[str, Any]:
    """A config dataclass's init fields -> their type annotations."""
    hints = typing.get_type_hints(config_class)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_class) if f.init}


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def check_keys(
    given: Mapping[str, Any], known: Sequence[str], what: str, source: str | None, prefix: str = ""
) -> None:
    """RecipeError naming the first key of `given` not in `known` (with close matches)."""
    for key in given:
        if key not in known:
            raise RecipeError(
                f"unknown {what} key '{prefix}{key}'{_suggest(key, known)}",
                source=source,
                column=f"{prefix}{key}",
            )


# --------------------------------------------------------------------------------------------
# Resolving a recipe into a TRL config
# --------------------------------------------------------------------------------------------

_SYNC_FIELDS = ("sync_ref_model", "ref_model_sync_steps", "ref_model_mixup_alpha")
_QUANTIZATION = (None, "4bit", "8bit")


def _check_prefdata_values(recipe: Recipe, fields: Mapping[str, Any]) -> None:
    settings = recipe.prefdata
    if settings["model_dtype"] not in ("auto", "float32", "bfloat16", "float16"):
        raise RecipeError(
            "prefdata.model_dtype must be auto, float32, bfloat16 or float16",
            source=recipe.source,
            column="prefdata.model_dtype",
        )
    if settings["quantization"] not in _QUANTIZATION:
        raise RecipeError(
            f"prefdata.quantization must be null, 4bit or 8bit, got {settings['quantization']!r}",
            source=recipe.source,
            column="prefdata.quantization",
        )
    if settings["quantization"] and settings["full_finetune"]:
        raise RecipeError(
            "prefdata.quantization (QLoRA) trains a LoRA adapter over a frozen quantised base; "
            "it cannot be combined with prefdata.full_finetune=true",
            source=recipe.source,
            column="prefdata.quantization",
        )
    for key in ("attn_implementation", "model_revision"):
        value = settings[key]
        if value is not None and not (isinstance(value, str) and value):
            raise RecipeError(
                f"prefdata.{key} is a name or null, got {value!r}",
                source=recipe.source,
                column=f"prefdata.{key}",
            )
    syncing = [k for k in _SYNC_FIELDS if k in recipe.user_fields and k in fields]
    if recipe.trl.get("sync_ref_model") and not settings["allow_reference_sync"]:
        raise RecipeError(
            "sync_ref_model=true moves the reference towards the policy during training, so it "
            "is no longer the model the KL / implicit reward is measured against. Set "
            "prefdata.allow_reference_sync=true to do it anyway (the report then says "
            "'reference synced every N steps')",
            source=recipe.source,
            column="sync_ref_model",
        )
    if syncing and not recipe.trl.get("sync_ref_model"):
        recipe.notes.append(
            f"{', '.join(syncing)} set without sync_ref_model: TRL ignores them, the reference "
            "stays frozen"
        )


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
    require_train_extra()
    from peft import LoraConfig

    from prefdata.train.hardware import apply_precision, detect_hardware

    if recipe.method != spec.name:
        raise RecipeError(
            f"this recipe is for '{recipe.method}', not '{spec.name}'", source=recipe.source
        )
    out = recipe.copy()
    fields = config_fields(spec.config_class())
    for key in _OWNED_FIELDS:
        if key in out.trl:
            out.trl.pop(key)
            out.user_fields.discard(key)
            out.notes.append(
                f"'{key}' comes from the output folder given to train(), not the recipe"
            )
    check_keys(out.trl, list(fields), f"{spec.name.upper()} config", out.source)
    out.trl = {k: coerce(v, fields[k]) for k, v in out.trl.items()}

    defaults = {**PREFDATA_COMMON_DEFAULTS, **spec.prefdata_defaults}
    check_keys(out.prefdata, list(defaults), "prefdata", out.source, prefix="prefdata.")
    out.prefdata = {**defaults, **out.prefdata}

    lora_fields = config_fields(LoraConfig)
    check_keys(out.peft, list(lora_fields), "peft (LoraConfig)", out.source, prefix="peft.")
    out.peft = {k: coerce(v, lora_fields[k]) for k, v in {**LORA_DEFAULTS, **out.peft}.items()}

    _check_prefdata_values(out, fields)
    apply_precision(hardware or detect_hardware(), out, fields)
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
    recipe: str | Path | Mapping[str, Any] | None,
    spec: MethodSpec,
    *,
    overrides: Sequence[str] = (),
    hardware: Hardware | None = None,
) -> Recipe:
    """read_recipe + apply_overrides + resolve_recipe, in that order (None: the built-in)."""
    return resolve_recipe(
        apply_overrides(read_recipe(recipe, method=spec.name), overrides), spec, hardware=hardware
    )


def recipe_comments(path: str | Path) -> dict[str, str]:
    """`key` (`peft.r`, `prefdata.split` for keys in a section) -> the comment beside it in a
    recipe file, continuation lines joined; keys of deeper mappings are left out."""
    import re

    comments: dict[str, str] = {}
    section = ""
    last: str | None = None
    line_re = re.compile(r"^(\s*)(#\s*)?([A-Za-z_][\w.]*):\s*([^#]*?)\s*(?:#\s?(.*))?$")
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        found = line_re.match(line)
        if found and not found.group(2):
            indent, key, comment = len(found.group(1)), found.group(3), found.group(5)
            if indent == 0:
                section = key if key in SECTIONS else ""
                name = key
            elif indent == 2 and section:
                name = f"{section}.{key}"
            else:
                last = None
                continue
            last = name
            if comment:
                comments[name] = comment.strip()
            continue
        stripped = line.strip()
        if last is not None and stripped.startswith("#") and line.startswith(" " * 8):
            # A comment continued on the next lines, aligned under the first one.
            more = stripped.lstrip("#").strip()
            comments[last] = f"{comments.get(last, '')} {more}".strip()
        else:
            last = None
    return comments

"""Training with TRL + PEFT: on preference pairs DPO (and its loss variants, with per-pair
confidence weights), KTO, reward models and ORPO (TRL experimental); SFT on demonstrations;
on-policy RL from prompts with GRPO and RLOO; and classic three-stage RLHF (SFT, reward
model, RLOO / GRPO against it; TRL 1.16 has no PPO).

    from prefdata.train import train, evaluate
    report = train("dpo", data="pairs.parquet", out="runs/dpo")   # the built-in recipe
    scores = evaluate("runs/dpo", "heldout.parquet").report

Modules: `recipe` (the recipe format, overrides, the built-in recipes in `recipes/`),
`hardware` (precision and memory for the machine), `models` (what `--model` loads, LoRA,
QLoRA), `data` (reading the method's table, TRL's length filter), `method` (what every
method's prepare shares: the MethodRun, reading its table, building its trainer), `integrity` (the
token-level pair check before the first step), `reference` (the frozen
reference guard and checksums), `outputs` (`fit`, the report), then one module per method.

Adding a method: a module holding `SPEC` (a recipe.MethodSpec) and `prepare(recipe, data,
run)` (run: a method.MethodRun, the model, output folder, held-out data and hardware), which
returns something with `.fit(out)` and `.report` (an outputs.Prepared; rlhf returns an
rlhf.RLHFRun), its built-in recipe `recipes/<method>.yaml`, and its line in METHODS below;
the CLI and the pipeline read METHODS. A module that reads its recipe its own way (rlhf:
stages and stage-prefixed overrides) also defines `load_recipe(recipe, *, overrides,
hardware)`. torch, TRL and PEFT are imported only when a function here runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import polars as pl

from prefdata.errors import InputError

if TYPE_CHECKING:
    from prefdata.train.hardware import Hardware
    from prefdata.train.outputs import Prepared
    from prefdata.train.recipe import MethodSpec, Recipe
    from prefdata.train.rlhf import RLHFRun

__all__ = [
    "METHODS",
    "evaluate",
    "load_recipe",
    "method_module",
    "prepare",
    "recipe_keys",
    "spec",
    "train",
]

RecipeSource = str | Path | Mapping[str, Any] | None
"""A recipe file, a mapping, or None for the method's built-in recipe."""

METHODS: dict[str, str] = {
    "dpo": "prefdata.train.dpo",
    "kto": "prefdata.train.kto",
    "reward": "prefdata.train.reward",
    "orpo": "prefdata.train.orpo",
    "grpo": "prefdata.train.grpo",
    "rloo": "prefdata.train.rloo",
    "sft": "prefdata.train.sft",
    "rlhf": "prefdata.train.rlhf",
}
"""The training methods: name -> the module with its SPEC and prepare() (and, for rlhf,
load_recipe()). The one list: the CLI's `prefdata train METHOD` commands and the pipeline's
train stage read it."""


def method_module(method: str) -> Any:
    """The module of training method `method` (InputError for an unknown one)."""
    if method not in METHODS:
        raise InputError(f"unknown training method '{method}'; choose one of {', '.join(METHODS)}")
    return importlib.import_module(METHODS[method])


def spec(method: str) -> MethodSpec:
    """The MethodSpec of `method`."""
    found: MethodSpec = method_module(method).SPEC
    return found


def recipe_keys(method: str) -> list[tuple[str, Any, str]]:
    """The keys a recipe for `method` takes, as (key, value, what it does): the TRL fields and
    `peft.` keys its built-in recipe sets (with the recipe's values), then every `prefdata.`
    key the method reads (the built-in value, else the default), each with the comment the
    built-in recipe gives it. Any other field of the method's TRL config works too."""
    from prefdata.train.recipe import (
        PREFDATA_COMMON_DEFAULTS,
        builtin_recipe,
        read_recipe,
        recipe_comments,
    )

    module = method_module(method)
    path = builtin_recipe(method)
    builtin = read_recipe(path, method=method)
    comments = recipe_comments(path)
    common = getattr(module, "SHARED_PREFDATA", None)
    shared = (
        PREFDATA_COMMON_DEFAULTS
        if common is None
        else {k: PREFDATA_COMMON_DEFAULTS[k] for k in common}
    )
    keys: list[tuple[str, Any, str]] = []
    for key, value in builtin.trl.items():
        keys.append((key, value, comments.get(key, "")))
    for key, value in builtin.peft.items():
        keys.append((f"peft.{key}", value, comments.get(f"peft.{key}", "")))
    defaults = {**shared, **getattr(module, "PREFDATA_DEFAULTS", {})}
    for key, default in defaults.items():
        name = f"prefdata.{key}"
        keys.append((name, builtin.prefdata.get(key, default), comments.get(name, "")))
    return keys


def _resolve(
    module: Any,
    recipe: RecipeSource,
    overrides: Sequence[str],
    hardware: Hardware | None,
) -> Recipe:
    """The module's own load_recipe when it has one, else recipe.load_recipe."""
    from prefdata.train.recipe import load_recipe as _load

    own = getattr(module, "load_recipe", None)
    if own is not None:
        resolved: Recipe = own(recipe, overrides=overrides, hardware=hardware)
        return resolved
    return _load(recipe, module.SPEC, overrides=overrides, hardware=hardware)


def load_recipe(
    method: str, recipe: RecipeSource = None, *, overrides: Sequence[str] = ()
) -> Recipe:
    """Read, override and validate a recipe for `method` (no model is loaded). For rlhf the
    returned recipe holds the shared keys and the stages; each stage's recipe is checked too."""
    import tempfile

    from prefdata.train.recipe import build_config

    resolved = _resolve(method_module(method), recipe, overrides, None)
    # TRL's own checks (e.g. loss_weights against loss_type) run when its config is built.
    with tempfile.TemporaryDirectory() as tmp:
        build_config(resolved, spec(method), tmp)
    return resolved


# Literal["rlhf"] is also a str, so mypy calls these overlapping; the first match wins, as in
# typeshed's open() modes.
@overload
def prepare(  # type: ignore[overload-overlap]
    method: Literal["rlhf"],
    *,
    recipe: RecipeSource = None,
    data: str | Path | pl.DataFrame,
    model: str | Path = ...,
    out: str | Path,
    overrides: Sequence[str] = ...,
    eval_data: str | Path | pl.DataFrame | None = ...,
) -> RLHFRun: ...


@overload
def prepare(
    method: str,
    *,
    recipe: RecipeSource = None,
    data: str | Path | pl.DataFrame,
    model: str | Path = ...,
    out: str | Path,
    overrides: Sequence[str] = ...,
    eval_data: str | Path | pl.DataFrame | None = ...,
) -> Prepared: ...


def prepare(
    method: str,
    *,
    recipe: RecipeSource = None,
    data: str | Path | pl.DataFrame,
    model: str | Path = "smollm2",
    out: str | Path,
    overrides: Sequence[str] = (),
    eval_data: str | Path | pl.DataFrame | None = None,
) -> Prepared | RLHFRun:
    """Everything `train` does before training: the trainer, checked and ready to fit
    (rlhf: the checked plan of its three stages, which train in `.fit(out)`)."""
    from prefdata.train.hardware import detect_hardware
    from prefdata.train.integrity import check_pairs
    from prefdata.train.method import MethodRun

    module = method_module(method)
    hardware = detect_hardware()
    resolved = _resolve(module, recipe, overrides, hardware)
    # Before anything loads: refuse (or leave out) pairs TRL would see as identical, empty or cut.
    checked, integrity = check_pairs(getattr(module, "SPEC", None), resolved, data, model)
    run = MethodRun(out, hardware, model, eval_data)
    prepared: Prepared | RLHFRun = module.prepare(resolved, checked, run)
    report = getattr(prepared, "report", None)
    if integrity is not None and report is not None:
        if checked is not data:  # a filtered table has no file name of its own
            report["data"] = None if isinstance(data, pl.DataFrame) else str(data)
        report["token_integrity"] = integrity
    return prepared


def train(
    method: str,
    *,
    recipe: RecipeSource = None,
    data: str | Path | pl.DataFrame,
    model: str | Path = "smollm2",
    out: str | Path,
    overrides: Sequence[str] = (),
    eval_data: str | Path | pl.DataFrame | None = None,
    merge: bool = False,
) -> dict[str, Any]:
    """Train `method` (one of METHODS: dpo, kto, reward, orpo, grpo, rloo, sft, rlhf) on
    `data` and save to `out`.

    `recipe`: a YAML path or mapping (TRL fields + `peft:` + `prefdata:`), or None for the
    method's built-in recipe (prefdata/train/recipes/METHOD.yaml); `overrides`: `key=value`
    strings (`beta=0.2`, `peft.r=8`, `prefdata.full_finetune=true`; rlhf also takes
    stage-prefixed ones, `rl.beta=0.1`). `data`, as a path or a polars DataFrame: a pairs
    table for dpo / kto / reward / orpo (a kto table also works for KTO); demonstrations for
    sft (pairs, OpenAssistant trees, messages, prompt + completion, text); prompts (or pairs,
    their prompts) for grpo / rloo; pairs or OpenAssistant trees for rlhf. `model`: "smollm2"
    (the embedded SmolLM2-135M-Instruct), a local model folder, or a previous training output
    (a LoRA adapter is merged into its base first; see prefdata.train.models). `eval_data`:
    optional pairs for TRL's evaluation during training (grpo / rloo: the monitor's held-out
    prompts; rlhf: the reward model's held-out pairs). `merge`: also write the trained model
    merged into a full model folder, `out/merged` (rlhf: `out/rl/merged`), e.g. for vLLM.

    dpo / kto / reward on pairs first run the token-level pair check (prefdata.train.integrity):
    more than `prefdata.max_degenerate_share` (0.05) of pairs that TRL would see as identical,
    empty or cut refuses the run (InputError); below that they are left out and the report's
    `token_integrity` lists them.

    Writes to `out`: the adapter (LoRA) or the full model, the tokenizer, `recipe.yaml` (the
    resolved recipe) and `prefdata-train.json` (the report, also returned). rlhf writes one
    folder per stage and `rlhf-summary.json` (returned) instead; see prefdata.train.rlhf.
    """
    return prepare(
        method,
        recipe=recipe,
        data=data,
        model=model,
        out=out,
        overrides=overrides,
        eval_data=eval_data,
    ).fit(out, merge=merge)


def __getattr__(name: str) -> Any:
    # `evaluate` (the stage `prefdata train eval`) loads on first use: the evaluation module
    # pulls in the model loader, which `import prefdata.train` should not.
    if name == "evaluate":
        from prefdata.train.evaluation import evaluate

        return evaluate
    raise AttributeError(f"module 'prefdata.train' has no attribute {name!r}")

"""Training with TRL + PEFT: on preference pairs DPO (and its loss variants, with per-pair
confidence weights), KTO, reward models and ORPO (TRL experimental); SFT on demonstrations;
on-policy RL from prompts with GRPO and RLOO; and classic three-stage RLHF (SFT, reward
model, RLOO / GRPO against it; TRL 1.16 has no PPO).

    from prefdata.train import train, evaluate
    report = train("dpo", recipe="train/dpo.yaml", data="pairs.parquet", out="runs/dpo")
    scores = evaluate("runs/dpo", "heldout.parquet")

Recipes (train/*.yaml) pass TRL's config fields through unchanged; see prefdata.train.common
for the recipe format, overrides and the hardware defaults, and each method's module for its
own `prefdata:` keys. A method module holds `SPEC` and `prepare(...)`, which returns something
with `.fit(out)` and `.report` (a common.Prepared; rlhf returns an rlhf.RLHFRun); a module
that reads its recipe its own way (rlhf: stages and stage-prefixed overrides) also defines
`load_recipe(recipe, *, overrides, hardware)`. torch, TRL and PEFT are imported only when a
function here runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import polars as pl

from prefdata.errors import InputError

if TYPE_CHECKING:
    from prefdata.train.common import Hardware, MethodSpec, Prepared, Recipe
    from prefdata.train.rlhf import RLHFRun

__all__ = ["METHODS", "evaluate", "load_recipe", "prepare", "spec", "train"]

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
"""Method name -> the module with its SPEC and prepare() (and, for rlhf, load_recipe())."""


def _module(method: str) -> Any:
    if method not in METHODS:
        raise InputError(f"unknown training method '{method}'; choose one of {', '.join(METHODS)}")
    return importlib.import_module(METHODS[method])


def spec(method: str) -> MethodSpec:
    """The MethodSpec of `method`."""
    found: MethodSpec = _module(method).SPEC
    return found


def _resolve(
    module: Any,
    recipe: str | Path | Mapping[str, Any],
    overrides: Sequence[str],
    hardware: Hardware | None,
) -> Recipe:
    """The module's own load_recipe when it has one, else common.load_recipe."""
    from prefdata.train.common import load_recipe as _load

    own = getattr(module, "load_recipe", None)
    if own is not None:
        resolved: Recipe = own(recipe, overrides=overrides, hardware=hardware)
        return resolved
    return _load(recipe, module.SPEC, overrides=overrides, hardware=hardware)


def load_recipe(
    method: str, recipe: str | Path | Mapping[str, Any], *, overrides: Sequence[str] = ()
) -> Recipe:
    """Read, override and validate a recipe for `method` (no model is loaded). For rlhf the
    returned recipe holds the shared keys and the stages; each stage's recipe is checked too."""
    import tempfile

    from prefdata.train.common import build_config

    resolved = _resolve(_module(method), recipe, overrides, None)
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
    recipe: str | Path | Mapping[str, Any],
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
    recipe: str | Path | Mapping[str, Any],
    data: str | Path | pl.DataFrame,
    model: str | Path = ...,
    out: str | Path,
    overrides: Sequence[str] = ...,
    eval_data: str | Path | pl.DataFrame | None = ...,
) -> Prepared: ...


def prepare(
    method: str,
    *,
    recipe: str | Path | Mapping[str, Any],
    data: str | Path | pl.DataFrame,
    model: str | Path = "smollm2",
    out: str | Path,
    overrides: Sequence[str] = (),
    eval_data: str | Path | pl.DataFrame | None = None,
) -> Prepared | RLHFRun:
    """Everything `train` does before training: the trainer, checked and ready to fit
    (rlhf: the checked plan of its three stages, which train in `.fit(out)`)."""
    from prefdata.train.common import detect_hardware

    module = _module(method)
    hardware = detect_hardware()
    resolved = _resolve(module, recipe, overrides, hardware)
    prepared: Prepared | RLHFRun = module.prepare(
        resolved, data, model=model, out=out, eval_data=eval_data, hardware=hardware
    )
    return prepared


def train(
    method: str,
    *,
    recipe: str | Path | Mapping[str, Any],
    data: str | Path | pl.DataFrame,
    model: str | Path = "smollm2",
    out: str | Path,
    overrides: Sequence[str] = (),
    eval_data: str | Path | pl.DataFrame | None = None,
) -> dict[str, Any]:
    """Train `method` (one of METHODS: dpo, kto, reward, orpo, grpo, rloo, sft, rlhf) on
    `data` and save to `out`.

    `recipe`: a YAML path or mapping (TRL fields + `peft:` + `prefdata:`); `overrides`:
    `key=value` strings (`beta=0.2`, `peft.r=8`, `prefdata.full_finetune=true`; rlhf also
    takes stage-prefixed ones, `rl.beta=0.1`). `data`, as a path or a polars DataFrame: a pairs
    table for dpo / kto / reward / orpo (a kto table also works for KTO); demonstrations for
    sft (pairs, OpenAssistant trees, messages, prompt + completion, text); prompts (or pairs,
    their prompts) for grpo / rloo; pairs or OpenAssistant trees for rlhf. `model`: "smollm2"
    (the embedded SmolLM2-135M-Instruct) or a local model folder. `eval_data`: optional pairs
    for TRL's evaluation during training (grpo / rloo: the monitor's held-out prompts; rlhf:
    the reward model's held-out pairs).

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
    ).fit(out)


def evaluate(
    model_dir: str | Path, data: str | Path | pl.DataFrame, **options: Any
) -> dict[str, Any]:
    """Held-out preference accuracy of a training output; see prefdata.train.evaluation."""
    from prefdata.train.evaluation import evaluate as _evaluate

    return _evaluate(model_dir, data, **options)

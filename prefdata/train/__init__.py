"""Training on preference data with TRL + PEFT: DPO (and its loss variants, with per-pair
confidence weights), KTO, reward models and ORPO (TRL experimental).

    from prefdata.train import train, evaluate
    report = train("dpo", recipe="train/dpo.yaml", data="pairs.parquet", out="runs/dpo")
    scores = evaluate("runs/dpo", "heldout.parquet")

Recipes (train/*.yaml) pass TRL's config fields through unchanged; see prefdata.train.common
for the recipe format, overrides and the hardware defaults, and each method's module for its
own `prefdata:` keys. torch, TRL and PEFT are imported only when a function here runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from prefdata.errors import InputError

if TYPE_CHECKING:
    from prefdata.train.common import MethodSpec, Prepared, Recipe

__all__ = ["METHODS", "evaluate", "load_recipe", "prepare", "spec", "train"]

METHODS: dict[str, str] = {
    "dpo": "prefdata.train.dpo",
    "kto": "prefdata.train.kto",
    "reward": "prefdata.train.reward",
    "orpo": "prefdata.train.orpo",
    "grpo": "prefdata.train.grpo",
    "sft": "prefdata.train.sft",
    "rlhf": "prefdata.train.rlhf",
}
"""Method name -> the module with its SPEC and prepare(); GRPO and RLHF plug in the same way."""


def _module(method: str) -> Any:
    if method not in METHODS:
        raise InputError(f"unknown training method '{method}'; choose one of {', '.join(METHODS)}")
    return importlib.import_module(METHODS[method])


def spec(method: str) -> MethodSpec:
    """The MethodSpec of `method`."""
    found: MethodSpec = _module(method).SPEC
    return found


def load_recipe(
    method: str, recipe: str | Path | Mapping[str, Any], *, overrides: Sequence[str] = ()
) -> Recipe:
    """Read, override and validate a recipe for `method` (no model is loaded)."""
    from prefdata.train.common import build_config
    from prefdata.train.common import load_recipe as _load

    resolved = _load(recipe, spec(method), overrides=overrides)
    import tempfile

    # TRL's own checks (e.g. loss_weights against loss_type) run when its config is built.
    with tempfile.TemporaryDirectory() as tmp:
        build_config(resolved, spec(method), tmp)
    return resolved


def prepare(
    method: str,
    *,
    recipe: str | Path | Mapping[str, Any],
    data: str | Path | pl.DataFrame,
    model: str | Path = "smollm2",
    out: str | Path,
    overrides: Sequence[str] = (),
    eval_data: str | Path | pl.DataFrame | None = None,
) -> Prepared:
    """Everything `train` does before training: the trainer, checked and ready to fit."""
    from prefdata.train.common import detect_hardware
    from prefdata.train.common import load_recipe as _load

    module = _module(method)
    hardware = detect_hardware()
    resolved = _load(recipe, module.SPEC, overrides=overrides, hardware=hardware)
    prepared: Prepared = module.prepare(
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
    """Train `method` ("dpo", "kto", "reward", "orpo") on `data` and save to `out`.

    `recipe`: a YAML path or mapping (TRL fields + `peft:` + `prefdata:`); `overrides`:
    `key=value` strings (`beta=0.2`, `peft.r=8`, `prefdata.full_finetune=true`). `data`: a pairs
    table (a kto table also works for KTO), as a path or a polars DataFrame. `model`: "smollm2"
    (the embedded SmolLM2-135M-Instruct) or a local model folder. `eval_data`: optional pairs
    for TRL's evaluation during training.

    Writes to `out`: the adapter (LoRA) or the full model, the tokenizer, `recipe.yaml` (the
    resolved recipe) and `prefdata-train.json` (the report, also returned).
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

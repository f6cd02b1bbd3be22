"""Stages that train and evaluate: train (prefdata.train.train: DPO, KTO, GRPO, ...) and eval
(prefdata.train.evaluate: held-out preference accuracy)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefdata.pipeline.kinds import Opt, Slot, StageKind, StageResult, StageRun
from prefdata.pipeline.stages_data import write_json


def _methods() -> tuple[str, ...]:
    from prefdata.train import METHODS

    return tuple(METHODS)


def _contracts(method: str) -> tuple[str, ...]:
    from prefdata import train

    try:
        return train.spec(method).data_contracts
    except ModuleNotFoundError:
        raise ValueError(f"'method': '{method}' is not available in this version") from None


def _train_slots(options: Mapping[str, Any]) -> tuple[Slot, ...]:
    method = options.get("method")
    names = _contracts(method) if method in _methods() else ("pairs",)
    return (Slot(names), Slot(("eval_data", "heldout"), required=False, auto=False))


def _check_train(options: Mapping[str, Any]) -> None:
    if options.get("method") in _methods():
        _contracts(options["method"])


def run_train(stage: StageRun) -> StageResult:
    """`prefdata train METHOD`: the model (LoRA adapter or full weights) in `model/`, with
    its tokenizer, resolved recipe and prefdata-train.json. The data slot is the first of
    the method's contracts an earlier stage made (DPO: pairs; KTO: kto, else pairs; GRPO:
    prompts, else pairs); rows with split "test" are left out when the data has a split."""
    from prefdata.train import train

    opts = stage.options
    recipe = opts["recipe"]
    out = stage.out("model")
    data_slot = _train_slots(opts)[0].key
    report = train(
        opts["method"],
        recipe=Path(recipe) if isinstance(recipe, str) else dict(recipe),
        data=stage.inputs[data_slot],
        model=opts["model"],
        out=out,
        overrides=opts["overrides"],
        eval_data=stage.inputs.get("eval_data"),
    )
    return {"model": out}, {k: v for k, v in report.items() if k not in ("trl_config", "recipe")}


TRAIN = StageKind(
    "train",
    run_train,
    "train on TRL + PEFT: dpo, kto, grpo, reward, orpo, sft (prefdata train)",
    {
        "method": Opt(type="str", choices=_methods(), required=True),
        "recipe": Opt(type="recipe", required=True),
        "overrides": Opt([], "strs"),
        "model": Opt("smollm2", "str"),
    },
    inputs=_train_slots,
    outputs=("model",),
    check=_check_train,
)


def run_eval(stage: StageRun) -> StageResult:
    """`prefdata train eval`: held-out preference accuracy of the trained model, with the
    base model's own log-probability accuracy beside it (before vs after), eval.json and
    the per-pair scores."""
    from prefdata.train import evaluate

    opts = stage.options
    data = stage.table("heldout", "pairs")
    if opts["max_pairs"] is not None:
        data = data.head(opts["max_pairs"])
    report = evaluate(
        stage.inputs["model"],
        data,
        reference=opts["reference"],
        beta=opts["beta"],
        batch_size=opts["batch_size"],
        max_length=opts["max_length"],
        out=stage.out("per_pair.parquet"),
    )
    outputs = {"eval": write_json(report, stage.out("eval.json"))}
    outputs["per_pair"] = stage.out("per_pair.parquet")
    return outputs, report


EVAL = StageKind(
    "eval",
    run_eval,
    "held-out preference accuracy of a trained model (prefdata train eval)",
    {
        "batch_size": Opt(4, "int"),
        "max_length": Opt(None, "int"),
        "reference": Opt(None, "str"),
        "beta": Opt(None, "float"),
        "max_pairs": Opt(None, "int"),
    },
    inputs=(Slot(("model",)), Slot(("heldout", "pairs"))),
    outputs=("eval", "per_pair"),
)

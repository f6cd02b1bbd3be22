"""Stages that train and evaluate: train (prefdata.train.train: dpo, kto, reward, orpo, grpo,
rloo, sft, rlhf) and eval (prefdata.train.evaluate: held-out preference accuracy).

An rlhf train stage writes its whole run folder as `model/` (`sft/model`, `reward/model`,
`rl/model`, `rlhf-summary.json`; see prefdata.train.rlhf); an eval stage reading it scores
the folder its `rlhf_model` option names: `policy` (the RL policy, default), `reward_model`
or `sft_model` (the names of the summary's `outputs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefdata.errors import InputError, OptionError
from prefdata.io.results import write_json
from prefdata.pipeline.kinds import Opt, Slot, StageKind, StageOutputs, StageRun


def _methods() -> tuple[str, ...]:
    from prefdata.train import METHODS

    return tuple(METHODS)


def _contracts(method: str) -> tuple[str, ...]:
    from prefdata import train

    try:
        return train.spec(method).data_contracts
    except ModuleNotFoundError:
        raise OptionError(f"'method': '{method}' is not available in this version") from None


def _train_slots(options: Mapping[str, Any]) -> tuple[Slot, ...]:
    method = options.get("method")
    names = _contracts(method) if method in _methods() else ("pairs",)
    return (Slot(names), Slot(("eval_data", "heldout"), required=False, auto=False))


def _check_train(options: Mapping[str, Any]) -> None:
    if options.get("method") in _methods():
        _contracts(options["method"])


def run_train(stage: StageRun) -> StageOutputs:
    """`prefdata train METHOD`: the model (LoRA adapter or full weights) in `model/`, with
    its tokenizer, resolved recipe and prefdata-train.json (rlhf: its run folder, with one
    folder per stage and rlhf-summary.json). The data slot is the first of the method's
    contracts an earlier stage made (DPO: pairs; KTO: kto, else pairs; GRPO / RLOO: prompts,
    else pairs; SFT: demos, else pairs); rows with split "test" are left out when the data
    has a split."""
    from prefdata.train import train

    opts = stage.options
    recipe = opts["recipe"]
    out = stage.out("model")
    data_slot = _train_slots(opts)[0].key
    if recipe is not None:
        recipe = Path(recipe) if isinstance(recipe, str) else dict(recipe)
    report = train(
        opts["method"],
        recipe=recipe,
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
    "train on TRL + PEFT: dpo, kto, reward, orpo, grpo, rloo, sft, rlhf (prefdata train)",
    {
        "method": Opt(type="str", choices=_methods(), required=True),
        # None: the method's built-in recipe (prefdata/train/recipes/METHOD.yaml).
        "recipe": Opt(None, type="recipe"),
        "overrides": Opt([], "strs"),
        "model": Opt("smollm2", "str"),
    },
    inputs=_train_slots,
    outputs=("model",),
    check=_check_train,
)


RLHF_MODELS = {
    "policy": ("rl", "model"),
    "reward_model": ("reward", "model"),
    "sft_model": ("sft", "model"),
}
"""An rlhf run folder's models (the keys of rlhf-summary.json's `outputs`) -> their folder."""


def eval_model(folder: Path, rlhf_model: str = "policy") -> Path:
    """The model folder an eval stage scores: `folder` itself, or for an rlhf run folder
    (one with rlhf-summary.json) the stage output `rlhf_model` names (RLHF_MODELS).
    InputError when `rlhf_model` is not "policy" and `folder` is no rlhf run."""
    if (folder / "rlhf-summary.json").is_file():
        return folder.joinpath(*RLHF_MODELS[rlhf_model])
    if rlhf_model != "policy":
        raise InputError(
            f"rlhf_model: {rlhf_model} needs an rlhf run folder (with rlhf-summary.json)",
            source=folder,
        )
    return folder


def run_eval(stage: StageRun) -> StageOutputs:
    """`prefdata train eval`: held-out preference accuracy of the trained model, with the
    base model's own log-probability accuracy beside it (before vs after), eval.json and
    the per-pair scores. After an rlhf train stage: of the model `rlhf_model` names."""
    from prefdata.train import evaluate

    opts = stage.options
    data = stage.table("heldout", "pairs")
    if opts["max_pairs"] is not None:
        data = data.head(opts["max_pairs"])
    model = eval_model(Path(stage.inputs["model"]), opts["rlhf_model"])
    report = evaluate(
        model,
        data,
        reference=opts["reference"],
        beta=opts["beta"],
        batch_size=opts["batch_size"],
        max_length=opts["max_length"],
        out=stage.out("per_pair.parquet"),
        progress=stage.progress,
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
        "rlhf_model": Opt("policy", "str", choices=tuple(RLHF_MODELS)),
    },
    inputs=(Slot(("model",)), Slot(("heldout", "pairs"))),
    outputs=("eval", "per_pair"),
)

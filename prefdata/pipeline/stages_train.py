"""The pipeline's `train` stage (prefdata.train.train: dpo, kto, reward, orpo, grpo, rloo,
sft, rlhf). Its data slot depends on the method (DPO: pairs; KTO: kto, else pairs; GRPO /
RLOO: prompts, else pairs; SFT: demos, else pairs), so the kind is written here; its
options are the ones `train()` takes (a parity test holds them equal). `eval` is derived
(prefdata.train.evaluation.evaluate).

An rlhf train stage writes its whole run folder as `model/` (`sft/model`, `reward/model`,
`rl/model`, `rlhf-summary.json`; see prefdata.train.rlhf); an eval stage reading it scores
the folder its `rlhf_model` option names.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefdata.errors import OptionError
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
        merge=opts["merge"],
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
        "merge": Opt(False, "bool"),
    },
    inputs=_train_slots,
    outputs=("model",),
    check=_check_train,
)

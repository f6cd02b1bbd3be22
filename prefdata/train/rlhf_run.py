"""Running an rlhf plan (prefdata.train.rlhf documents the chain): each stage's trainer, the
merge of the SFT adapter, the manifests that let a re-run skip up-to-date stages, the
reward model's held-out accuracy and the summary."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefdata.errors import InputError
from prefdata.models.export import export_model
from prefdata.train.hardware import Hardware
from prefdata.train.models import model_path
from prefdata.train.outputs import Prepared, read_train_report, write_recipe, write_text
from prefdata.train.recipe import MethodSpec, Recipe, TrainingError
from prefdata.train.rlhf_recipe import (
    SPEC,
    STAGES,
    RLHFData,
    content_hash,
    model_hash,
    stage_recipe,
    write_if_changed,
)

__all__ = ["RLHFRun", "StagePlan"]

log = logging.getLogger(__name__)


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
class StagePlan:
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
    data: RLHFData
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

    def stage(self, name: str, out: str | Path | None = None) -> StagePlan:
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
            return StagePlan(name, resolved, spec, data, self.model, train_out, sft_model)
        if name == "reward":
            start = str(sft_model) if settings["reward_from"] == "sft" else self.model
            return StagePlan(name, resolved, spec, data, start, reward_model, reward_model)
        from prefdata.train.monitor import monitor_settings

        monitor = monitor_settings(resolved.prefdata["monitor"])
        heldout = files.get("heldout")
        judged = bool(monitor["enabled"] and monitor["judge_every"] and heldout is not None)
        policy = out / "rl" / "model"
        return StagePlan(
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
        from prefdata.train import method_module
        from prefdata.train.method import MethodRun

        plan = self.stage(name, out)
        run = MethodRun(plan.train_out, self.hardware, plan.model, plan.eval_data)
        prepared: Prepared = method_module(plan.spec.name).prepare(plan.recipe, plan.data, run)
        if name == "rl":
            check = _starts_from(prepared.trainer.model, Path(plan.model))
            if check["equal"] is False:
                raise TrainingError(
                    f"the RL policy does not hold the SFT model's weights ({check['tensor']})"
                )
            prepared.report["starts_from"] = check
        return prepared

    # ---- running -------------------------------------------------------------------------

    def _options(self, plan: StagePlan) -> dict[str, Any]:
        return {
            "recipe": plan.recipe.as_yaml_dict(),
            "merge": plan.merges,
            "rl_method": self.recipe.prefdata["rl_method"] if plan.name == "rl" else None,
        }

    def _inputs(self, plan: StagePlan) -> dict[str, str]:
        inputs = {"data": content_hash(plan.data), "model": model_hash(model_path(plan.model))}
        if plan.reward_model is not None:
            inputs["reward_model"] = model_hash(plan.reward_model)
        if plan.eval_data is not None:
            inputs["eval_data"] = content_hash(plan.eval_data)
        return inputs

    def _run_stage(self, plan: StagePlan, out: Path, sync: _Sync) -> dict[str, Any]:
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
                export_model(plan.train_out, plan.model_out, overwrite=True)
            sync.barrier()
        seconds = time.perf_counter() - started
        if sync.main:
            if curves is not None:
                write_text(stage_dir / "curves.json", json.dumps(curves, indent=1) + "\n")
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

    def fit(self, out: str | Path, *, merge: bool = False) -> dict[str, Any]:
        """Run the three stages into `out` (skipping those up to date), evaluate the reward
        model on the held-out pairs, and write and return the summary (see the module doc).
        `merge`: also write the RL policy merged into a full model, `out/rl/merged`."""
        out = Path(out).resolve()
        sync = _Sync()
        if sync.main:
            out.mkdir(parents=True, exist_ok=True)
            write_recipe(self.recipe, out)
            files = self._data_files(out)
            if "pairs" in files and self.data.pairs is not None:
                write_if_changed(self.data.pairs, files["pairs"])
            if "prompts" in files and self.data.prompts is not None:
                write_if_changed(self.data.prompts, files["prompts"])
            if self.data.demos is not None and self.data.source is None:
                write_if_changed(self.data.demos, files["demos"])
            if "heldout" in files and self.data.heldout is not None:
                write_if_changed(self.data.heldout, files["heldout"])
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
        if merge and sync.main:
            merged, _ = export_model(out / "rl" / "model", out / "rl" / "merged", overwrite=True)
            summary["outputs"]["merged_policy"] = str(merged)
        if sync.main:
            write_text(out / "rlhf-summary.json", json.dumps(summary, indent=1, default=str) + "\n")
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
    out: Path, heldout: Path | None, batch_size: int, data: RLHFData, sync: _Sync
) -> dict[str, Any]:
    """prefdata.train.evaluate of the reward model on the held-out pairs, cached in
    `OUT/reward/heldout-eval.json` under the hashes of the model and the pairs."""
    if heldout is None:
        return {"note": "no held-out pairs (give eval_data, or prefdata.heldout_fraction > 0)"}
    from prefdata.train import evaluate

    model = out / "reward" / "model"
    cache = out / "reward" / "heldout-eval.json"
    key = hashlib.sha256(
        f"{model_hash(model)}\0{content_hash(heldout)}\0{batch_size}".encode()
    ).hexdigest()
    if sync.main:
        found = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
        if found.get("key") != key:
            result = evaluate(model, heldout, batch_size=batch_size).report
            found = {"key": key, "result": result}
            write_text(cache, json.dumps(found, indent=1, default=str) + "\n")
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

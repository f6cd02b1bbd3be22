"""What a training run writes and returns: `fit` trains a prepared trainer, saves the model and
tokenizer, and writes the resolved recipe and the report.

Into the output folder:

- the model: the LoRA adapter (default) or the full weights, with the tokenizer;
- `recipe.yaml`, written before training starts: the recipe with overrides and prefdata's
  choices, runnable again with `--recipe OUT/recipe.yaml`;
- `prefdata-train.json`, when training ends: data counts, what was loaded, the reference check
  and its checksum before and after training, losses, the full TRL config, hardware and
  package versions (strict JSON: inf as text);
- with `merge`, `merged/`: the adapter merged into its base, a full model folder for other
  tools (prefdata.models.export).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefdata.train.hardware import Hardware
    from prefdata.train.recipe import MethodSpec, Recipe

__all__ = [
    "Prepared",
    "fit",
    "jsonable",
    "read_train_report",
    "remove_checkpoints",
    "write_recipe",
    "write_text",
]

REPORT = "prefdata-train.json"
MERGED = "merged"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("prefdata", "trl", "peft", "transformers", "torch", "accelerate", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically (prefdata.io.tables.atomic_path)."""
    from prefdata.io.tables import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


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
    return write_text(out / "recipe.yaml", text)


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


def jsonable(value: Any) -> Any:
    """`value` as strict JSON data: unknown objects as text, inf as "inf", NaN as null."""
    return _strict(json.loads(json.dumps(value, default=str)))


def _checksums(before: str | None, after: str | None, report: dict[str, Any]) -> None:
    if before is None:
        return
    report["reference_checksum"] = {"before": before, "after": after, "unchanged": before == after}
    if before != after and not str(report.get("reference", "")).startswith("reference synced"):
        report.setdefault("warnings", []).append(
            "the reference model's tensors changed during training (sha256 before and after "
            "differ) although nothing was meant to move it: its KL and implicit rewards are "
            "not measured against the starting model"
        )


def fit(
    trainer: Any,
    *,
    spec: MethodSpec,
    recipe: Recipe,
    hardware: Hardware,
    out: str | Path,
    report: dict[str, Any],
    merge: bool = False,
) -> dict[str, Any]:
    """Train, save the model (adapter or full weights) and tokenizer, and write the report.

    `report` holds what the method already knows (data counts, reference check, notes); the
    training figures are added. `merge`: also write the merged full model to `<out>/merged/`.
    Returns the report, also written to `<out>/prefdata-train.json`.
    """
    from prefdata.train.hardware import friendly_oom
    from prefdata.train.reference import reference_checksum

    out = Path(out)
    main = trainer.is_world_process_zero()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_recipe(recipe, out)
    before = reference_checksum(trainer)
    with friendly_oom():
        result = trainer.train()
    _checksums(before, reference_checksum(trainer), report)
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
    report = jsonable(report)
    if main:
        write_text(out / REPORT, json.dumps(report, indent=1) + "\n")
        if merge:
            from prefdata.models.export import export_model

            merged, _ = export_model(out, out / MERGED, overwrite=True)
            report["merged"] = str(merged)
            write_text(out / REPORT, json.dumps(report, indent=1) + "\n")
    return report


def read_train_report(model_dir: str | Path) -> dict[str, Any] | None:
    """The report `fit` wrote into a training output folder, or None for other folders."""
    path = Path(model_dir) / REPORT
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
    before training (data counts, what was loaded, reference check, notes, warnings)."""

    trainer: Any
    spec: MethodSpec
    recipe: Recipe
    hardware: Hardware
    report: dict[str, Any]

    def fit(self, out: str | Path, *, merge: bool = False) -> dict[str, Any]:
        """Train and write the outputs (see `fit`)."""
        return fit(
            self.trainer,
            spec=self.spec,
            recipe=self.recipe,
            hardware=self.hardware,
            out=out,
            report=self.report,
            merge=merge,
        )

"""DPO on pairs with TRL's DPOTrainer, every loss type TRL offers, and per-pair confidence weights.

Input: a pairs table (prefdata.schema "pairs": prompt, chosen, rejected, confidence, ...).
TRL sees conversational rows (`prompt` messages, `chosen` / `rejected` one assistant message
each) plus the `confidence` column, kept through TRL's tokenization.

Loss: TRL's `loss_type` (sigmoid by default; hinge, ipo, robust, exo_pair, nca_pair, bco_pair,
sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop, sft, sigmoid_norm in TRL 1.16, and
lists of them with `loss_weights`), `beta`, `label_smoothing`: all TRL fields, passed through.

prefdata's keys (`prefdata:` section):

- `label_noise`: the data's estimated label-noise rate, a number in [0, 0.5) or the path of a
  JSON report holding one: `prefdata audit-rate`'s (`rate`) or the audit's calibrated estimate
  (`mislabel.noise_rate`, or `noise_rate` at the top). With `loss_type: robust` it becomes
  TRL's `label_smoothing` (the robust loss's flip probability) unless the recipe or an
  override sets that itself (the built-in recipe leaves it unset for this reason).
- `confidence_weighting`: how a pair's `confidence` (probability that chosen really is better)
  weights its loss: "centered" (default: weight = max(0, 2 * confidence - 1), so a coin-flip
  pair, which carries no information about which side is better, counts for nothing and a
  unanimous one fully), "linear" (weight = confidence: a coin flip still counts half as much
  as a sure pair) or "none".
- `missing_confidence_weight`: the weight of a pair without confidence (default 1.0: an
  unmeasured label is trusted as in plain DPO).
- `normalize_weights`: divide the weights by their mean over the training set (default true),
  so weighting changes which pairs matter, not the overall step size.

How the weights enter: TRL computes the DPO loss inside `_compute_loss` and returns only its
batch mean, with no per-pair hook. Every pair loss TRL offers (except aot / aot_unpaired, which
sort values across the batch and are refused with weights) depends on the policy only through
that pair's two sequences, so scaling the gradient that flows into those sequences' token
log-probabilities by w_i gives exactly the gradient of mean_i(w_i * loss_i). The subclass does
this with a tensor hook on the policy output, set up in `compute_loss` (Trainer's documented
override point); `compute_ref_log_probs` only drops the weights before the reference forward.
The logged `loss` stays TRL's unweighted mean; `pair_weight_mean` is logged beside it.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from prefdata.errors import InputError
from prefdata.train.data import PROMPT_FILLS, check_kept
from prefdata.train.method import Data, MethodRun, build_trainer, read_training_table
from prefdata.train.models import pad_token_id
from prefdata.train.outputs import Prepared
from prefdata.train.recipe import MethodSpec, Recipe, RecipeError
from prefdata.train.reference import check_reference_frozen

__all__ = [
    "PREFDATA_DEFAULTS",
    "SPEC",
    "WEIGHT_KEY",
    "ConfidenceWeights",
    "dpo_rows",
    "label_noise_rate",
    "prepare",
    "weighted_trainer_class",
]

WEIGHTING_MODES = ("linear", "centered", "none")
# Losses that sort values across the batch: a pair's loss is no longer its own, so per-pair
# weights would land on the wrong pairs (TRL refuses its own WPO weights there for this reason).
_BATCH_SORTING_LOSSES = ("aot", "aot_unpaired")
# Losses whose flip probability is TRL's label_smoothing.
_FLIP_RATE_LOSSES = ("robust",)
WEIGHT_KEY = "pair_weight"
"""The batch key carrying each pair's weight from the collator to compute_loss."""

PREFDATA_DEFAULTS: dict[str, Any] = {
    "label_noise": None,
    # centered: a coin-flip pair (confidence 0.5) carries no weight; see the module doc.
    "confidence_weighting": "centered",
    "missing_confidence_weight": 1.0,
    "normalize_weights": True,
}


def _dpo_config() -> type:
    from trl import DPOConfig

    return DPOConfig


SPEC = MethodSpec("dpo", _dpo_config, PREFDATA_DEFAULTS)


def dpo_loss_types() -> tuple[str, ...]:
    """The loss types the installed TRL lists in DPOConfig's help (empty if it cannot tell)."""
    import dataclasses
    import re

    config = _dpo_config()
    help_text = next(
        (f.metadata.get("help", "") for f in dataclasses.fields(config) if f.name == "loss_type"),
        "",
    )
    return tuple(dict.fromkeys(re.findall(r"`'(\w+)'`", help_text)))


# --------------------------------------------------------------------------------------------
# Confidence -> weight
# --------------------------------------------------------------------------------------------


class ConfidenceWeights:
    """Maps a pair's confidence (or None) to its loss weight; see the module doc."""

    def __init__(self, mode: str = "centered", *, missing: float = 1.0, scale: float = 1.0) -> None:
        if mode not in WEIGHTING_MODES:
            raise RecipeError(
                f"prefdata.confidence_weighting must be one of {', '.join(WEIGHTING_MODES)}, "
                f"got '{mode}'",
                column="prefdata.confidence_weighting",
            )
        if not (missing >= 0 and math.isfinite(missing)):
            raise RecipeError(
                "prefdata.missing_confidence_weight must be a finite number >= 0",
                column="prefdata.missing_confidence_weight",
            )
        self.mode = mode
        self.missing = float(missing)
        self.scale = float(scale)

    def raw(self, confidence: float | None) -> float:
        if self.mode == "none":
            return 1.0
        if confidence is None or (isinstance(confidence, float) and math.isnan(confidence)):
            return self.missing
        if self.mode == "linear":
            return float(confidence)
        return max(0.0, 2.0 * float(confidence) - 1.0)

    def __call__(self, confidence: float | None) -> float:
        return self.raw(confidence) * self.scale

    @classmethod
    def for_table(
        cls, confidence: Sequence[float | None], settings: Mapping[str, Any]
    ) -> ConfidenceWeights:
        """Weights for the training rows, normalised to mean 1 over them when asked."""
        weights = cls(
            str(settings["confidence_weighting"]),
            missing=float(settings["missing_confidence_weight"]),
        )
        if settings["normalize_weights"] and weights.mode != "none" and len(confidence):
            mean = sum(weights.raw(c) for c in confidence) / len(confidence)
            if mean <= 0:
                raise InputError(
                    "every pair has weight 0 (confidence at most 0.5 with 'centered' weighting?)",
                    column="confidence",
                )
            weights.scale = 1.0 / mean
        return weights

    def describe(self, confidence: Sequence[float | None]) -> dict[str, Any]:
        values = [self(c) for c in confidence]
        return {
            "confidence_weighting": self.mode,
            "pairs_with_confidence": sum(c is not None for c in confidence),
            "weight_scale": self.scale,
            "weight_mean": sum(values) / len(values) if values else None,
            "weight_min": min(values) if values else None,
            "weight_max": max(values) if values else None,
            "pairs_weight_zero": sum(v == 0 for v in values),
        }


class ConfidenceCollator:
    """TRL's preference collator plus a `pair_weight` tensor, one weight per pair (in batch
    order; TRL stacks the chosen sequences, then the rejected ones)."""

    def __init__(self, inner: Any, weights: ConfidenceWeights) -> None:
        self.inner = inner
        self.weights = weights

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch: dict[str, Any] = self.inner(examples)
        batch[WEIGHT_KEY] = torch.tensor(
            [self.weights(example.get("confidence")) for example in examples],
            dtype=torch.float32,
        )
        return batch


@functools.cache
def weighted_trainer_class() -> type:
    """TRL's DPOTrainer with per-pair weights (see the module doc for why this is exact)."""
    import torch
    from trl import DPOTrainer

    from prefdata.train.trl_hooks import check_trl_hooks

    check_trl_hooks()

    class ConfidenceDPOTrainer(DPOTrainer):
        """DPOTrainer whose gradient is that of mean_i(w_i * loss_i), w from `pair_weight`."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pair_weights: torch.Tensor | None = None
            self._weight_sums: list[float] = []
            # The policy's forward returns per-token log-probs (TRL's fused LM head); the
            # reference forward runs under no_grad, so only the policy's output gets the hook.
            policy: Any = self.model
            policy.register_forward_hook(self._scale_pair_gradients)

        def _scale_pair_gradients(self, module: Any, args: Any, output: Any) -> None:
            weights = self._pair_weights
            log_probs = getattr(output, "log_probs", None)
            if weights is None or log_probs is None or not log_probs.requires_grad:
                return
            rows = torch.cat([weights, weights]).to(log_probs.device, log_probs.dtype)
            if rows.shape[0] != log_probs.shape[0]:
                raise RuntimeError(
                    f"{rows.shape[0]} pair weights for {log_probs.shape[0]} sequences"
                )
            log_probs.register_hook(lambda grad: grad * rows.unsqueeze(-1))

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            weights = inputs.pop(WEIGHT_KEY, None)
            if weights is not None and model.training:
                self._pair_weights = weights
                self._weight_sums.append(float(weights.mean()))
            try:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                self._pair_weights = None

        def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
            inputs = {k: v for k, v in inputs.items() if k != WEIGHT_KEY}
            return super().compute_ref_log_probs(model, inputs)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if self._weight_sums and "loss" in logs:
                logs["pair_weight_mean"] = sum(self._weight_sums) / len(self._weight_sums)
                self._weight_sums.clear()
            super().log(logs, start_time)

    return ConfidenceDPOTrainer


# --------------------------------------------------------------------------------------------
# Label noise -> robust loss
# --------------------------------------------------------------------------------------------


def label_noise_rate(value: Any) -> float | None:
    """A label-noise rate from a number or from a JSON report: `prefdata audit-rate`'s (`rate`)
    or the audit's calibrated estimate (`mislabel.noise_rate`, or `noise_rate`)."""
    if value is None:
        return None
    source: str | None = None
    if isinstance(value, str | Path) and not _is_number(value):
        source = str(value)
        path = Path(value)
        if not path.is_file():
            raise RecipeError(
                "no such noise-rate report", source=source, column="prefdata.label_noise"
            )
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise RecipeError(f"not JSON: {err}", source=source) from None
        value = _reported_rate(report)
        if value is None:
            raise RecipeError(
                "the report has no `rate` (audit-rate) and no `mislabel.noise_rate` or "
                "`noise_rate` (the audit): was anything reviewed or audited?",
                source=source,
                column="rate",
            )
    rate = float(value)
    if not 0.0 <= rate < 0.5:
        raise RecipeError(
            f"a label-noise rate must lie in [0, 0.5), got {rate} (at 0.5 the labels carry no "
            "information; above it they are mostly flipped)",
            source=source,
            column="prefdata.label_noise",
        )
    return rate


def _reported_rate(report: Any) -> Any:
    """audit-rate's `rate`, else the audit's estimate, read by the audit's own reader
    (prefdata.quality.mislabel.label_noise_rate: `mislabel.noise_rate` or `noise_rate`)."""
    if not isinstance(report, dict):
        return None
    if report.get("rate") is not None:
        return report["rate"]
    from prefdata.quality.mislabel import label_noise_rate as audit_rate

    try:
        return audit_rate(report)
    except InputError:
        return None


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _apply_label_noise(recipe: Recipe) -> float | None:
    rate = label_noise_rate(recipe.prefdata.get("label_noise"))
    if rate is None:
        return None
    losses = _loss_types(recipe)
    if not any(loss in _FLIP_RATE_LOSSES for loss in losses):
        recipe.warnings.append(
            f"prefdata.label_noise={rate:g} has no effect with loss_type {losses}: only the "
            "robust loss reads it (as label_smoothing, its flip rate); add loss_type=robust"
        )
        return rate
    if "label_smoothing" in recipe.user_fields:
        given = float(recipe.trl["label_smoothing"])
        if not math.isclose(given, rate):
            recipe.notes.append(
                f"label_smoothing={given:g} from the recipe kept; the data's label-noise "
                f"estimate {rate:g} was not used"
            )
        return rate
    recipe.trl["label_smoothing"] = rate
    recipe.notes.append(
        f"label_smoothing={rate:g}: the estimated label-noise rate, as the robust loss's flip rate"
    )
    return rate


def _loss_types(recipe: Recipe) -> list[str]:
    value = recipe.trl.get("loss_type", ["sigmoid"])
    return [value] if isinstance(value, str) else [str(v) for v in value]


# --------------------------------------------------------------------------------------------
# Data and trainer
# --------------------------------------------------------------------------------------------


def dpo_rows(pairs: pl.DataFrame) -> pl.DataFrame:
    """Pairs -> TRL conversational preference rows: prompt, chosen, rejected, confidence."""
    from prefdata.io.exporters import to_trl

    rows = to_trl(pairs, conversational=True, minimal=True)
    return rows.with_columns(pairs["confidence"].cast(pl.Float64).alias("confidence"))


def prepare(recipe: Recipe, data: Data, run: MethodRun) -> Prepared:
    """Build the DPO trainer from a resolved recipe (see recipe.load_recipe) and a pairs table.

    The reference is checked frozen before this returns.
    """
    recipe = recipe.copy()
    known = dpo_loss_types()
    losses = _loss_types(recipe)
    unknown = [loss for loss in losses if known and loss not in known]
    if unknown:
        raise RecipeError(
            f"unknown DPO loss_type {unknown}; TRL offers {', '.join(known)}",
            source=recipe.source,
            column="loss_type",
        )
    noise = _apply_label_noise(recipe)

    notes: list[str] = []
    table, source, _ = read_training_table(data, SPEC, recipe, notes)
    rows = dpo_rows(table)
    confidence = rows["confidence"].to_list()
    weights = ConfidenceWeights.for_table(confidence, recipe.prefdata)
    weighted = weights.mode != "none"
    if weighted and any(loss in _BATCH_SORTING_LOSSES for loss in losses):
        raise RecipeError(
            f"loss_type {losses} sorts values across the batch, so per-pair confidence weights "
            "would land on other pairs; set prefdata.confidence_weighting=none",
            source=recipe.source,
            column="prefdata.confidence_weighting",
        )
    if weighted:
        if recipe.trl.get("remove_unused_columns") is True:
            raise RecipeError(
                "remove_unused_columns=true drops the confidence column the weights need; "
                "remove it or set prefdata.confidence_weighting=none",
                source=recipe.source,
                column="remove_unused_columns",
            )
        # TRL keeps only its token columns otherwise; the collator reads `confidence`.
        recipe.trl["remove_unused_columns"] = False

    config, models = run.load(recipe, SPEC)
    eval_rows = run.eval_rows(SPEC, lambda held, _: dpo_rows(held))

    trainer_class: Any
    kwargs: dict[str, Any] = {}
    if weighted:
        from trl.trainer.dpo_trainer import DataCollatorForPreference

        inner = DataCollatorForPreference(
            pad_token_id=pad_token_id(models.tokenizer),
            max_length=config.max_length,
            truncation_mode=config.truncation_mode,
            pad_to_multiple_of=config.pad_to_multiple_of,
        )
        kwargs["data_collator"] = ConfidenceCollator(inner, weights)
        trainer_class = weighted_trainer_class()
    else:
        from trl import DPOTrainer

        trainer_class = DPOTrainer
    trainer = build_trainer(
        trainer_class, config, models, rows, eval_rows, ref_model=models.reference, **kwargs
    )
    reference = check_reference_frozen(trainer)
    report: dict[str, Any] = {
        "model": models.path,
        "data": source,
        "pairs": rows.height,
        "pairs_after_tokenization": len(trainer.train_dataset),
        "model_loaded": models.loaded,
        "loss_type": losses,
        "beta": config.beta,
        "label_smoothing": config.label_smoothing,
        "label_noise": noise,
        "weights_dtype": models.dtype,
        "finetune": models.finetune,
        **weights.describe(confidence),
        **reference,
        "notes": notes,
    }
    check_kept(report, trainer, rows.height, rows="pairs", why=PROMPT_FILLS, source=source)
    return Prepared(trainer, SPEC, recipe, run.hardware, report)

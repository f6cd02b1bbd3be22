"""KTO with TRL's KTOTrainer, from KTO data (thumbs up / down) or from pairs.

Input: a kto table (prompt, completion, label, ...) or a pairs table; each pair becomes one
desirable row (chosen) and one undesirable row (rejected) through
prefdata.io.convert.pairs_to_kto. TRL sees conversational rows: `prompt` messages, `completion`
one assistant message, `label` (bool).

Balance: TRL's advice (KTO paper, Eq. 8) is that
desirable_weight * n_desirable / (undesirable_weight * n_undesirable) lie in [1, 4/3]. With
`prefdata.balance: auto` (default) and neither weight set in the recipe, prefdata up-weights
the rarer side so the ratio sits in the middle of that range (7/6), leaving the other weight
at 1; pairs give equal counts, so nothing changes for them. Weights the recipe sets are kept,
and the report says whether they follow the advice.

Coin flips (`prefdata.min_confidence`, 0.5): KTO has no per-row weight, and a row (or the pair
it came from) whose `confidence` is at most 0.5 says nothing about whether the completion is
good, so it is left out before conversion (counted as `dropped_coin_flip`); rows without a
confidence are kept.

KTO's KL estimate pairs each completion with another prompt of the same batch, so TRL needs
per_device_train_batch_size > 1 (checked before any model loads).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from prefdata.io.convert import KTO_RATIO_ADVICE
from prefdata.models.loader import load_tokenizer
from prefdata.train.data import PROMPT_FILLS, check_kept, drop_coin_flips, token_ids
from prefdata.train.method import Data, MethodRun, build_trainer, read_training_table
from prefdata.train.outputs import Prepared
from prefdata.train.recipe import MethodSpec, Recipe, RecipeError
from prefdata.train.reference import check_reference_frozen

__all__ = ["PREFDATA_DEFAULTS", "SPEC", "balance_weights", "kto_rows", "prepare"]

PREFDATA_DEFAULTS: dict[str, Any] = {
    "balance": "auto",
    # Rows (or pairs) whose confidence is at most this (0.5: a coin flip) are left out; null
    # keeps every row. See the module doc.
    "min_confidence": 0.5,
}
# The middle of TRL's advised [1, 4/3]: TRL rounds its bounds to two decimals before comparing,
# so a weight exactly on a bound can be reported out of range.
_TARGET_RATIO = (KTO_RATIO_ADVICE[0] + KTO_RATIO_ADVICE[1]) / 2


def _kto_config() -> type:
    from trl import KTOConfig

    return KTOConfig


SPEC = MethodSpec("kto", _kto_config, PREFDATA_DEFAULTS, data_contracts=("kto", "pairs"))


def balance_weights(
    n_desirable: int,
    n_undesirable: int,
    *,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[float, float]:
    """Weights putting the weighted desirable:undesirable ratio at 7/6 (TRL advises 1 to 4/3).

    Only the rarer side's weight changes; with equal counts (or an empty side) both stay.
    """
    if n_desirable == 0 or n_undesirable == 0:
        return desirable_weight, undesirable_weight
    ratio = desirable_weight * n_desirable / (undesirable_weight * n_undesirable)
    lo, hi = KTO_RATIO_ADVICE
    if lo <= ratio <= hi:
        return desirable_weight, undesirable_weight
    if n_desirable < n_undesirable:
        return _TARGET_RATIO * undesirable_weight * n_undesirable / n_desirable, undesirable_weight
    return desirable_weight, desirable_weight * n_desirable / (_TARGET_RATIO * n_undesirable)


def weighted_ratio(n_desirable: int, n_undesirable: int, dw: float, uw: float) -> float | None:
    if n_undesirable == 0 or uw == 0:
        return None
    return dw * n_desirable / (uw * n_undesirable)


def kto_rows(table: pl.DataFrame, *, seed: int | None = 42) -> tuple[pl.DataFrame, dict[str, Any]]:
    """A kto or pairs table -> TRL conversational unpaired rows (prompt, completion, label) and
    the balance report of prefdata.io.convert.kto_balance.

    Rows are shuffled with `seed` (None keeps the order): TRL reads KTO data in order and
    estimates the KL term by pairing each completion with its neighbour's prompt, so the
    neighbours must not share a prompt, as they do in pairs -> KTO (chosen row, rejected row)
    and in tables grouped by prompt.
    """
    from prefdata.io.exporters import to_kto

    rows, balance = to_kto(table, conversational=True, minimal=True)
    if seed is not None:
        rows = rows.sample(fraction=1.0, shuffle=True, seed=seed)
    return rows, balance


def kept_by_trl(rows: pl.DataFrame, tokenizer: Any, max_length: int) -> pl.Series:
    """Which rows TRL's KTO preprocessing keeps: those whose tokenized prompt (the part shared
    with prompt + completion, as TRL cuts it) is shorter than `max_length`."""
    from trl.data_utils import common_prefix_length

    keep = []
    for prompt, completion in zip(
        rows["prompt"].to_list(), rows["completion"].to_list(), strict=True
    ):
        prompt_ids = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=True
        )
        full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True)
        prompt_ids = token_ids(prompt_ids)
        keep.append(common_prefix_length(prompt_ids, token_ids(full_ids)) < max_length)
    return pl.Series("keep", keep, dtype=pl.Boolean)


def prepare(recipe: Recipe, data: Data, run: MethodRun) -> Prepared:
    """Build the KTO trainer from a resolved recipe and a kto or pairs table."""
    from trl import KTOTrainer

    recipe = recipe.copy()
    if recipe.prefdata["balance"] not in ("auto", "off"):
        raise RecipeError(
            "prefdata.balance must be auto or off", source=recipe.source, column="prefdata.balance"
        )
    loss_type = recipe.trl.get("loss_type", "kto")
    batch = int(recipe.trl.get("per_device_train_batch_size", 8))
    if loss_type == "kto" and batch <= 1:
        raise RecipeError(
            "KTO estimates its KL term from the other completions of a batch: "
            "per_device_train_batch_size must be at least 2",
            source=recipe.source,
            column="per_device_train_batch_size",
        )

    notes: list[str] = []
    table, source, contract = read_training_table(data, SPEC, recipe, notes)
    table, coin_flips = drop_coin_flips(
        table, recipe.prefdata["min_confidence"], notes, source=source
    )
    rows, balance = kto_rows(table, seed=int(recipe.trl.get("seed", 42)))
    n_good, n_bad = int(balance["desirable"]), int(balance["undesirable"])
    if n_good == 0 or n_bad == 0:
        notes.append(f"only {'un' if n_good == 0 else ''}desirable rows: KTO learns from one side")
    user_set = {"desirable_weight", "undesirable_weight"} & recipe.user_fields
    auto = recipe.prefdata["balance"] == "auto" and not user_set
    max_length = recipe.trl.get("max_length", 1024)
    if auto and max_length is not None:
        # TRL drops rows whose prompt alone fills max_length; balance what it will train on.
        keep = kept_by_trl(rows, load_tokenizer(run.model), int(max_length))
        if not keep.all():
            n_good = int(rows.filter(keep)["label"].sum())
            n_bad = int(keep.sum()) - n_good
            notes.append(
                f"{int((~keep).sum())} row(s) have a prompt that fills max_length={max_length} "
                f"(TRL drops them); balancing the {int(keep.sum())} it keeps"
            )
    if auto:
        dw, uw = balance_weights(n_good, n_bad)
        if (dw, uw) != (1.0, 1.0):
            recipe.trl["desirable_weight"] = dw
            recipe.trl["undesirable_weight"] = uw
            notes.append(
                f"desirable_weight={dw:.4g}, undesirable_weight={uw:.4g}: balances "
                f"{n_good} desirable to {n_bad} undesirable rows per TRL's advice"
            )

    config, models = run.load(recipe, SPEC)
    eval_rows = run.eval_rows(SPEC, lambda held, _: kto_rows(held)[0])
    trainer = build_trainer(KTOTrainer, config, models, rows, eval_rows, ref_model=models.reference)
    reference = check_reference_frozen(trainer)
    ratio = weighted_ratio(n_good, n_bad, config.desirable_weight, config.undesirable_weight)
    lo, hi = KTO_RATIO_ADVICE
    report: dict[str, Any] = {
        "model": models.path,
        "data": source,
        "data_contract": contract,
        "rows": rows.height,
        "dropped_coin_flip": coin_flips,
        "rows_after_tokenization": len(trainer.train_dataset),
        "model_loaded": models.loaded,
        "desirable": n_good,
        "undesirable": n_bad,
        "desirable_weight": config.desirable_weight,
        "undesirable_weight": config.undesirable_weight,
        "weighted_ratio": ratio,
        "within_trl_advice": ratio is not None and lo <= ratio <= hi,
        "loss_type": config.loss_type,
        "beta": config.beta,
        "weights_dtype": models.dtype,
        "finetune": models.finetune,
        **reference,
        "notes": notes,
    }
    check_kept(report, trainer, rows.height, rows="rows", why=PROMPT_FILLS, source=source)
    return Prepared(trainer, SPEC, recipe, run.hardware, report)

"""Training data: reading a method's table, choosing its split, handing it to TRL, and saying
loudly what TRL's own length filter left out.

TRL drops rows it cannot train on without telling anyone but its dataset's length: DPO, KTO
and SFT drop those whose prompt alone fills `max_length` (no completion token left), the
reward trainer those longer than `max_length`. `check_kept` turns "none left" into one clear
line (TRL would fail later with `num_samples=0` from deep inside the data loader) and "most
left out" into a warning printed at once and kept in the report.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from prefdata.errors import InputError

__all__ = [
    "PROMPT_FILLS",
    "TOO_LONG",
    "check_kept",
    "drop_coin_flips",
    "read_data",
    "select_split",
    "to_dataset",
    "token_ids",
]

PROMPT_FILLS = "prompt alone fills max_length"
"""Why DPO, KTO and SFT drop a row (check_kept's `why`): no completion token would be left."""
TOO_LONG = "length exceeds max_length"
"""Why the reward trainer drops a pair (check_kept's `why`)."""
LOUD_SHARE = 0.5
"""Above this share of rows left out by TRL the warning is printed as well as reported."""


def read_data(
    data: str | Path | pl.DataFrame | Any, contracts: Sequence[str]
) -> tuple[pl.DataFrame, str | None, str]:
    """A table in one of `contracts` (validated), its source path, and which contract it met.

    `data` is a path (Parquet, JSONL, ... as prefdata.io.tables.read_table reads) or a table
    a stage accepts (polars, pandas, `datasets`, pyarrow: prefdata.io.frames.to_polars).
    """
    from prefdata.io.frames import to_polars
    from prefdata.schema import guess_contract, validate

    source = str(data) if isinstance(data, str | Path) else None
    table = to_polars(data, what="data")
    contract = guess_contract(table)
    if contract is None or contract not in contracts:
        hint = ""
        if {"prompt", "chosen", "rejected"} <= set(table.columns):
            hint = " (TRL-format rows become a pairs table with `prefdata import trl`)"
        raise InputError(
            f"expected a {' or '.join(contracts)} table, found columns {table.columns}{hint}",
            source=source,
        )
    return validate(table, contract, source=source), source, contract


def select_split(table: pl.DataFrame, split: str | None, notes: list[str]) -> pl.DataFrame:
    """Rows of the requested split (see PREFDATA_COMMON_DEFAULTS['split'])."""
    if split is None or "split" not in table.columns:
        if split not in (None, "auto"):
            raise InputError(f"prefdata.split is '{split}' but the data has no `split` column")
        return table
    wanted = "train" if split == "auto" else split
    kept = table.filter(pl.col("split") == wanted)
    notes.append(f"split '{wanted}': {kept.height} of {table.height} rows")
    if kept.height == 0:
        raise InputError(f"no rows with split '{wanted}' (set prefdata.split=null for all rows)")
    return kept


def to_dataset(table: pl.DataFrame) -> Any:
    """A `datasets.Dataset` of TRL rows (message lists stay lists of {role, content} dicts)."""
    from prefdata.io.tables import to_hf_dataset

    return to_hf_dataset(table)


def check_kept(
    report: dict[str, Any], trainer: Any, total: int, *, rows: str, why: str, source: str | None
) -> None:
    """After TRL's tokenization: InputError when `trainer` kept none of `total` `rows` (e.g.
    "pairs"); a warning (added to `report["warnings"]`, and printed when more than half were
    left out) when it dropped some; nothing when it kept all. `why` says what TRL drops them for
    ("prompt alone fills max_length", "length exceeds max_length")."""
    kept = len(trainer.train_dataset)
    max_length = trainer.args.max_length
    dropped = total - kept
    if dropped <= 0:
        return
    if kept == 0:
        raise InputError(
            f"TRL kept none of the {total} {rows}: every one's {why}={max_length}. Raise "
            "max_length (or shorten the prompts)",
            source=source,
            column="max_length",
        )
    message = f"TRL dropped {dropped} of {total} {rows} (their {why}={max_length})"
    if dropped / total > LOUD_SHARE:
        message += f": training on the {kept} left; raise max_length to keep more"
        print(f"prefdata: warning: {message}", file=sys.stderr, flush=True)
    report.setdefault("warnings", []).append(message)


def token_ids(encoded: Any) -> list[int]:
    """Token ids from what `apply_chat_template(..., tokenize=True)` returns: a list of ids, or a
    BatchEncoding (newer transformers)."""
    if hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return [int(i) for i in encoded]


def drop_coin_flips(
    table: pl.DataFrame, at_most: float | None, notes: list[str], *, source: str | None = None
) -> tuple[pl.DataFrame, int]:
    """`table` without the rows whose `confidence` is known and at most `at_most` (0.5: the
    labellers could not tell the sides apart, or leaned the other way), and how many those
    were. Such a row carries no information about which side is better, so it gets no weight;
    rows without a confidence are kept (an unmeasured label is trusted). `at_most` None keeps
    every row."""
    if at_most is None or "confidence" not in table.columns:
        return table, 0
    kept = table.filter(pl.col("confidence").is_null() | (pl.col("confidence") > at_most))
    dropped = table.height - kept.height
    if kept.height == 0:
        raise InputError(
            f"every row has confidence at most {at_most:g} (a coin flip or worse): nothing to "
            "learn from. Set prefdata.min_confidence=null to train on them anyway",
            source=source,
            column="confidence",
        )
    if dropped:
        notes.append(
            f"{dropped} of {table.height} rows with confidence <= {at_most:g} left out "
            "(prefdata.min_confidence): a coin flip carries no weight"
        )
    return kept, dropped

"""What a table is: `prefdata info` (rows, columns, contract and label balance) and
`prefdata validate` (does a file meet its contract)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import polars as pl

from prefdata.errors import InputError
from prefdata.schema import ContractName, conform, find_problems, guess_contract, validate
from prefdata.stage import Input, StageResult, Table, stage


@stage("info")
def info(table: Annotated[pl.DataFrame, Table()]) -> StageResult:
    """Rows, columns, the contract the table meets (with its problem count) and label balance.

    Example: prefdata info hh.parquet

    Args:
        table: any table
    """
    return StageResult(report=describe(table))


@stage("validate")
def validate_file(
    file: Annotated[Path | pl.DataFrame, Input(table=True)],
    *,
    contract: ContractName | None = None,
    stream: bool | None = None,
) -> StageResult:
    """Check a table against its column contract; an error names the row and the column.

    Example: prefdata validate hh.parquet --contract pairs

    Args:
        file: the table to check (a file, or from Python any table a stage accepts)
        contract: the contract to check against (default: the one the columns match)
        stream: read in batches with bounded memory (default: files over 256 MB, when the
            contract is given)
    """
    from prefdata.io.frames import source_name
    from prefdata.io.stream import stream_validate, use_stream, whole_table

    source = source_name(file, "file")
    if contract is not None and use_stream(file, stream):
        rows = stream_validate(file, contract)
        name: str = contract
    else:
        table = whole_table(file)
        guessed = contract or guess_contract(table)
        if guessed is None:
            raise InputError("matches no contract; pass --contract", source=source)
        validate(table, guessed, source=source)
        name, rows = guessed, table.height
    return StageResult(
        report={"ok": f"{source} meets the '{name}' contract", "contract": name, "rows": rows}
    )


def describe(table: pl.DataFrame) -> dict[str, Any]:
    """Rows, columns, the contract it meets (with its problem count) and label balance.

    Input: any table. Output: a report dict (JSON-serialisable).
    """
    contract = guess_contract(table)
    out: dict[str, Any] = {
        "rows": table.height,
        "columns": {name: str(dtype) for name, dtype in table.schema.items()},
        "contract": contract,
    }
    if contract is None:
        return out
    conformed = conform(table, contract)
    problems = find_problems(conformed, contract)
    out["problems"] = {
        r["problem"]: r["len"] for r in problems.group_by("problem").len().iter_rows(named=True)
    }
    if "source" in conformed.columns:
        out["sources"] = _counts(conformed["source"])
    if contract == "pairs":
        conf = conformed["confidence"].drop_nulls()
        out["confidence"] = (
            {"known": conf.len(), "mean": conf.mean(), "min": conf.min(), "max": conf.max()}
            if conf.len()
            else {"known": 0}
        )
        longer = conformed["chosen"].str.len_chars() > conformed["rejected"].str.len_chars()
        out["chosen_longer_share"] = longer.sum() / max(longer.len(), 1)
    if contract in ("kto", "annotations"):
        out["labels"] = _counts(conformed["label"].cast(pl.String))
    if contract == "kto":
        from prefdata.io.convert import kto_balance

        out["balance"] = kto_balance(conformed)
    if contract == "annotations":
        out["annotators"] = conformed["annotator"].n_unique()
        out["items"] = conformed["item_id"].n_unique()
    return out


def _counts(series: pl.Series) -> dict[str, int]:
    counts = series.value_counts(sort=True)
    return {str(row[0]): int(row[1]) for row in counts.iter_rows()}

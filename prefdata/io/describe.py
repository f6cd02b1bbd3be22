"""A short description of any table: rows, columns, contract and label balance."""

from __future__ import annotations

from typing import Any

import polars as pl

from prefdata.schema import conform, find_problems, guess_contract


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

"""The annotations contract encoded as integer arrays, one entry per vote: what agreement,
consensus and disagreement compute on.

`encode_votes(annotations)` checks the contract and returns `Votes`: each vote's item,
annotator and label as codes, the label names (and their numbers for ordinal / interval
statistics), each vote's input row, and how many rows were not votes. Votes with an `error`
or without a label are not votes (counted as `skipped_error` / `skipped_no_label`).

Label order: `label_order` when given; else numbers sorted by value for ordinal / interval
(labels that are not numbers are an InputError); pair labels in the order a, b, tie; any other
labels sorted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from prefdata.errors import InputError, shorten
from prefdata.schema import PAIR_LABELS, conform

__all__ = ["LEVELS", "FloatArray", "IntArray", "Level", "Votes", "encode_votes"]

Level = Literal["nominal", "ordinal", "interval"]
LEVELS: tuple[Level, ...] = ("nominal", "ordinal", "interval")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Votes:
    """Annotations encoded as integer arrays, one entry per vote.

    unit / annotator / code index `items`, `annotators` and `labels`; `values` holds each
    label's number for ordinal and interval statistics (None for nominal data). `rows` is
    each vote's 0-based row in the input table.
    """

    items: pl.Series
    annotators: list[str]
    kinds: list[str]
    labels: list[str]
    values: FloatArray | None
    unit: IntArray
    annotator: IntArray
    code: IntArray
    rows: IntArray
    skipped: dict[str, int]

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_labels(self) -> int:
        return len(self.labels)

    def counts(self) -> IntArray:
        """items x labels: how many votes each label got on each item."""
        k = self.n_labels
        flat = np.bincount(self.unit * k + self.code, minlength=self.n_items * k)
        return flat.reshape(self.n_items, k).astype(np.int64)


def encode_votes(
    annotations: pl.DataFrame,
    *,
    item_column: str = "item_id",
    level: Level = "nominal",
    label_order: Sequence[str] | None = None,
) -> Votes:
    """Check the annotations contract and encode the votes (see `Votes`).

    Labels: `label_order` when given (a label outside it is an InputError); else numbers
    sorted by value when `level` is ordinal / interval (labels that are not numbers are an
    InputError), pair labels in the order a, b, tie, and any other labels sorted.
    """
    if level not in LEVELS:
        raise InputError(f"level must be one of {LEVELS}, got {level!r}")
    table = conform(annotations, "annotations")
    if item_column not in table.columns:
        raise InputError(f"no column '{item_column}' to group votes by", column=item_column)
    table = table.with_row_index("__row")
    no_label = table["label"].is_null() | (table["label"].str.strip_chars() == "")
    has_error = (
        table["error"].is_not_null() & (table["error"].str.strip_chars() != "")
        if "error" in table.columns
        else pl.Series([False] * table.height)
    )
    skipped = {
        "skipped_error": int(has_error.sum()),
        "skipped_no_label": int((no_label & ~has_error).sum()),
    }
    votes = table.filter(~(no_label | has_error))
    for column, what in ((item_column, "an item id"), ("annotator", "an annotator")):
        if votes[column].null_count():
            row = int(votes.filter(pl.col(column).is_null())["__row"][0]) + 1
            raise InputError(f"vote without {what}", row=row, column=column)
    if not votes.height:
        raise InputError("no votes: every row lacks a label or has an error", column="label")

    items = votes.select(pl.col(item_column).unique(maintain_order=True))[item_column]
    unit_of = pl.DataFrame({item_column: items, "__u": np.arange(len(items), dtype=np.int64)})
    names = votes.group_by("annotator").agg(pl.col("annotator_kind").first()).sort("annotator")
    annotator_of = names.with_row_index("__a").select("annotator", pl.col("__a").cast(pl.Int64))

    raw_labels = votes["label"].str.strip_chars()
    labels, values, label_key = _label_domain(raw_labels, level, label_order, votes["__row"])
    code_of = pl.DataFrame({"__key": label_key[0], "__c": label_key[1]})
    keyed = votes.with_columns(
        raw_labels.alias("__key")
        if values is None or label_order is not None
        else raw_labels.cast(pl.Float64, strict=False).alias("__key")
    )
    coded = (
        keyed.join(unit_of, on=item_column, how="left", maintain_order="left")
        .join(annotator_of, on="annotator", how="left", maintain_order="left")
        .join(code_of, on="__key", how="left", maintain_order="left")
    )
    return Votes(
        items=items,
        annotators=names["annotator"].to_list(),
        kinds=names["annotator_kind"].to_list(),
        labels=labels,
        values=values,
        unit=coded["__u"].to_numpy().astype(np.int64),
        annotator=coded["__a"].to_numpy().astype(np.int64),
        code=coded["__c"].to_numpy().astype(np.int64),
        rows=coded["__row"].to_numpy().astype(np.int64),
        skipped=skipped,
    )


def _label_domain(
    labels: pl.Series, level: Level, label_order: Sequence[str] | None, rows: pl.Series
) -> tuple[list[str], FloatArray | None, tuple[pl.Series, pl.Series]]:
    """(label names, their values or None, (join key -> code)) for the vote labels."""
    distinct = labels.unique().sort()
    if label_order is not None:
        order = [str(x).strip() for x in label_order]
        if len(set(order)) != len(order):
            raise InputError(f"label_order repeats a label: {order}", column="label")
        unknown = labels.filter(~labels.is_in(order))
        if len(unknown):
            row = int(rows.filter(~labels.is_in(order))[0]) + 1
            raise InputError(
                f"label {shorten(unknown[0])} is not in label_order {order}",
                row=row,
                column="label",
            )
        values = np.arange(len(order), dtype=np.float64)
        return order, values, (pl.Series(order), pl.Series(np.arange(len(order))))
    numbers = labels.cast(pl.Float64, strict=False)
    numeric = not numbers.is_null().any() and bool(numbers.is_finite().all())
    if level != "nominal":
        if not numeric:
            bad = labels.filter(numbers.is_null() | ~numbers.is_finite().fill_null(False))
            row = int(rows.filter(numbers.is_null() | ~numbers.is_finite().fill_null(False))[0])
            raise InputError(
                f"{level} agreement needs numeric labels or label_order=[...] "
                f"(e.g. ['b', 'tie', 'a'] for pairs); got {shorten(bad[0])}",
                row=row + 1,
                column="label",
            )
        # Labels are numbers here: "1" and "1.0" are one value, named by its shortest text.
        table = (
            pl.DataFrame({"v": numbers, "t": labels})
            .group_by("v")
            .agg(pl.col("t").sort_by(pl.col("t").str.len_chars(), "t").first())
            .sort("v")
        )
        values = table["v"].to_numpy().astype(np.float64)
        return table["t"].to_list(), values, (table["v"], pl.Series(np.arange(table.height)))
    names = distinct.to_list()
    if set(names) <= set(PAIR_LABELS):
        names = [x for x in PAIR_LABELS if x in names]
    elif numeric:
        names = sorted(names, key=float)
    return names, None, (pl.Series(names), pl.Series(np.arange(len(names))))

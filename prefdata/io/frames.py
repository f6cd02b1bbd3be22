"""The tables users already hold, as polars: the one conversion every stage's input goes
through (`prefdata.stage.convert_arguments` calls it before checking the column contract).

Accepted: a polars DataFrame or LazyFrame, a pandas DataFrame, a Hugging Face
`datasets.Dataset` (a `DatasetDict` only with its split chosen: `dd["train"]`), a pyarrow Table,
or a path to a file prefdata reads (Parquet, JSONL, JSON, CSV, a datasets folder).

What each conversion keeps:
- Nested chat columns (lists of {role, content}) come through as polars List(Struct) in every
  case: pandas holds them as Python objects (lists of dicts, or the numpy arrays of dicts that
  `to_pandas()` gives), `datasets` as its own feature types; both arrive as Arrow lists. Empty
  lists stay empty lists and missing values stay null.
- pandas: NaN in a float column is a missing value (null), as pandas means it; a named index
  (`df.set_index("pair_id")`) is data and becomes a column again, an unnamed one (0, 1, 2, ...)
  is dropped. A column pandas holds as Python objects of several types (text in most rows, a
  bool in a few) cannot be one Arrow column: the error names it and its first odd row.
- `datasets`: a ClassLabel column becomes its label names (the ids are only its encoding).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from prefdata.errors import InputError

ACCEPTED = (
    "a polars DataFrame or LazyFrame, a pandas DataFrame, a datasets.Dataset, "
    "a pyarrow Table, or a path"
)


def to_polars(value: Any, *, what: str = "table") -> pl.DataFrame:
    """`value` as a polars DataFrame; InputError naming `what` and the accepted types when it
    is none of them."""
    if isinstance(value, pl.DataFrame):
        return value
    if isinstance(value, pl.LazyFrame):
        return value.collect()
    if isinstance(value, str | Path):
        from prefdata.io.tables import read_table

        return read_table(value)
    module = type(value).__module__.split(".")[0]
    name = type(value).__name__
    if module == "pandas" and name == "DataFrame":
        return _from_pandas(value, what)
    if module == "datasets":
        if name == "DatasetDict":
            splits = ", ".join(value.keys())
            raise InputError(
                f"{what}: a DatasetDict holds several splits ({splits}); pass one of them, "
                f"e.g. data['{next(iter(value.keys()), 'train')}']"
            )
        if name == "Dataset":
            from prefdata.io.tables import from_hf_dataset

            return from_hf_dataset(value)
    if module == "pyarrow" and name == "Table":
        frame = pl.from_arrow(value)
        assert isinstance(frame, pl.DataFrame)  # a Table (not a chunked array) gives a frame
        return frame
    raise InputError(f"{what}: got a {module}.{name}; a table here is {ACCEPTED}")


def source_name(value: Any, what: str) -> str:
    """How errors and reports name a table argument: its path, or `argument 'what'` for a
    table given in memory."""
    return str(value) if isinstance(value, str | Path) else f"argument '{what}'"


def _from_pandas(frame: Any, what: str) -> pl.DataFrame:
    """pandas -> polars through Arrow; object columns of dicts and lists (chat messages)
    become Arrow structs and lists. A column pandas cannot hand to Arrow is named."""
    import pyarrow as pa

    if any(name is not None for name in frame.index.names):
        frame = frame.reset_index()
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"{what}: {_unconvertible(frame, exc)}") from None
    converted = pl.from_arrow(table)
    assert isinstance(converted, pl.DataFrame)
    return converted


def _unconvertible(frame: Any, exc: Exception) -> str:
    """Why a pandas frame cannot become an Arrow table, naming the column and its first row
    whose value's type differs from the column's most common one."""
    import pyarrow as pa

    for column in frame.columns:
        values = frame[column]
        if values.dtype != object:
            continue
        try:
            pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as column_exc:
            kinds = [_kind(v) for v in values]
            counts = Counter(k for k in kinds if k is not None)
            usual = counts.most_common(1)[0][0]
            odd = next((i for i, k in enumerate(kinds) if k not in (None, usual)), None)
            if odd is None:  # one type, but values Arrow cannot hold (e.g. unlike dicts)
                return f"pandas column '{column}' cannot become a table column: {column_exc}"
            found = " and ".join(sorted(counts))
            return (
                f"pandas column '{column}' mixes {found} values (row {odd + 1} holds a "
                f"{kinds[odd]} where most rows hold a {usual}); a table column holds one type: "
                "convert or drop those rows first"
            )
    return f"this pandas DataFrame cannot become a table: {exc}"


def _kind(value: Any) -> str | None:
    """The type name of a pandas cell (None for a missing value); list-likes are one kind."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "ndarray":
        return "list"
    return type(value).__name__

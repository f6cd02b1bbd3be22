"""The tables users already hold, as polars: the one conversion every stage's input goes
through (`prefdata.stage_call.convert_arguments` calls it before checking the column contract).

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
  bool in a few) cannot be one Arrow column: it stays Python objects, as a JSON file's
  column of mixed types does, and the contract check names the first odd row.
- `datasets`: a ClassLabel column becomes its label names (the ids are only its encoding).
"""

from __future__ import annotations

import math
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


def is_table(value: Any) -> bool:
    """Whether `value` is a table of a kind to_polars converts (not a path)."""
    if isinstance(value, pl.DataFrame | pl.LazyFrame):
        return True
    kind = (type(value).__module__.split(".")[0], type(value).__name__)
    return kind in {
        ("pandas", "DataFrame"),
        ("datasets", "Dataset"),
        ("datasets", "DatasetDict"),
        ("pyarrow", "Table"),
    }


def source_name(value: Any, what: str) -> str:
    """How errors and reports name a table argument: its path, or `argument 'what'` for a
    table given in memory."""
    return str(value) if isinstance(value, str | Path) else f"argument '{what}'"


def _from_pandas(frame: Any, what: str) -> pl.DataFrame:
    """pandas -> polars through Arrow; object columns of dicts and lists (chat messages)
    become Arrow structs and lists. A column of Python objects of several types (text in most
    rows, a bool in a few) stays Python objects (polars' Object type), as a JSON file's
    column of mixed types does (prefdata.io.tables.records_frame): the contract check and the
    importers then see each value and name its row."""
    import pyarrow as pa

    if any(name is not None for name in frame.index.names):
        frame = frame.reset_index()
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        mixed = [
            c for c in frame.columns if frame[c].dtype == object and not _arrow_holds(frame[c])
        ]
        if not mixed:
            raise InputError(
                f"{what}: this pandas DataFrame cannot become a table: {exc}"
            ) from None
        table = pa.Table.from_pandas(frame.drop(columns=mixed), preserve_index=False)
        objects = [pl.Series(str(c), [_plain(v) for v in frame[c]], dtype=pl.Object) for c in mixed]
        converted = pl.from_arrow(table)
        assert isinstance(converted, pl.DataFrame)
        return converted.with_columns(objects).select([str(c) for c in frame.columns])
    converted = pl.from_arrow(table)
    assert isinstance(converted, pl.DataFrame)
    return converted


def _arrow_holds(values: Any) -> bool:
    import pyarrow as pa

    try:
        pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


def _plain(value: Any) -> Any:
    """A pandas cell as the value a JSON reader would give: None for a missing value, a list
    for a numpy array (what `to_pandas()` makes of a list)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if type(value).__name__ == "ndarray":
        return value.tolist()
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value

"""The tables users already hold, as polars: the one conversion every stage's input goes
through (`prefdata.stage.load_table` calls it before checking the column contract).

Accepted: a polars DataFrame or LazyFrame, a pandas DataFrame, a Hugging Face
`datasets.Dataset` (a `DatasetDict` only with its split chosen: `dd["train"]`), a pyarrow Table,
or a path to a file prefdata reads (Parquet, JSONL, JSON, CSV, a datasets folder). Nested chat
columns (lists of {role, content}) come through as polars List(Struct) in every case: pandas
holds them as Python objects, `datasets` as its own feature types, both arrive as Arrow lists.
"""

from __future__ import annotations

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


def _from_pandas(frame: Any, what: str) -> pl.DataFrame:
    """pandas -> polars through Arrow; object columns of dicts and lists (chat messages)
    become Arrow structs and lists. A column pandas cannot hand to Arrow is named."""
    import pyarrow as pa

    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"{what}: this pandas DataFrame cannot become a table: {exc}") from None
    converted = pl.from_arrow(table)
    assert isinstance(converted, pl.DataFrame)
    return converted

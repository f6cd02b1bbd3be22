"""The kinds of table a user holds, made from one polars table, and the comparison of two stage
results (issue 21: every public stage takes each of them, with identical results).

- polars: the table itself; lazy: a LazyFrame of it;
- pandas: `to_pandas()` (what `pd.read_parquet` gives: chat messages as numpy arrays of dicts,
  nulls in float columns as NaN);
- datasets: a `datasets.Dataset` built from that pandas frame (chat messages as datasets'
  own List({role, content}) feature);
- pyarrow: `to_arrow()`;
- path: a Parquet file.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import polars as pl
from polars.testing import assert_frame_equal

from prefdata.io.tables import write_table
from prefdata.stage import StageResult

KINDS = ("polars", "lazy", "pandas", "datasets", "pyarrow", "path")
_FILES = itertools.count()


def as_kind(table: pl.DataFrame, kind: str, folder: Path) -> Any:
    """`table` as a user of `kind` would hold it (a path: a Parquet file in `folder`)."""
    if kind == "polars":
        return table
    if kind == "lazy":
        return table.lazy()
    if kind == "pandas":
        return table.to_pandas()
    if kind == "datasets":
        import datasets

        return datasets.Dataset.from_pandas(table.to_pandas(), preserve_index=False)
    if kind == "pyarrow":
        return table.to_arrow()
    if kind == "path":
        return write_table(table, folder / f"table-{next(_FILES)}.parquet")
    raise ValueError(kind)


def assert_same_tables(
    got: dict[str, pl.DataFrame], want: dict[str, pl.DataFrame], *, clock: tuple[str, ...] = ()
) -> None:
    """The same tables, by name and in order, equal value for value and type for type (less
    the `clock` columns, which say when a row was made)."""
    assert list(got) == list(want)
    for name in want:
        try:
            assert_frame_equal(
                got[name].drop(clock, strict=False),
                want[name].drop(clock, strict=False),
                check_exact=True,
            )
        except AssertionError as exc:
            raise AssertionError(f"table '{name}': {exc}") from None


def assert_same_result(
    got: StageResult,
    want: StageResult,
    *,
    names_source: tuple[str, ...] = (),
    clock: tuple[str, ...] = (),
) -> None:
    """Two results of one stage are identical: tables, rejected rows, documents, warnings
    and report, except the report keys in `names_source` (those name the input: its file, or
    `argument 'x'` for a table given in memory) and the columns and report keys in `clock`
    (when a call returned, how long the run took)."""
    assert_same_tables(got.tables, want.tables, clock=clock)
    if want.rejected is None:
        assert got.rejected is None
    else:
        assert got.rejected is not None
        assert_frame_equal(got.rejected, want.rejected, check_exact=True)
    assert got.documents == want.documents
    assert got.warnings == want.warnings
    strip = {*names_source, *clock}
    assert {k: v for k, v in got.report.items() if k not in strip} == {
        k: v for k, v in want.report.items() if k not in strip
    }

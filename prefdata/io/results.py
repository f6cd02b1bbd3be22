"""The one writer of stage results: where each table, the rejected rows and each document
go, for the command line (`-o OUT`, companions beside it) and for a pipeline stage's folder.

Command line: the main product (the stage's first output) goes to OUT; every other table to
OUT-stem.<name>.<suffix>, the rejected rows to `--rejected` or OUT-stem.rejected.<suffix>,
documents to OUT-stem.<name>.json (a document that is the main product goes to OUT itself).
Before anything is written, every planned output is checked against the inputs and against
each other: no output may be an input or another output.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from prefdata.io import tables
from prefdata.io.tables import atomic_path, sibling, write_table
from prefdata.stage import StageResult


def write_json(data: Mapping[str, Any], path: Path) -> Path:
    """`data` as indented JSON, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=str, ensure_ascii=False) + "\n")
    return path


def check_outputs(outputs: Mapping[str, Path], inputs: Iterable[Path]) -> None:
    """Refuse an output that is one of the inputs or another output, or that cannot be
    written (one line naming the path): prefdata.io.tables.check_outputs over the named
    outputs."""
    tables.check_outputs(outputs.values(), inputs=inputs)


def planned_paths(
    result: StageResult, order: Sequence[str], out: Path, rejected_to: Path | None
) -> dict[str, Path]:
    """Output name -> the path the command line writes it to (see the module docstring)."""
    made = [*result.tables, *result.documents]
    # The main product is the first declared output the stage made this time (consensus
    # without pairs makes posteriors only).
    main = next((name for name in order if name in made), made[0] if made else None)
    paths: dict[str, Path] = {}
    for name in result.tables:
        paths[name] = out if name == main else sibling(out, name)
    for name in result.documents:
        paths[name] = out if name == main else sibling(out, name).with_suffix(".json")
    if result.rejected is not None and (result.rejected.height or rejected_to is not None):
        paths["rejected"] = rejected_to or sibling(out, "rejected")
    return paths


def write_result(
    result: StageResult,
    out: Path | None,
    *,
    order: Sequence[str] = (),
    inputs: Iterable[Path] = (),
    rejected_to: Path | None = None,
) -> dict[str, str]:
    """Write `result` for the command line; returns output name -> path written. With no
    `out`, nothing is written (the caller prints the report alone)."""
    if out is None:
        return {}
    paths = planned_paths(result, order, out, rejected_to)
    check_outputs(paths, inputs)
    written: dict[str, str] = {}
    for name, path in paths.items():
        if name in result.tables:
            written[name] = str(write_table(result.tables[name], path))
        elif name in result.documents:
            written[name] = str(write_json(result.documents[name], path))
        elif name == "rejected" and result.rejected is not None:
            written[name] = str(write_table(result.rejected, path))
    return written


def write_result_dir(result: StageResult, folder: Path) -> dict[str, Path]:
    """Write `result` into a pipeline stage's folder: `<name>.parquet` per table,
    `rejected.parquet`, `<name>.json` per document. Returns output name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {}
    for name, table in result.tables.items():
        outputs[name] = write_table(table, folder / f"{name}.parquet")
    for name, document in result.documents.items():
        outputs[name] = write_json(document, folder / f"{name}.json")
    if result.rejected is not None and result.rejected.height:
        outputs["rejected"] = write_table(result.rejected, folder / "rejected.parquet")
    return outputs


def empty_rejected() -> pl.DataFrame:
    """A rejected table with no rows: `reason` only."""
    return pl.DataFrame(schema={"reason": pl.String})

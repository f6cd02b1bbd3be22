"""Shared pieces of the importers: the result type, the table builders, and what they read
(a file, or a table a user holds: `Source`)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from prefdata import ids
from prefdata.errors import InputError, RowError
from prefdata.io.frames import source_name
from prefdata.io.tables import iter_json_lines, read_json_records
from prefdata.schema import MESSAGES, conform, contract_of, split_problems, with_messages
from prefdata.stage import StageResult

REJECTED_SCHEMA = {"row": pl.Int64, "reason": pl.String, "record": pl.String}


@dataclass
class Imported(StageResult):
    """What an importer produced: a StageResult whose `rejected` always exists.

    tables: contract name -> table; the first entry is the main product.
    rejected: source rows (or produced rows) that were not kept: `row`, `reason`, `record`.
    report: counts, including `dropped_<reason>` for every rejection reason.
    """

    rejected: pl.DataFrame = field(  # narrower than StageResult's: never None here
        default_factory=lambda: pl.DataFrame(schema=REJECTED_SCHEMA)
    )


Source = str | Path | pl.DataFrame
"""What an importer reads (its `Input(table=True)` argument): a file, read by the format's
own reader (its line numbers, its streaming), or a table a user holds (pandas, `datasets`,
polars, pyarrow), which the stage wrapper has already made a polars DataFrame."""


def where(source: Source) -> str:
    """How errors and reports name the source: the file, or `argument 'path'`."""
    return source_name(source, "path")


def field_error(message: str, source: Source, row: int, column: str) -> InputError:
    """The error for a field that shows the source is not this format: it names the
    source, the row (or line) and the column."""
    return InputError(message, source=where(source), row=row, column=column)


def file_of(source: Source) -> dict[str, str]:
    """The provenance of a file: {"file": its name}; a table given in memory has none."""
    return {} if isinstance(source, pl.DataFrame) else {"file": Path(source).name}


def json_lines(source: Source) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or row number, record) of each record: a JSONL file's lines, or a table's rows
    (the first row is 1; nested columns come as dicts and lists, as JSON would give them)."""
    if isinstance(source, pl.DataFrame):
        yield from enumerate(source.iter_rows(named=True), start=1)
    else:
        yield from iter_json_lines(source)


def json_records(source: Source) -> list[dict[str, Any]]:
    """The records of a JSON array or JSONL file, or a table's rows; none is an error."""
    if not isinstance(source, pl.DataFrame):
        return read_json_records(source)
    if not source.height:
        raise InputError("the table is empty (no rows)", source=where(source))
    return source.to_dicts()


def text_at(value: Any, source: Source, row: int, column: str) -> str:
    """`value` when it is a string; else the InputError naming the source, row and column
    (a field of the wrong type means the file is not this format, not one bad row)."""
    if not isinstance(value, str):
        raise field_error(f"expected a string, got {type(value).__name__}", source, row, column)
    return value


def import_per_line(
    path: Source,
    record_of: Callable[[dict[str, Any], int], dict[str, Any]],
    contract: Literal["pairs", "prompts"],
    *,
    source: str,
    dataset: str | None = None,
) -> Imported:
    """The importers whose every JSONL line (or table row) is one record of `contract`:
    `record_of(line_object, line)` builds it, or raises RowError to set that line aside
    with its reason (an InputError, the file is not this format, stops the import).
    `source`: the rows' `source` column; `dataset`: as in `finish`."""
    records: list[dict[str, Any]] = []
    bad: list[tuple[int, str, Any]] = []
    for line, obj in json_lines(path):
        try:
            records.append(record_of(obj, line))
        except RowError as exc:
            bad.append((line, str(exc), obj))
    table_of = pairs_table if contract == "pairs" else prompts_table
    return finish(
        {contract: table_of(records, source=source)},
        rejected_rows(bad),
        {"source_rows": len(records) + len(bad)},
        path=path,
        dataset=dataset,
    )


def user(text: str) -> list[dict[str, str]]:
    """A prompt of one user message."""
    return [{"role": "user", "content": text}]


def rejected_rows(rows: list[tuple[int, str, Any]]) -> pl.DataFrame:
    """Rejected-table rows from (source row, reason, original record)."""
    return pl.DataFrame(
        {
            "row": [r for r, _, _ in rows],
            "reason": [reason for _, reason, _ in rows],
            "record": [json.dumps(rec, ensure_ascii=False, default=str) for _, _, rec in rows],
        },
        schema=REJECTED_SCHEMA,
    )


def frame(records: list[dict[str, Any]], contract: str) -> pl.DataFrame:
    """A table from Python records, with the contract's types (prompt as messages)."""
    spec = contract_of(contract)
    # The union of keys over all records: a column that only later records carry (an
    # `error` on the one unreadable reply) must not be dropped.
    present = {k for r in records for k in r}
    schema = {k: v for k, v in spec.columns.items() if k in present}
    if not records:
        schema = dict(spec.required)
    return pl.DataFrame(records, schema=schema)


def pairs_table(records: list[dict[str, Any]], *, source: str) -> pl.DataFrame:
    """Pairs from records with prompt (messages), chosen, rejected and optional estimates.

    Missing `confidence`, `margin`, `agreement` stay null (unknown, never invented);
    `n_votes` defaults to 1; `provenance` may be a dict and is stored as JSON.
    """
    rows = []
    for r in records:
        rows.append(
            {
                "prompt": r["prompt"],
                "chosen": r["chosen"],
                "rejected": r["rejected"],
                "confidence": r.get("confidence"),
                "margin": r.get("margin"),
                "n_votes": r.get("n_votes", 1),
                "agreement": r.get("agreement"),
                "source": r.get("source", source),
                "provenance": json.dumps(r.get("provenance", {}), ensure_ascii=False),
                **({"split": r["split"]} if "split" in r else {}),
            }
        )
    schema: dict[str, Any] = {
        "prompt": _prompt_dtype(rows),
        "chosen": pl.String,
        "rejected": pl.String,
        "confidence": pl.Float64,
        "margin": pl.Float64,
        "n_votes": pl.Int64,
        "agreement": pl.Float64,
        "source": pl.String,
        "provenance": pl.String,
    }
    if rows and "split" in rows[0]:
        schema["split"] = pl.String
    table = with_messages(pl.DataFrame(rows, schema=schema))
    return conform(ids.with_pair_ids(table), "pairs")


def prompts_table(records: list[dict[str, Any]], *, source: str) -> pl.DataFrame:
    """Prompts from records with `prompt` (messages), `answer`, `metadata` (dict) and an
    optional `source` (default `source`).

    Output: prompts contract (prompt_id, prompt, metadata as JSON, answer, source).
    """
    table = pl.DataFrame(
        [
            {
                "prompt": r["prompt"],
                "metadata": json.dumps(r["metadata"], ensure_ascii=False),
                "answer": r["answer"],
                "source": r.get("source", source),
            }
            for r in records
        ],
        schema={
            "prompt": MESSAGES,
            "metadata": pl.String,
            "answer": pl.String,
            "source": pl.String,
        },
    )
    return conform(ids.with_prompt_ids(table), "prompts")


def kto_table(records: list[dict[str, Any]], *, source: str) -> pl.DataFrame:
    """KTO rows from records with prompt (messages), completion, label, optional confidence."""
    rows = [
        {
            "prompt": r["prompt"],
            "completion": r["completion"],
            "label": r["label"],
            "confidence": r.get("confidence"),
            "source": r.get("source", source),
        }
        for r in records
    ]
    table = pl.DataFrame(
        rows,
        schema={
            "prompt": _prompt_dtype(rows),
            "completion": pl.String,
            "label": pl.Boolean,
            "confidence": pl.Float64,
            "source": pl.String,
        },
    )
    return conform(ids.with_completion_ids(with_messages(table)), "kto")


def _prompt_dtype(rows: list[dict[str, Any]]) -> pl.DataType:
    # Text prompts stay text here and become one user message in with_messages; building
    # them straight into the messages type would silently turn them into nulls.
    if rows and isinstance(rows[0]["prompt"], str):
        return pl.String()
    return MESSAGES


def annotations_table(records: list[dict[str, Any]]) -> pl.DataFrame:
    """Annotations from records (item_id, annotator, annotator_kind, label, ...)."""
    return conform(frame(records, "annotations"), "annotations")


def finish(
    tables: dict[str, pl.DataFrame],
    rejected: pl.DataFrame | None = None,
    report: dict[str, Any] | None = None,
    *,
    path: Source | None = None,
    dataset: str | None = None,
) -> Imported:
    """Move rows that break their contract to the rejected table and count everything.

    Each table is checked with schema.split_problems; its bad rows join `rejected` with the
    reason. The report gets `rows_<table>` and `dropped_<reason>` counts. `dataset`: the
    public data set the format is (a key of prefdata.io.importers.sources.SOURCES): its name
    and licence go into every row's `provenance` and the report's `license`.
    """
    report = dict(report or {})
    if any(report.get(key) == 0 for key in ("source_rows", "records", "trees")):
        # An empty export is a broken export far more often than an empty data set.
        raise InputError("no records to import", source=None if path is None else where(path))
    if path is not None and not isinstance(path, pl.DataFrame):
        report.setdefault("source_file", str(path))
    if dataset is not None:
        from prefdata.io.importers.sources import SOURCES

        report["license"] = SOURCES[dataset].license
        tables = {name: _with_origin(t, dataset) for name, t in tables.items()}
    parts = [rejected if rejected is not None else pl.DataFrame(schema=REJECTED_SCHEMA)]
    kept: dict[str, pl.DataFrame] = {}
    for name, table in tables.items():
        good, bad = split_problems(table, name)
        kept[name] = good
        report[f"rows_{name}"] = good.height
        if bad.height:
            parts.append(
                pl.DataFrame(
                    {
                        "row": pl.Series([None] * bad.height, dtype=pl.Int64),
                        "reason": (f"{name}: " + bad["reason"]),
                        "record": [
                            json.dumps(r, ensure_ascii=False, default=str)
                            for r in bad.drop("reason").to_dicts()
                        ],
                    },
                    schema=REJECTED_SCHEMA,
                )
            )
    all_rejected = pl.concat(parts)
    counts = Counter(reason_key(r) for r in all_rejected["reason"].to_list())
    for key, n in sorted(counts.items()):
        report[f"dropped_{key}"] = n
    report["rows_rejected"] = all_rejected.height
    return Imported(kept, all_rejected, report)


def _with_origin(table: pl.DataFrame, dataset: str) -> pl.DataFrame:
    """`table` with the data set's name and licence in each row's provenance JSON (keys the
    row already has win)."""
    from prefdata.io.importers.sources import SOURCES

    if "provenance" not in table.columns:
        return table
    origin = {"dataset": dataset, "license": SOURCES[dataset].license}

    def stamp(text: str | None) -> str:
        try:
            value = json.loads(text) if text else {}
        except ValueError:
            return text or ""
        if not isinstance(value, dict):
            return text or ""
        return json.dumps({**origin, **value}, ensure_ascii=False)

    stamped = [stamp(t) for t in table["provenance"].to_list()]
    return table.with_columns(pl.Series("provenance", stamped, dtype=pl.String))


def reason_key(reason: str) -> str:
    # "pairs: rejected: chosen == rejected; ..." -> "chosen_eq_rejected" style keys
    first = reason.split(";")[0].split(":")[-1].strip().lower()
    first = first.replace("==", "eq").split("(")[0].strip()
    return "_".join(w for w in "".join(c if c.isalnum() else " " for c in first).split())

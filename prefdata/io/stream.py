"""Batched, bounded-memory import / validate / export for files too large to hold whole.

The in-memory path (prefdata.io.importers.trl.import_trl, schema.validate,
exporters.export) reads the whole file into one table. The TRL import in batches is
prefdata.io.stream_trl (what is particular to import); this module holds the batch machinery
it shares with validate and export, and those two. These functions do the same work one
batch of `batch_rows` rows at a time, reading Parquet one slice at a time with polars and
JSONL in blocks of lines, and writing each output incrementally (pyarrow's ParquetWriter, or
appended JSON lines) to a temporary file that is renamed over the target only when
everything succeeded (prefdata.io.tables.atomic_path). Each batch goes through the same
functions as the in-memory path (schema.with_messages / conform / split_problems / validate,
ids.with_pair_ids, exporters.to_trl / to_kto / to_openai), so the results are the same.

What stays whole-file although the data is batched:

- row numbers in errors and in the rejected table are global (1-based record numbers, as in
  import_trl; for JSONL a parse error names the line);
- duplicate ids are caught across batches (the ids seen so far are kept, 8 bytes each);
- the report counts every batch.

Reading runs one batch ahead and writing one batch behind, on background threads, so on two
cores the codec and the reader overlap the hashing. Memory is a few batches (each
`batch_rows` x row size, copied a few times) plus the seen ids: ~1 GiB at the default 50,000
rows of ~2.5 kB. Time goes mostly to the Parquet codec, hashing the texts for the ids, and
reading; see bench/README.md for figures on 1,000,000 pairs.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing
from pathlib import Path
from typing import IO, Any, TypeGuard

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from prefdata.errors import ContractError, InputError
from prefdata.io.convert import kto_balance
from prefdata.io.exporters import check_export_path, export_rows, from_export_names
from prefdata.io.tables import (
    atomic_path,
    infer_format,
    may_hide_types,
    parse_json_line,
    read_table,
    records_frame,
)
from prefdata.schema import contract_of, validate

DEFAULT_BATCH_ROWS = 50_000
STREAM_BYTES = 256 * 1024 * 1024
"""Files larger than this are read in batches (bounded memory) unless told otherwise."""


def use_stream(path: str | Path | pl.DataFrame, stream: bool | None) -> TypeGuard[str | Path]:
    """Whether to read `path` in batches: `stream` when given, else files over STREAM_BYTES
    (gzip files never: their size says nothing about their rows). A table given in memory
    (an `Input(table=True)` argument from Python) is never streamed."""
    if isinstance(path, pl.DataFrame):
        if stream:
            raise InputError(
                "stream reads a file in batches; this table is already in memory (give its "
                "path to stream it)"
            )
        return False
    if stream is not None:
        return stream
    p = Path(path)
    return p.is_file() and p.stat().st_size > STREAM_BYTES and not p.name.endswith(".gz")


def whole_table(value: str | Path | pl.DataFrame) -> pl.DataFrame:
    """The whole table behind a streamable input that is not streamed: the file read at
    once, or the table given in memory (already polars: the stage wrapper converted it)."""
    return value if isinstance(value, pl.DataFrame) else read_table(value)


# The global 1-based record number, carried through a batch as an extra column.
SOURCE_ROW = "__source_row"
STREAM_EXPORT_FORMATS = ("trl", "trl-conversational", "kto", "kto-conversational", "openai")


# ---------------------------------------------------------------------------------------------
# Reading in batches


def _check_source(path: str | Path) -> str:
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", source=path)
    fmt = infer_format(p)
    if fmt not in ("parquet", "jsonl"):
        raise InputError(
            f"streaming reads Parquet or JSONL, not {fmt}; convert the file first or use the "
            "in-memory path",
            source=path,
        )
    if p.stat().st_size == 0:
        raise InputError("file is empty", source=path)
    return fmt


def iter_batches(
    path: str | Path, *, batch_rows: int = DEFAULT_BATCH_ROWS
) -> Generator[pl.DataFrame, None, None]:
    """Yield the file's rows as tables of at most `batch_rows` rows, each with a first column
    `__source_row` (global 1-based record number; blank JSONL lines are not records).

    Parquet is read with pyarrow's batch reader, JSONL in blocks of lines parsed by polars.
    A malformed JSONL line raises InputError naming the file and the line.
    """
    if batch_rows < 1:
        raise InputError(f"batch_rows must be at least 1, got {batch_rows}", source=path)
    fmt = _check_source(path)
    batches = (
        _parquet_batches(path, batch_rows) if fmt == "parquet" else _jsonl_batches(path, batch_rows)
    )
    offset = 0
    for frame in _read_ahead(batches):
        rows = pl.int_range(offset + 1, offset + frame.height + 1, dtype=pl.Int64, eager=True)
        offset += frame.height
        frame = from_export_names(frame)
        yield frame.select(rows.alias(SOURCE_ROW), pl.all()) if frame.width else frame


def _read_ahead(batches: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """The same batches, each read on a background thread while the caller works on the
    previous one (polars releases the GIL while it reads), so reading overlaps the work."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefdata-read")
    try:
        pending = pool.submit(next, batches, None)
        while True:
            frame = pending.result()  # a read error is raised here, in the caller's thread
            if frame is None:
                return
            pending = pool.submit(next, batches, None)
            yield frame
    finally:
        # Also when the caller stops early: let the read in flight end before closing.
        pool.shutdown(wait=True, cancel_futures=True)
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _parquet_batches(path: str | Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    # polars' reader with a slice per batch: it skips the row groups and pages outside the
    # slice, and was 2-4x faster than pyarrow's iter_batches + conversion here, with less
    # memory (measured on the benchmark file; see bench/README.md).
    try:
        scan = pl.scan_parquet(path, glob=False)
        total = scan.select(pl.len()).collect().item()
        if total == 0:
            # One empty batch, so the caller still sees the columns (and writes an empty
            # output with the right schema).
            yield scan.head(0).collect()
            return
    except Exception as exc:  # polars raises several types for a damaged file
        raise InputError(f"not a readable Parquet file: {exc}", source=path) from None
    for offset in range(0, total, batch_rows):
        yield scan.slice(offset, batch_rows).collect()


def _jsonl_batches(path: str | Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        lines: list[bytes] = []
        numbers: list[int] = []
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            lines.append(line)
            numbers.append(number)
            if len(lines) == batch_rows:
                yield _parse_lines(lines, numbers, path)
                lines, numbers = [], []
        if lines:
            yield _parse_lines(lines, numbers, path)


def _parse_lines(lines: list[bytes], numbers: list[int], path: str | Path) -> pl.DataFrame:
    data = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)
    try:
        frame = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
        if not may_hide_types(data, frame):
            return frame
    except Exception:  # located below, line by line
        pass
    # The slow path: find the line polars refused, or build the table from Python objects
    # when every line parses but the types differ between lines (a number in a text column
    # stays a number, for the contract check to name).
    records = [
        parse_json_line(line, path, number) for number, line in zip(numbers, lines, strict=True)
    ]
    return records_frame(records, path, numbers)


def relocate(exc: InputError, rows: pl.Series, path: str | Path) -> InputError:
    """The same error with a batch-local row number turned into the global one."""
    row = exc.row
    if row is not None and 1 <= row <= rows.len():
        row = int(rows[row - 1])
    return type(exc)(exc.detail, source=exc.source or path, row=row, column=exc.column)


# ---------------------------------------------------------------------------------------------
# Writing in batches


class BatchSink:
    """Appends tables to one Parquet or JSONL(.gz) file, written atomically.

    Nothing is created before the first `write`; `close(empty=...)` writes that empty table
    when no batch came (so an import of only bad rows still leaves a valid, empty output).
    Each batch is encoded and compressed on a background thread while the caller prepares
    the next one (pyarrow and polars release the GIL there), so the two cores overlap; at
    most one batch waits, which bounds the memory this adds to one batch.
    """

    def __init__(self, target: Path, stack: ExitStack) -> None:
        self.target = target
        self.format = infer_format(target)
        if self.format not in ("parquet", "jsonl"):
            raise InputError("streaming writes .parquet or .jsonl(.gz) files", source=target)
        self._stack = stack
        self._writer: pq.ParquetWriter | None = None
        self._handle: IO[bytes] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None
        self.rows = 0

    @property
    def started(self) -> bool:
        return self._writer is not None or self._handle is not None

    def _open(self, schema: pa.Schema) -> None:
        tmp = self._stack.enter_context(atomic_path(self.target))
        # Callbacks run last-registered first: finish the pending batch, then close the
        # file (the Parquet footer), then atomic_path renames it (or removes it on an error).
        if self.format == "parquet":
            # The codec matches tables.write_table (zstd); level 1 because the default level
            # (3) took 1.7x the time for files only ~10% smaller (bench data, 100k rows).
            self._writer = pq.ParquetWriter(
                tmp, schema, compression="zstd", compression_level=1, write_statistics=False
            )
            self._stack.callback(self._writer.close)
        else:
            opener = gzip.open if self.target.name.endswith(".gz") else open
            handle: IO[bytes] = opener(tmp, "wb")  # type: ignore[assignment]
            self._handle = handle
            self._stack.callback(handle.close)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefdata-sink")
        self._stack.callback(self._thread.shutdown)
        self._stack.callback(self._wait)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # re-raises a failed write here, in the caller's thread

    def write(self, table: pl.DataFrame) -> None:
        if self.format == "parquet":
            if self._writer is None:
                self._open(table.head(0).to_arrow().schema)
            writer = self._writer
            assert writer is not None

            def job() -> None:
                # Converting to Arrow copies the text too, so it also runs off the caller.
                arrow = table.to_arrow()
                if arrow.schema != writer.schema:
                    # A column that is all null in one batch arrives with another type.
                    arrow = arrow.cast(writer.schema)
                writer.write_table(arrow)

            self._submit(job)
        else:
            if self._handle is None:
                self._open(pa.schema([]))
            handle = self._handle
            assert handle is not None
            self._submit(lambda: table.write_ndjson(handle))
        self.rows += table.height

    def _submit(self, job: Callable[[], None]) -> None:
        self._wait()
        assert self._thread is not None
        self._pending = self._thread.submit(job)

    def close(self, *, empty: pl.DataFrame | None = None) -> None:
        if not self.started and empty is not None:
            self.write(empty)
        self._wait()


class SeenIds:
    """The ids of earlier batches, to catch a duplicate across batch boundaries.

    prefdata's ids (16 lowercase hex digits) are kept as 64-bit integers: exact, 8 bytes
    each, and ~10x faster to look up than text (2.2 s -> 0.2 s over a million ids in
    batches of 50,000). Any other id is kept as text.
    """

    def __init__(self) -> None:
        self._numbers = pl.Series("id", [], dtype=pl.UInt64)
        self._texts = pl.Series("id", [], dtype=pl.String)

    def add(self, values: pl.Series) -> pl.Series:
        """Record `values`; True where an earlier call already had the value (nulls: False).

        Repeats within `values` are not flagged here (schema.find_problems does that).
        """
        text = values.cast(pl.String)
        hexadecimal = text.str.contains(r"^[0-9a-f]{16}$").fill_null(False)
        numbers = text.str.to_integer(base=16, dtype=pl.UInt64, strict=False)
        again = pl.select(
            pl.when(hexadecimal)
            .then(numbers.is_in(self._numbers.implode()))
            .otherwise(text.is_in(self._texts.implode()))
            .fill_null(False)
        ).to_series()
        # One chunk each keeps the lookups fast; copying 8 bytes per id per batch is cheap.
        self._numbers = pl.concat([self._numbers, numbers.filter(hexadecimal)], rechunk=True)
        others = text.filter(~hexadecimal & text.is_not_null())
        if others.len():
            self._texts = pl.concat([self._texts, others], rechunk=True)
        return again


# ---------------------------------------------------------------------------------------------
# Validate


def stream_validate(
    path: str | Path, contract: str, *, batch_rows: int = DEFAULT_BATCH_ROWS
) -> int:
    """Check a whole Parquet / JSONL file against `contract`, one batch at a time.

    The same checks as schema.validate (types, nulls, blank texts, chosen == rejected, 0-1
    ranges, labels), and the contract's id must be unique across the whole file. Returns
    the number of rows; raises ContractError naming the file, the global row and the column.
    """
    spec = contract_of(contract)
    rows = 0
    seen = SeenIds()
    with closing(iter_batches(path, batch_rows=batch_rows)) as batches:
        for frame in batches:
            numbers = frame[SOURCE_ROW]
            try:
                checked = validate(frame.drop(SOURCE_ROW), contract, source=str(path))
            except InputError as exc:
                raise relocate(exc, numbers, path) from None
            if spec.unique:
                _check_unique(checked[spec.unique], numbers, seen, spec.unique, path)
            rows += frame.height
    return rows


def _check_unique(
    values: pl.Series, numbers: pl.Series, seen: SeenIds, column: str, path: str | Path
) -> None:
    again = seen.add(values)
    if again.any():
        first = int(again.arg_true()[0])
        raise ContractError(
            f"duplicate {column} (an earlier row has the same id); "
            f"{int(again.sum())} row(s) in this batch repeat ids of earlier batches",
            source=str(path),
            row=int(numbers[first]),
            column=column,
        )


# ---------------------------------------------------------------------------------------------
# Export


def stream_export(
    src: str | Path,
    out: str | Path,
    fmt: str,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    flatten: bool = False,
    minimal: bool = False,
) -> dict[str, Any]:
    """A pairs (or kto, for the KTO formats) file -> an export file, one batch at a time.

    fmt: trl, trl-conversational, kto, kto-conversational or openai; each batch goes through
    prefdata.io.exporters.to_trl / to_kto / to_openai, so the rows are those of
    exporters.export (including its contract check). `out` is .parquet or .jsonl(.gz)
    (openai: .jsonl only). pair_ids must be unique across the whole file. Returns a report:
    format, path, rows, and for KTO the desirable:undesirable balance over all batches.
    """
    if fmt not in STREAM_EXPORT_FORMATS:
        known = ", ".join(STREAM_EXPORT_FORMATS)
        hint = " (hf writes a datasets folder: use exporters.export)" if fmt == "hf" else ""
        raise InputError(f"unknown streaming export format '{fmt}'{hint}; choose one of {known}")
    out = Path(out)
    check_export_path(fmt, out)
    report: dict[str, Any] = {"format": fmt, "path": str(out)}
    label_counts = [0, 0]  # desirable, undesirable
    pairs_in = 0
    seen = SeenIds()
    name = str(src)
    with ExitStack() as stack:
        sink = BatchSink(out, stack)
        batches = stack.enter_context(closing(iter_batches(src, batch_rows=batch_rows)))
        for frame in batches:
            numbers = frame[SOURCE_ROW]
            table = frame.drop(SOURCE_ROW)
            try:
                rows, balance = export_rows(
                    table, fmt, flatten=flatten, minimal=minimal, source=name
                )
                if fmt.startswith("kto"):
                    label_counts[0] += balance["desirable"]
                    label_counts[1] += balance["undesirable"]
                    pairs_in += balance.get("pairs", 0)
            except InputError as exc:
                raise relocate(exc, numbers, src) from None
            if "pair_id" in table.columns:
                _check_unique(table["pair_id"], numbers, seen, "pair_id", src)
            sink.write(rows)
        if not sink.started:
            raise InputError("file has no records", source=src)
        sink.close()
        report["rows"] = sink.rows
    if fmt.startswith("kto"):
        labels = np.concatenate(
            [np.ones(label_counts[0], dtype=bool), np.zeros(label_counts[1], dtype=bool)]
        )
        report.update(kto_balance(pl.DataFrame({"label": labels})))
        if pairs_in:
            report["pairs"] = pairs_in
    return report


__all__ = [
    "DEFAULT_BATCH_ROWS",
    "STREAM_EXPORT_FORMATS",
    "SeenIds",
    "iter_batches",
    "stream_export",
    "stream_validate",
]

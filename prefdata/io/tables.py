"""Read and write tables: Parquet, JSONL (optionally gzipped), JSON arrays, CSV, and
Hugging Face `datasets` (a `save_to_disk` folder, or a `datasets.Dataset` in memory).

Writes are atomic: data goes to a temporary file (or folder) beside the target, which is
renamed over it only when complete, so a crash never leaves a half file that a later stage
would read as whole. Read errors name the file and the line.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import polars as pl

from prefdata.errors import InputError, MissingExtraError, OutputError, one_line

Format = Literal["parquet", "jsonl", "json", "csv", "hf"]


def infer_format(path: str | Path) -> Format:
    """The format a path implies: by suffix, or `hf` for a `save_to_disk` folder."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir() or name.endswith("/"):
        return "hf"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    if name.endswith((".json", ".json.gz")):
        return "json"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if not p.suffix:
        return "hf"
    raise InputError(
        "unknown file type; use .parquet, .jsonl, .jsonl.gz, .json, .csv or a "
        "datasets save_to_disk folder",
        source=path,
    )


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, gunzipped when it ends in .gz; errors name the file."""
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", source=path)
    try:
        data = p.read_bytes()
        if p.name.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read: {exc}", source=path) from None
    return data


def read_text(path: str | Path) -> str:
    """The file decoded as UTF-8 (a leading byte-order mark is dropped); a non-UTF-8 file
    gives the line and byte offset."""
    data = read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "re-encode the file as UTF-8",
            source=path,
            row=line,
        ) from None
    return text.removeprefix("\ufeff")


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL file.

    Lines end at "\n" only: U+2028, U+0085 and the other characters `str.splitlines` also
    cuts at are legal inside a JSON string. A malformed line raises InputError with the
    file, the line and what was expected.
    """
    text = read_text(path)
    found = False
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            found = True
            yield number, parse_json_line(line, path, number)
    if not found:
        raise InputError("file is empty (no records)", source=path)


def parse_json_line(line: str | bytes, path: str | Path, number: int) -> dict[str, Any]:
    """One JSONL line as an object; errors name the file, the line and what was expected."""
    try:
        value = json.loads(line)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"not valid UTF-8 (offset {exc.start} of the line); re-encode the file as UTF-8",
            source=path,
            row=number,
        ) from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"malformed JSON at column {exc.colno}: {exc.msg}; expected one JSON object per line",
            source=path,
            row=number,
        ) from None
    except RecursionError:
        raise InputError("JSON nested too deeply", source=path, row=number) from None
    if not isinstance(value, dict):
        raise InputError(
            f"expected a JSON object, got {type(value).__name__}", source=path, row=number
        )
    return value


def read_json_records(path: str | Path) -> list[dict[str, Any]]:
    """Records from a JSONL file or a JSON array file, with located errors."""
    if infer_format(path) == "jsonl":
        records = [obj for _, obj in iter_json_lines(path)]
    else:
        text = read_text(path)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"malformed JSON at column {exc.colno}: {exc.msg}", source=path, row=exc.lineno
            ) from None
        except RecursionError:
            raise InputError("JSON nested too deeply", source=path) from None
        if isinstance(value, dict):
            # Some files wrap the records: {"data": [...]} or {"rows": [...]}.
            lists = [v for v in value.values() if isinstance(v, list)]
            value = lists[0] if len(lists) == 1 else [value]
        if not isinstance(value, list):
            raise InputError("expected a JSON array of objects", source=path)
        for row, item in enumerate(value, start=1):
            if not isinstance(item, dict):
                raise InputError(
                    f"expected a JSON object, got {type(item).__name__}", source=path, row=row
                )
        records = value
    if not records:
        raise InputError("file is empty (no records)", source=path)
    return records


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "list"
    return "object" if isinstance(value, dict) else type(value).__name__


def records_frame(
    records: list[dict[str, Any]], path: str | Path, rows: list[int] | None = None
) -> pl.DataFrame:
    """A table from parsed JSON records that keeps each cell's JSON type.

    polars turns a column holding text in some rows and a number, a boolean or a list in
    others into text ("12345", "true"), and a wrong value then flows on as a right one; other
    mixtures (a list and a number) fail with no row named. A column of mixed JSON types is
    kept as Python objects (polars' Object type), so the contract check
    (prefdata.schema.conform) and the importers see each value and can name its row.
    `rows`: the source row (line) of each record, for messages.
    """
    kinds: dict[str, set[str]] = {}
    for record in records:
        for key, value in record.items():
            if value is not None:
                kinds.setdefault(key, set()).add(_kind(value))
    mixed = [key for key, seen in kinds.items() if len(seen) > 1]
    try:
        # polars cannot infer past a mixture even when told the column is Object: those
        # columns are built on their own.
        plain = pl.DataFrame(
            [{k: v for k, v in r.items() if k not in mixed} for r in records] if mixed else records,
            infer_schema_length=None,
        )
    except Exception as exc:  # polars raises several types for rows it cannot unify
        span = f" (lines {rows[0]}-{rows[-1]})" if rows else ""
        raise InputError(
            f"rows{span} do not share one schema: {one_line(str(exc), 300)}", source=path
        ) from None
    if not mixed:
        return plain
    objects = [pl.Series(k, [r.get(k) for r in records], dtype=pl.Object) for k in mixed]
    table = plain.with_columns(objects) if plain.width else pl.DataFrame(objects)
    order = list(dict.fromkeys(k for r in records for k in r))
    return table.select(order)


def may_hide_types(data: bytes, table: pl.DataFrame) -> bool:
    """Whether a table polars read from JSONL `data` may have turned numbers, booleans or
    lists into text (see `records_frame`): some text column's key is followed by an unquoted
    value somewhere in the raw bytes. A nested key of the same name also matches; that only
    costs the exact, slower parse."""
    names = [re.escape(n) for n, t in table.schema.items() if t == pl.String]
    if not names:
        return False
    pattern = rb'"(?:' + "|".join(names).encode() + rb')"\s*:\s*[-0-9tfNI\[{]'
    return re.search(pattern, data) is not None


def _read_csv(path: Path) -> pl.DataFrame:
    """A CSV or TSV file. Columns that hold text in every contract (prompt, chosen, ids, ...)
    stay text: a CSV has no types, and "007" or "42" as an answer is text, not a number."""
    from prefdata.schema import TEXT_COLUMNS

    text = read_text(path)
    sep = "\t" if path.name.lower().endswith(".tsv") else ","
    header = next(csv.reader(io.StringIO(text.split("\n", 1)[0]), delimiter=sep), [])
    try:
        table = pl.read_csv(
            io.StringIO(text),
            separator=sep,
            infer_schema_length=10000,
            schema_overrides={c: pl.String for c in header if c in TEXT_COLUMNS} or None,
        )
    except Exception as exc:  # polars raises several types; find the row ourselves
        raise csv_error(text, sep, path, exc) from None
    if not table.height:
        raise InputError("file has a header but no rows", source=path)
    return table


def csv_error(text: str, sep: str, path: str | Path, exc: Exception) -> InputError:
    """A located error for a CSV that polars refused: the first row with the wrong number of
    cells, or an unterminated quote; polars' own message when neither is found."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    try:
        width = None
        for row in reader:
            if width is None:
                width = len(row)
            elif row and len(row) != width:
                return InputError(
                    f"{len(row)} cells where the header has {width}",
                    source=path,
                    row=reader.line_num - 1,
                )
    except csv.Error as err:
        return InputError(
            f"malformed CSV ({err}); a quote may be left open", source=path, row=reader.line_num
        )
    return InputError(f"not a readable CSV file: {one_line(str(exc), 300)}", source=path)


def read_table(path: str | Path) -> pl.DataFrame:
    """Read a table from Parquet, JSONL(.gz), JSON, CSV or a datasets folder.

    An empty file, a malformed line or a non-UTF-8 file raises InputError naming the file
    and the line. A text file with no records (blank lines, `[]`, a CSV header alone) is an
    InputError too; a Parquet file or datasets folder with no rows is read (it carries its
    columns, and a stage that keeps nothing writes one).
    """
    p = Path(path)
    fmt = infer_format(p)
    if not p.exists():
        raise InputError("file not found", source=path)
    if fmt == "hf":
        return _read_hf_folder(p)
    if p.is_dir():
        raise InputError(f"is a folder, not a {fmt} file", source=path)
    if p.stat().st_size == 0:
        raise InputError("file is empty", source=path)
    if fmt == "parquet":
        try:
            # glob=False: a "[" in a file name is a character, not a pattern.
            return pl.read_parquet(p, glob=False)
        except Exception as exc:
            raise InputError(
                f"not a readable Parquet file: {one_line(str(exc), 300)}", source=path
            ) from None
    if fmt == "csv":
        return _read_csv(p)
    if fmt == "jsonl" and not p.name.endswith(".gz"):
        try:
            # The fast path: polars' native reader; errors fall back to the slow parser,
            # which finds the exact line for the message.
            data = read_bytes(p)
            df = pl.read_ndjson(io.BytesIO(data), infer_schema_length=10000)
            if df.height and not may_hide_types(data, df):
                return df
        except Exception:
            pass
    if fmt == "jsonl":
        numbered = list(iter_json_lines(p))
        return records_frame([obj for _, obj in numbered], p, [n for n, _ in numbered])
    return records_frame(read_json_records(p), p)


def _read_hf_folder(path: Path) -> pl.DataFrame:
    try:
        import datasets
    except ImportError:
        raise MissingExtraError(
            "reading a datasets folder needs the `datasets` package: pip install datasets"
        ) from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise InputError(f"not a datasets save_to_disk folder: {exc}", source=path) from None
    if isinstance(loaded, datasets.DatasetDict):
        frames = []
        for split, ds in loaded.items():
            frame = from_hf_dataset(ds)
            frames.append(frame.with_columns(pl.lit(split).alias("split")))
        return pl.concat(frames, how="diagonal_relaxed")
    return from_hf_dataset(loaded)


def from_hf_dataset(dataset: Any) -> pl.DataFrame:
    """A polars table from an in-memory `datasets.Dataset` (zero-copy through Arrow); a
    ClassLabel column becomes its label names (its ids are only their encoding)."""
    table = dataset.with_format("arrow")[:]
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    names = {
        column: feature.names
        for column, feature in dataset.features.items()
        if type(feature).__name__ == "ClassLabel"
    }
    return frame.with_columns(
        # -1 is datasets' "no label": a missing value.
        pl.col(column).replace_strict(
            list(range(len(labels))), labels, default=None, return_dtype=pl.String
        )
        for column, labels in names.items()
    )


def to_hf_dataset(table: pl.DataFrame) -> Any:
    """A `datasets.Dataset` from a polars table."""
    try:
        import datasets
    except ImportError:
        raise MissingExtraError("this needs the `datasets` package: pip install datasets") from None
    return datasets.Dataset(table.to_arrow())


def check_outputs(
    outputs: Iterable[str | Path | None],
    *,
    inputs: Iterable[str | Path | None] = (),
    whole_folders: Iterable[str | Path | None] = (),
) -> None:
    """Refuse, before anything runs, outputs that would overwrite an input or each other, or
    that cannot be written.

    Paths are compared after resolving symlinks and relative parts (`./a/../c.parquet`), and
    by file identity when both exist (a hard link). `whole_folders`: output folders that are
    replaced whole (a `datasets` folder, a training run): an input inside one counts as
    overwritten too (give such a folder here, not also in `outputs`). An output below a file,
    or in a folder this process may not write, is refused here rather than after the work is
    done. None entries (options not given) are skipped. Raises OutputError naming the output
    (and the input it would destroy).
    """
    ins = [Path(p) for p in inputs if p is not None]
    whole = [Path(p) for p in whole_folders if p is not None]
    folders = {p.resolve() for p in whole}
    seen: dict[Path, Path] = {}
    for out in [*(Path(p) for p in outputs if p is not None), *whole]:
        key = out.resolve()
        if key in seen:
            raise OutputError(
                f"given for two outputs (also as {seen[key]}); give each output its own path",
                path=out,
            )
        seen[key] = out
        for src in ins:
            same = src.resolve() == key or _same_file(src, out)
            inside = key in folders and key in src.resolve().parents
            if same or inside:
                what = "is the input" if same else "is a folder holding the input"
                raise OutputError(
                    f"{what} {src}; writing it would destroy the input. Write elsewhere",
                    path=out,
                )
        _check_writable(out)


def _check_writable(out: Path) -> None:
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write: {parent} is a file, not a folder", path=out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write: no permission to write in {parent}", path=out)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


# Temporary names carry the writer's process id, so the next write to the same target can
# tell a leftover of a killed process (cleaned up) from a write in flight in another process
# (left alone): ".out.parquet.pid1234.k3j2.tmp".
_TMP = re.compile(r"^(?:pid(?P<pid>\d+)\.)?[^.]+(?:\.tmp)?$")
# A temporary file without a process id (written before they carried one) is a leftover
# once it has not changed for this long.
_UNTAGGED_STALE_S = 600.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def clean_stale_temps(target: str | Path) -> list[Path]:
    """Remove temporary files and folders that killed writes of `target` left beside it.

    Returns what was removed. A temporary file of a process still running is kept.
    """
    target = Path(target)
    removed: list[Path] = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    prefix = f".{target.name}."
    for entry in entries:
        rest = entry.name[len(prefix) :]
        match = _TMP.match(rest)
        if not entry.name.startswith(prefix) or not match:
            continue
        if rest == "old":
            stale = True
        elif match["pid"] is not None:
            stale = int(match["pid"]) != os.getpid() and not _alive(int(match["pid"]))
        else:
            try:
                stale = time.time() - entry.stat().st_mtime > _UNTAGGED_STALE_S
            except OSError:
                continue
        if stale:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


@contextmanager
def atomic_path(target: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` on success.

    On any exception the temporary file or folder is removed and `target` is untouched.
    After a successful write, temporary files that killed earlier writes of the same target
    left behind are removed (`clean_stale_temps`). A folder that cannot be written raises
    OutputError naming the target (one line for the user, not a PermissionError traceback).
    """
    target = Path(target)
    prefix = f".{target.name}.pid{os.getpid()}."
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
            os.close(fd)
            tmp = Path(name)
            # mkstemp makes owner-only files; outputs get the usual permissions (umask applies).
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)
    except OSError as exc:
        raise _output_error(target, exc) from None
    try:
        yield tmp
        if directory and target.exists():
            # A folder cannot be renamed over a non-empty one: move the old one aside
            # first, so the target is always either the old or the new complete folder.
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException as exc:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _output_error(target, exc) from None
        raise
    clean_stale_temps(target)


def _output_error(target: Path, exc: OSError) -> OutputError:
    reason = exc.strerror or str(exc)
    if isinstance(exc, NotADirectoryError | FileExistsError) and not target.parent.is_dir():
        reason = "a path above it is a file, not a folder"
    return OutputError(f"cannot write: {reason}", path=target)


def write_table(table: pl.DataFrame, path: str | Path, *, fmt: Format | None = None) -> Path:
    """Write `table` atomically; the format comes from the suffix unless `fmt` is given.

    Returns the path written. JSONL keeps nested columns (chat messages) as JSON. A column
    of mixed JSON types (see `records_frame`) is refused, naming its first odd row: written
    as text it would become a wrong value.
    """
    path = Path(path)
    fmt = fmt or infer_format(path)
    _refuse_mixed(table)
    if fmt == "hf":
        with atomic_path(path, directory=True) as tmp:
            to_hf_dataset(table).save_to_disk(str(tmp))
        return path
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            table.write_parquet(tmp, compression="zstd", statistics=False)
        elif fmt == "jsonl":
            gz = path.name.endswith(".gz")
            table.write_ndjson(
                tmp, compression="gzip" if gz else "uncompressed", check_extension=False
            )
        elif fmt == "json":
            tmp.write_text(json.dumps(table.to_dicts(), ensure_ascii=False, indent=1))
        elif fmt == "csv":
            table.write_csv(tmp, separator="\t" if path.suffix == ".tsv" else ",")
    return path


def _refuse_mixed(table: pl.DataFrame) -> None:
    for name, dtype in table.schema.items():
        if dtype == pl.Object:
            values = [(i, v) for i, v in enumerate(table.get_column(name).to_list())]
            present = [(i, _kind(v)) for i, v in values if v is not None]
            first = present[0][1] if present else None
            row, kind = next(((i, k) for i, k in present if k != first), (0, first))
            raise InputError(
                f"mixes JSON types ({first} in row {present[0][0] + 1 if present else 1}, "
                f"{kind} here); one column holds one type",
                row=row + 1,
                column=name,
            )


def sibling(path: str | Path, name: str) -> Path:
    """A path beside `path` for a companion table: out.parquet -> out.<name>.parquet."""
    p = Path(path)
    for suffix in (".jsonl.gz", ".json.gz"):
        if p.name.endswith(suffix):
            return p.with_name(p.name[: -len(suffix)] + f".{name}{suffix}")
    if p.suffix:
        return p.with_name(f"{p.stem}.{name}{p.suffix}")
    return p.with_name(f"{p.name}.{name}")

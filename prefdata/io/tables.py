"""Read and write tables: Parquet, JSONL (optionally gzipped), JSON arrays, CSV, and
Hugging Face `datasets` (a `save_to_disk` folder, or a `datasets.Dataset` in memory).

Writes are atomic: data goes to a temporary file (or folder) beside the target, which is
renamed over it only when complete, so a crash never leaves a half file that a later stage
would read as whole. Read errors name the file and the line.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import polars as pl

from prefdata.errors import InputError, MissingExtraError

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
    """The file decoded as UTF-8; a non-UTF-8 file gives the line and byte offset."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "re-encode the file as UTF-8",
            source=path,
            row=line,
        ) from None


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL file.

    A malformed line raises InputError with the file, the line and what was expected.
    """
    text = read_text(path)
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, parse_json_line(line, path, number)


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
        if isinstance(value, dict):
            # Some files wrap the records: {"data": [...]} or {"rows": [...]}.
            lists = [v for v in value.values() if isinstance(v, list)]
            value = lists[0] if len(lists) == 1 else [value]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise InputError("expected a JSON array of objects", source=path)
        records = value
    if not records:
        raise InputError("file is empty (no records)", source=path)
    return records


def read_table(path: str | Path) -> pl.DataFrame:
    """Read a table from Parquet, JSONL(.gz), JSON, CSV or a datasets folder.

    An empty file, a malformed line or a non-UTF-8 file raises InputError naming the file
    and the line.
    """
    p = Path(path)
    fmt = infer_format(p)
    if not p.exists():
        raise InputError("file not found", source=path)
    if fmt == "hf":
        return _read_hf_folder(p)
    if p.is_file() and p.stat().st_size == 0:
        raise InputError("file is empty", source=path)
    if fmt == "parquet":
        try:
            return pl.read_parquet(p)
        except Exception as exc:
            raise InputError(f"not a readable Parquet file: {exc}", source=path) from None
    if fmt == "csv":
        text = read_text(p)
        sep = "\t" if p.name.lower().endswith(".tsv") else ","
        return pl.read_csv(io.StringIO(text), separator=sep, infer_schema_length=10000)
    if fmt == "jsonl" and not p.name.endswith(".gz"):
        try:
            # The fast path: polars' native reader; errors fall back to the slow parser,
            # which finds the exact line for the message.
            df = pl.read_ndjson(p, infer_schema_length=10000)
            if df.height:
                return df
        except Exception:
            pass
    records = read_json_records(p)
    try:
        return pl.DataFrame(records, infer_schema_length=None)
    except Exception as exc:
        raise InputError(f"rows do not share one schema: {exc}", source=path) from None


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
    """A polars table from an in-memory `datasets.Dataset` (zero-copy through Arrow)."""
    table = dataset.with_format("arrow")[:]
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def to_hf_dataset(table: pl.DataFrame) -> Any:
    """A `datasets.Dataset` from a polars table."""
    try:
        import datasets
    except ImportError:
        raise MissingExtraError("this needs the `datasets` package: pip install datasets") from None
    return datasets.Dataset(table.to_arrow())


@contextmanager
def atomic_path(target: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` on success.

    On any exception the temporary file or folder is removed and `target` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        # mkstemp makes owner-only files; outputs get the usual permissions (umask applies).
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
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
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_table(table: pl.DataFrame, path: str | Path, *, fmt: Format | None = None) -> Path:
    """Write `table` atomically; the format comes from the suffix unless `fmt` is given.

    Returns the path written. JSONL keeps nested columns (chat messages) as JSON.
    """
    path = Path(path)
    fmt = fmt or infer_format(path)
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


def sibling(path: str | Path, name: str) -> Path:
    """A path beside `path` for a companion table: out.parquet -> out.<name>.parquet."""
    p = Path(path)
    for suffix in (".jsonl.gz", ".json.gz"):
        if p.name.endswith(suffix):
            return p.with_name(p.name[: -len(suffix)] + f".{name}{suffix}")
    if p.suffix:
        return p.with_name(f"{p.stem}.{name}{p.suffix}")
    return p.with_name(f"{p.name}.{name}")

"""TRL preference data sets (paired and unpaired) -> pairs or KTO rows.

The forms TRL documents ("Dataset formats and types"), all accepted here:

- preference, explicit prompt:
  standard `{prompt: str, chosen: str, rejected: str}`;
  conversational `{prompt: [msgs], chosen: [assistant msg], rejected: [assistant msg]}`
- preference, implicit prompt:
  standard `{chosen: str, rejected: str}` (refused, see below);
  conversational `{chosen: [msgs], rejected: [msgs]}`
- unpaired (KTO):
  standard `{prompt: str, completion: str, label: bool}`;
  conversational `{prompt: [msgs], completion: [assistant msg], label: bool}`

Rules:

- A text prompt becomes one user message (prefdata stores every prompt as messages).
- Standard implicit-prompt rows hold prompt and answer as one string with no marker where
  the answer starts, so no split is possible without guessing: the file is refused with an
  InputError that says how to fix it.
- Conversational implicit-prompt rows: the prompt is every message before the last, which
  must be the same in chosen and rejected; chosen / rejected are the two last messages,
  which must be assistant turns. A row that differs earlier is rejected with its reason.
- A conversational chosen / rejected / completion must be exactly one assistant message
  with text content; several messages (tool calls, tool results) cannot become the one
  string the contracts hold, so such rows are rejected, not cut.
- prefdata's own columns are kept when present: `confidence`, `margin`, `n_votes`,
  `agreement`, `source`, `provenance` (JSON), `split` for pairs; `confidence`, `source`
  for KTO. Text is kept exactly as written (no stripping), so an export and re-import
  gives the same pair ids.

Input may be JSONL, Parquet, JSON, CSV or a `datasets` save_to_disk folder (read with
prefdata.io.tables.read_table; a DatasetDict's split names go to `split`), or from Python a
table a user holds: a `datasets.Dataset` (e.g. from `load_dataset`), a pandas or polars frame,
a pyarrow Table (converted by the stage wrapper; provenance then has no file name).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl

from prefdata.errors import InputError, RowError, shorten
from prefdata.io.exporters import from_export_names
from prefdata.io.importers.common import (
    Imported,
    Source,
    field_error,
    file_of,
    finish,
    kto_table,
    pairs_table,
    rejected_rows,
    user,
    where,
)
from prefdata.io.tables import sibling
from prefdata.schema import require_columns
from prefdata.stage import Input, Output, stage

Kind = Literal["auto", "preference", "unpaired"]

_PAIR_ESTIMATES = ("confidence", "margin", "agreement")


def to_messages(value: Any, *, what: str) -> list[dict[str, str]]:
    """Chat messages ({role, content}, text only) from a list of message objects.

    Raises ValueError with a reason naming `what` and the message number when the value is
    not a non-empty list of objects with a string `role` and a string `content`, or when a
    message carries tool calls (they cannot be represented as text without loss). Other
    keys (name, and null fields that Arrow adds for other rows' keys) are ignored.
    """
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else shorten(value)
        raise RowError(f"{what} is neither text nor a non-empty list of messages (got {got})")
    out = []
    for number, message in enumerate(value, start=1):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RowError(f"{what} has a message without a role (message {number})")
        role = message["role"]
        if message.get("tool_calls"):
            raise RowError(f"{what} has a message with tool calls (message {number}, {role})")
        content = message.get("content")
        if not isinstance(content, str):
            raise RowError(
                f"{what} has a message without text content (message {number}, {role})"
            )
        out.append({"role": role, "content": content})
    return out


def prompt_of(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str):
        return user(value)
    if value is None:
        raise RowError("missing prompt")
    return to_messages(value, what="prompt")


def single_reply(value: Any, *, what: str) -> str:
    """A completion given as text, or as a list of exactly one assistant message."""
    if isinstance(value, str):
        return value
    if value is None:
        raise RowError(f"missing {what}")
    messages = to_messages(value, what=what)
    if len(messages) != 1:
        raise RowError(
            f"{what} is not one message ({len(messages)} messages); "
            "prefdata keeps one assistant reply"
        )
    if messages[0]["role"] != "assistant":
        raise RowError(f"{what} is not an assistant message (role {messages[0]['role']!r})")
    return messages[0]["content"]


def implicit_of(chosen: Any, rejected: Any) -> tuple[list[dict[str, str]], str, str]:
    """Prompt and the two replies of a conversational implicit-prompt row."""
    if chosen is None or rejected is None:
        raise RowError("missing chosen or rejected")
    full_chosen = to_messages(chosen, what="chosen")
    full_rejected = to_messages(rejected, what="rejected")
    if full_chosen[-1]["role"] != "assistant" or full_rejected[-1]["role"] != "assistant":
        raise RowError("conversation does not end with an assistant turn")
    if full_chosen[:-1] != full_rejected[:-1]:
        raise RowError("conversations differ before the last turn")
    return full_chosen[:-1], full_chosen[-1]["content"], full_rejected[-1]["content"]


def provenance_of(value: Any, path: Source, row: int) -> dict[str, Any]:
    if value is None:
        return {**file_of(path), "row": row}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            message = f"provenance is not JSON: {exc.msg}"
            raise field_error(message, path, row, "provenance") from None
        if isinstance(parsed, dict):
            return parsed
    raise field_error(
        f"provenance must be a JSON object, got {type(value).__name__}", path, row, "provenance"
    )


def number_of(value: Any, name: str) -> float | None:
    # CSV files hold the estimates as text; anything that is not a number is a bad row.
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RowError(f"{name} is not a number (got {shorten(value)})") from None
    if not math.isfinite(number) or isinstance(value, bool):
        raise RowError(f"{name} is not a finite number (got {shorten(value)})")
    return number


def votes_of(value: Any) -> int:
    # A file without vote counts holds one judgement per row.
    if value is None:
        return 1
    number = number_of(value, "n_votes")
    if number is None or number != int(number) or number < 1:
        raise RowError(f"n_votes is not a positive whole number (got {value!r})")
    return int(number)


def preference_record(
    row: dict[str, Any], *, explicit: bool, path: Source, number: int
) -> tuple[dict[str, Any], str]:
    """One TRL preference row (source row `number`) -> (a pairs_table record, its form name).

    Raises ValueError (the row goes to rejected) when the row cannot be a pair.
    """
    if explicit:
        prompt = prompt_of(row["prompt"])
        chosen = single_reply(row["chosen"], what="chosen")
        rejected = single_reply(row["rejected"], what="rejected")
        form = f"{form_of(row['prompt'])}_explicit"
    else:
        prompt, chosen, rejected = implicit_of(row["chosen"], row["rejected"])
        form = "conversational_implicit"
    record: dict[str, Any] = {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "n_votes": votes_of(row.get("n_votes")),
        "provenance": provenance_of(row.get("provenance"), path, number),
        **{k: number_of(row[k], k) for k in _PAIR_ESTIMATES if k in row},
    }
    return record, form


def form_of(value: Any) -> str:
    return "standard" if isinstance(value, str) else "conversational"


def _detect(columns: set[str], path: Source) -> Literal["preference", "unpaired"]:
    if {"chosen", "rejected"} <= columns:
        return "preference"
    if {"completion", "label"} <= columns:
        return "unpaired"
    raise InputError(
        f"not a TRL preference data set: expected columns chosen + rejected (preference) "
        f"or prompt + completion + label (unpaired); the table has {sorted(columns)}",
        source=where(path),
    )


def refuse_text_without_prompt(table: pl.DataFrame, source: str | Path) -> None:
    """Standard implicit-prompt preference data (chosen / rejected as whole texts, no
    prompt column) is refused: the prompt cannot be cut off without guessing."""
    if "prompt" not in table.columns and table.schema["chosen"] == pl.String:
        raise InputError(
            "standard implicit-prompt preference data (chosen / rejected as whole texts, "
            "no prompt column) cannot be split into prompt and answer without guessing; "
            "add a 'prompt' column with chosen / rejected holding only the answers, or "
            "use the conversational form (lists of {role, content} messages)",
            source=source,
            column="prompt",
        )


@stage("trl", outputs=("pairs", "kto"))
def import_trl(
    path: Annotated[Source, Input(table=True)],
    out: Annotated[Path | None, Output("pairs.parquet")] = None,
    *,
    kind: Kind = "auto",
    source: str = "trl",
    stream: bool | None = None,
) -> Imported:
    """A TRL preference or unpaired-preference data set -> Imported (see the module doc).

    kind: "preference" -> a `pairs` table; "unpaired" -> a `kto` table; "auto" picks by
    columns (chosen + rejected -> preference; completion + label -> unpaired).
    Output pairs: prompt (messages), chosen, rejected, with prefdata's estimate columns
    kept when the file has them (null otherwise: never invented), n_votes 1 by default,
    source = the file's `source` column or `source`, provenance = the file's or
    {file, row}. Output kto: prompt, completion, label, confidence (kept or null), source.
    Rows that cannot become data go to `rejected` with the reason; the report counts
    rows per form (standard / conversational, explicit / implicit prompt).

    Example: prefdata import trl train.jsonl -o pairs.parquet

    Args:
        path: the TRL data set file (JSONL, JSON, CSV, Parquet, or a datasets folder; from
            Python also a table: a datasets.Dataset, a pandas or polars frame, ...)
        out: where the tables go; a preference file read in batches (see `stream`) is
            written there directly, one batch at a time
        kind: preference (pairs), unpaired (KTO rows), or auto (by the columns)
        source: the `source` column
        stream: read a preference file in batches with bounded memory (default: files over
            256 MB); needs `out`
    """
    from prefdata.io.stream import use_stream, whole_table
    from prefdata.io.stream_trl import stream_import_trl

    if out is not None and kind != "unpaired" and use_stream(path, stream):
        streamed = stream_import_trl(path, out, source=source)
        files = {"pairs": Path(out)}
        if sibling(out, "rejected").exists():
            files["rejected"] = sibling(out, "rejected")
        return Imported(tables={}, report=streamed, files=files)
    if stream and out is None:
        raise InputError("reading in batches (stream) writes as it goes: give an output file")
    if kind not in ("auto", "preference", "unpaired"):
        raise InputError(
            f"kind must be auto, preference or unpaired, got {kind!r}", source=where(path)
        )
    table = from_export_names(whole_table(path))
    columns = set(table.columns)
    resolved = _detect(columns, path) if kind == "auto" else kind
    preference = resolved == "preference"
    needed = ("chosen", "rejected") if preference else ("prompt", "completion", "label")
    require_columns(
        table.columns, needed, f"kind '{resolved}' needs", source=where(path), error=InputError
    )
    if preference:
        refuse_text_without_prompt(table, where(path))

    records: list[dict[str, Any]] = []
    bad: list[tuple[int, str, Any]] = []
    forms: Counter[str] = Counter()
    explicit = "prompt" in columns
    for index, row in enumerate(table.iter_rows(named=True)):
        number = index + 1
        try:
            if resolved == "preference":
                record, form = preference_record(row, explicit=explicit, path=path, number=number)
                if row.get("split") is not None:
                    record["split"] = row["split"]
            else:
                label = row["label"]
                if not isinstance(label, bool):
                    raise RowError(f"label is not true / false (got {label!r})")
                record = {
                    "prompt": prompt_of(row["prompt"]),
                    "completion": single_reply(row["completion"], what="completion"),
                    "label": label,
                    "confidence": number_of(row.get("confidence"), "confidence"),
                }
                form = f"{form_of(row['prompt'])}_unpaired"
        except InputError:
            raise  # a file-level error (bad provenance JSON), not a row to set aside
        except ValueError as exc:
            bad.append((number, str(exc), row))
            continue
        if row.get("source") is not None:
            record["source"] = str(row["source"])
        forms[form] += 1
        records.append(record)

    if resolved == "preference":
        if any("split" in r for r in records):
            # pairs_table looks at the first record for the optional split column.
            for r in records:
                r.setdefault("split", None)
        tables = {"pairs": pairs_table(records, source=source)}
    else:
        tables = {"kto": kto_table(records, source=source)}
    report: dict[str, Any] = {
        "source_rows": table.height,
        "kind": resolved,
        **{f"form_{name}": n for name, n in sorted(forms.items())},
    }
    return finish(tables, rejected_rows(bad), report, path=path)

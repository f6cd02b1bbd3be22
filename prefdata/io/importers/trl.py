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

from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

from prefdata.errors import InputError, RowError
from prefdata.io.exporters import from_export_names
from prefdata.io.importers.common import (
    Imported,
    Source,
    finish,
    kto_table,
    pairs_table,
    rejected_rows,
    where,
)
from prefdata.io.importers.trl_rows import (
    form_of,
    number_of,
    preference_record,
    prompt_of,
    refuse_text_without_prompt,
    single_reply,
)
from prefdata.io.tables import sibling
from prefdata.schema import require_columns
from prefdata.stage import Input, Output, stage

Kind = Literal["auto", "preference", "unpaired"]


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

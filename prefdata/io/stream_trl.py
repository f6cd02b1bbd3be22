"""A TRL preference file too large for memory -> a pairs file, one batch at a time
(`stream_import_trl`; prefdata.io.importers.trl.import_trl calls it for large files or
`stream=True`). The batch machinery it shares with validate and export (reading ahead,
writing behind, the ids seen so far, global row numbers) is prefdata.io.stream's; this
module is what is particular to import: each batch's rows turned into pairs by the same
functions as the in-memory importer (its row parsers, pairs_table), the rejected rows with
their reasons, and duplicates across batches.
"""

from __future__ import annotations

import json
from collections import Counter
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import polars as pl

from prefdata import ids
from prefdata.errors import InputError
from prefdata.io.importers.common import REJECTED_SCHEMA, pairs_table, reason_key
from prefdata.io.importers.trl_rows import (
    preference_record,
    provenance_of,
    refuse_text_without_prompt,
)
from prefdata.io.stream import (
    DEFAULT_BATCH_ROWS,
    SOURCE_ROW,
    BatchSink,
    SeenIds,
    iter_batches,
    relocate,
)
from prefdata.io.tables import sibling
from prefdata.schema import MESSAGES, conform, split_problems, with_messages

_PAIR_ESTIMATES = ("confidence", "margin", "agreement")

# ---------------------------------------------------------------------------------------------
# Import


def _tool_calls_free(messages: pl.Expr, fields: dict[str, Any]) -> pl.Expr:
    # trl.to_messages refuses a message whose `tool_calls` is truthy.
    if "tool_calls" not in fields:
        return pl.lit(True)
    calls = pl.element().struct.field("tool_calls")
    dtype = fields["tool_calls"]
    truthy = calls.list.len() > 0 if isinstance(dtype, pl.List) else calls.is_not_null()
    return ~messages.list.eval(truthy.fill_null(False)).list.any()


def _message_fields(dtype: pl.DataType) -> dict[str, Any] | None:
    """Field types of a list-of-struct column whose role and content are text, else None."""
    if not isinstance(dtype, pl.List) or not isinstance(dtype.inner, pl.Struct):
        return None
    fields: dict[str, Any] = {f.name: f.dtype for f in dtype.inner.fields}
    if fields.get("role") != pl.String or fields.get("content") != pl.String:
        return None
    return fields


def _reply_expr(frame: pl.DataFrame, column: str) -> tuple[pl.Expr, pl.Expr] | None:
    """(ok mask, text) for a chosen / rejected column, mirroring trl.single_reply; None when no
    row can take the fast path (the per-row path then gives each row's reason)."""
    dtype = frame.schema[column]
    if dtype == pl.String:
        return pl.col(column).is_not_null(), pl.col(column)
    fields = _message_fields(dtype)
    if fields is None:
        return None
    first = pl.col(column).list.first()
    ok = (
        (pl.col(column).list.len() == 1)
        & (first.struct.field("role") == "assistant")
        & first.struct.field("content").is_not_null()
        & _tool_calls_free(pl.col(column), fields)
    )
    return ok.fill_null(False), first.struct.field("content")


def _prompt_expr(frame: pl.DataFrame) -> tuple[pl.Expr, pl.Expr] | None:
    """(ok mask, prompt as messages) mirroring trl._prompt: text becomes one user message,
    message lists keep only role and content."""
    dtype = frame.schema["prompt"]
    if dtype == pl.String:
        # One user message, as with_messages makes it, but as one expression: with_messages
        # builds Python dicts row by row, ~75 s per million rows (see bench/README.md).
        text = pl.col("prompt")
        message = pl.struct(pl.lit("user").alias("role"), text.alias("content"))
        return text.is_not_null(), pl.concat_list(message).cast(MESSAGES)
    fields = _message_fields(dtype)
    if fields is None:
        return None
    msgs = pl.col("prompt")
    complete = msgs.list.eval(
        pl.element().struct.field("role").is_not_null()
        & pl.element().struct.field("content").is_not_null()
    ).list.all()
    ok = (msgs.list.len() > 0) & complete & _tool_calls_free(msgs, fields)
    value = msgs.list.eval(
        pl.struct(pl.element().struct.field("role"), pl.element().struct.field("content"))
    ).cast(MESSAGES)
    return ok.fill_null(False), value


def _number_expr(frame: pl.DataFrame, column: str) -> tuple[pl.Expr, pl.Expr]:
    """(ok mask, Float64 value) mirroring trl._number (text numbers are parsed)."""
    dtype = frame.schema[column]
    if dtype.is_numeric() or dtype == pl.Null:
        return pl.lit(True), pl.col(column).cast(pl.Float64)
    value = pl.col(column).cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    return (value.is_not_null() | pl.col(column).is_null()), value


def _votes_expr(frame: pl.DataFrame) -> tuple[pl.Expr, pl.Expr]:
    """(ok mask, Int64 value) mirroring trl._votes (null -> 1; whole numbers >= 1)."""
    if "n_votes" not in frame.columns:
        return pl.lit(True), pl.lit(1, pl.Int64)
    dtype = frame.schema["n_votes"]
    if not (dtype.is_numeric() or dtype == pl.Null):
        return pl.lit(False), pl.lit(None, pl.Int64)
    number = pl.col("n_votes").cast(pl.Float64)
    ok = number.is_null() | ((number >= 1) & (number == number.floor()))
    return ok.fill_null(False), number.cast(pl.Int64).fill_null(1)


class _PairBatches:
    """Turns batches of a TRL preference file into pairs-contract rows (see stream_import_trl).

    Rows the fast (vectorised) path is sure of take it; every other row goes through the same
    per-row functions as import_trl, which either convert it or give the reason it is
    rejected, so both paths agree row for row.
    """

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        self.forms: Counter[str] = Counter()
        self._file_json = json.dumps(path.name, ensure_ascii=False)

    def check_columns(self, frame: pl.DataFrame) -> None:
        columns = set(frame.columns)
        for name in ("chosen", "rejected"):
            if name not in columns:
                raise InputError(
                    "not a TRL preference data set: expected columns prompt, chosen and "
                    f"rejected; the table has {sorted(columns - {SOURCE_ROW})}",
                    source=self.path,
                    column=name,
                )
        refuse_text_without_prompt(frame, self.path)

    def convert(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, list[tuple[int, str, Any]]]:
        """(pairs rows with `__source_row`, conformed; rows rejected before the contract)."""
        self.check_columns(frame)
        fast_ok, fast = self._fast(frame)
        slow, bad = self._slow(frame.filter(~fast_ok) if fast_ok is not None else frame)
        tables = [t for t in (fast, slow) if t is not None and t.height]
        if not tables:
            empty = pairs_table([], source=self.source).with_columns(
                pl.lit(None, pl.Int64).alias(SOURCE_ROW)
            )
            return empty, bad
        if len(tables) == 1:
            return tables[0], bad
        # Both paths give contract types; a text `split` may be all null on one side.
        return pl.concat(tables, how="vertical_relaxed").sort(SOURCE_ROW), bad

    def _fast(self, frame: pl.DataFrame) -> tuple[pl.Series | None, pl.DataFrame | None]:
        if "prompt" not in frame.columns:
            return None, None  # implicit prompts: every row takes the per-row path
        prompt = _prompt_expr(frame)
        chosen = _reply_expr(frame, "chosen")
        rejected = _reply_expr(frame, "rejected")
        if prompt is None or chosen is None or rejected is None:
            return None, None
        votes_ok, votes = _votes_expr(frame)
        checks = [prompt[0], chosen[0], rejected[0], votes_ok]
        columns: list[pl.Expr] = [
            pl.col(SOURCE_ROW),
            prompt[1].alias("prompt"),
            chosen[1].alias("chosen"),
            rejected[1].alias("rejected"),
        ]
        for name in _PAIR_ESTIMATES:
            if name in frame.columns:
                ok, value = _number_expr(frame, name)
                checks.append(ok)
                columns.append(value.alias(name))
            else:
                columns.append(pl.lit(None, pl.Float64).alias(name))
        columns.append(votes.alias("n_votes"))
        if "source" in frame.columns:
            columns.append(pl.col("source").cast(pl.String).fill_null(self.source))
        else:
            columns.append(pl.lit(self.source).alias("source"))
        if "provenance" not in frame.columns:
            # json.dumps({"file": name, "row": n}), as import_trl writes it, built as text.
            columns.append(
                pl.concat_str(
                    pl.lit('{"file": ' + self._file_json + ', "row": '),
                    pl.col(SOURCE_ROW).cast(pl.String),
                    pl.lit("}"),
                ).alias("provenance")
            )
        if "split" in frame.columns:
            columns.append(pl.col("split").cast(pl.String))
        ok_mask = frame.select(pl.all_horizontal(checks).alias("ok"))["ok"]
        fast = frame.filter(ok_mask).select(columns)
        if "provenance" in frame.columns:
            fast = fast.with_columns(self.provenance_of(frame.filter(ok_mask)))
        form = "standard" if frame.schema["prompt"] == pl.String else "conversational"
        self.forms[f"{form}_explicit"] += fast.height
        try:
            table = conform(ids.with_pair_ids(with_messages(fast)), "pairs", source=self.path)
        except InputError as exc:
            raise relocate(exc, fast[SOURCE_ROW], self.path) from None
        return ok_mask, table

    def provenance_of(self, frame: pl.DataFrame) -> pl.Series:
        values = [
            json.dumps(provenance_of(value, self.path, row), ensure_ascii=False)
            for value, row in zip(frame["provenance"].to_list(), frame[SOURCE_ROW], strict=True)
        ]
        return pl.Series("provenance", values, dtype=pl.String)

    def _slow(self, frame: pl.DataFrame) -> tuple[pl.DataFrame | None, list[tuple[int, str, Any]]]:
        """import_trl's per-row conversion, for the rows the fast path did not take."""
        records: list[dict[str, Any]] = []
        numbers: list[int] = []
        bad: list[tuple[int, str, Any]] = []
        explicit = "prompt" in frame.columns
        for row in frame.iter_rows(named=True):
            number = row.pop(SOURCE_ROW)
            try:
                record, form = preference_record(
                    row, explicit=explicit, path=self.path, number=number
                )
            except InputError:
                raise  # a file-level error (bad provenance JSON), not a row to set aside
            except ValueError as exc:
                bad.append((number, str(exc), row))
                continue
            if "split" in frame.columns:
                record["split"] = row.get("split")
            if row.get("source") is not None:
                record["source"] = str(row["source"])
            self.forms[form] += 1
            records.append(record)
            numbers.append(number)
        if not records:
            return None, bad
        rows = pl.Series(SOURCE_ROW, numbers, dtype=pl.Int64)
        try:
            table = pairs_table(records, source=self.source)
        except InputError as exc:
            raise relocate(exc, rows, self.path) from None
        return table.with_columns(rows), bad


_DUPLICATE = "pair_id: duplicate pair_id (an earlier row has the same id)"


def stream_import_trl(
    src: str | Path,
    out: str | Path,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    source: str = "trl",
) -> dict[str, Any]:
    """A TRL preference file (Parquet or JSONL) -> a pairs file, one batch at a time.

    Input: standard rows (`prompt`, `chosen`, `rejected` as text) or conversational rows
    (`prompt` a list of messages, `chosen` / `rejected` each a list of one assistant message;
    without `prompt`, whole conversations that share all but the last turn), optionally with
    prefdata's `confidence`, `margin`, `agreement`, `n_votes`, `source`, `provenance`,
    `split`, which are kept. Output (`out`, .parquet or .jsonl): the pairs contract, the same
    rows and values that prefdata.io.importers.trl.import_trl gives (confidence / margin /
    agreement null when absent, n_votes 1, source `source`, provenance {file, row}).

    Rows that cannot become pairs, or that break the contract, or repeat an earlier pair_id
    (in any batch), go to `<out>.rejected.<ext>` (columns row, reason, record; written only
    when there are some). Returns a report: source_rows, rows_pairs, rows_rejected,
    dropped_<reason> counts, form_<form> counts, batches, rejected_file.
    Nothing is written to `out` unless the whole file went through.
    """
    path = Path(src)
    out = Path(out)
    converter = _PairBatches(path, source)
    report: dict[str, Any] = {"source_file": str(path), "source_rows": 0, "batches": 0}
    reasons: Counter[str] = Counter()
    seen = SeenIds()
    with ExitStack() as stack:
        sink = BatchSink(out, stack)
        rejected_sink = BatchSink(sibling(out, "rejected"), stack)
        # closing(): on an error, stop the read-ahead thread now, not when collected.
        batches = stack.enter_context(closing(iter_batches(path, batch_rows=batch_rows)))
        for frame in batches:
            report["batches"] += 1
            report["source_rows"] += frame.height
            # Errors from here already carry the global row.
            table, early = converter.convert(frame)
            good, late = _split_with_seen(table, seen)
            rejected = _rejected_table(early, late)
            if rejected.height:
                reasons.update(reason_key(r) for r in rejected["reason"].to_list())
                rejected_sink.write(rejected)
            if good.height:
                sink.write(good.drop(SOURCE_ROW))
        sink.close(empty=pairs_table([], source=source))
        rejected_sink.close()
        report["rows_pairs"] = sink.rows
        report["rows_rejected"] = rejected_sink.rows
        report["rejected_file"] = str(rejected_sink.target) if rejected_sink.started else None
        report.update({f"form_{k}": n for k, n in sorted(converter.forms.items())})
        report.update({f"dropped_{k}": n for k, n in sorted(reasons.items())})
    return report


_SEEN = "__seen_before"


def _split_with_seen(table: pl.DataFrame, seen: SeenIds) -> tuple[pl.DataFrame, pl.DataFrame]:
    """split_problems, plus the rows whose pair_id an earlier batch already had."""
    table = table.with_columns(seen.add(table["pair_id"]).alias(_SEEN))
    good, bad = split_problems(table, "pairs")
    again = good[_SEEN]
    if again.any():
        moved = good.filter(again).with_columns(pl.lit(_DUPLICATE).alias("reason"))
        good = good.filter(~again)
        bad = pl.concat([bad, moved]).sort(SOURCE_ROW)
    if bad[_SEEN].any():
        # The in-memory check lists the duplicate last, after the row's other problems.
        add = pl.col(_SEEN) & ~pl.col("reason").str.contains(_DUPLICATE, literal=True)
        bad = bad.with_columns(
            pl.when(add)
            .then(pl.col("reason") + "; " + _DUPLICATE)
            .otherwise(pl.col("reason"))
            .alias("reason")
        )
    return good.drop(_SEEN), bad.drop(_SEEN)


def _rejected_table(early: list[tuple[int, str, Any]], late: pl.DataFrame) -> pl.DataFrame:
    """Rejected rows as in import_trl: source rows with the conversion reason, then pairs
    rows with 'pairs: <contract problem>' (here with their source row, not null)."""
    parts = []
    if early:
        parts.append(
            pl.DataFrame(
                {
                    "row": [r for r, _, _ in early],
                    "reason": [reason for _, reason, _ in early],
                    "record": [
                        json.dumps(rec, ensure_ascii=False, default=str) for _, _, rec in early
                    ],
                },
                schema=REJECTED_SCHEMA,
            )
        )
    if late.height:
        parts.append(
            pl.DataFrame(
                {
                    "row": late[SOURCE_ROW],
                    "reason": "pairs: " + late["reason"],
                    "record": [
                        json.dumps(r, ensure_ascii=False, default=str)
                        for r in late.drop(SOURCE_ROW, "reason").to_dicts()
                    ],
                },
                schema=REJECTED_SCHEMA,
            )
        )
    if not parts:
        return pl.DataFrame(schema=REJECTED_SCHEMA)
    return pl.concat(parts).sort("row", maintain_order=True)


__all__ = ["stream_import_trl"]

"""Exporters: TRL preference (standard or conversational, always with an explicit prompt),
TRL unpaired (KTO), OpenAI-style DPO JSONL, and a Hugging Face `datasets` folder.

`to_<format>(table) -> table` builds the exported rows; `export(table, path, fmt)` writes them
atomically. Input is a pairs table (or a kto table for the KTO formats); a pairs table
exported as KTO goes through prefdata.io.convert.pairs_to_kto.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, cast

import polars as pl

from prefdata.errors import InputError
from prefdata.io.convert import pairs_to_kto
from prefdata.io.tables import Format, atomic_path, to_hf_dataset, write_table
from prefdata.schema import MESSAGES, guess_contract, validate

ExportFormat = Literal["trl", "trl-conversational", "kto", "kto-conversational", "openai", "hf"]
EXPORT_FORMATS: tuple[str, ...] = ExportFormat.__args__  # type: ignore[attr-defined]

# prefdata's own columns travel with TRL exports (TRL ignores columns it does not use), so an
# export -> import round trip keeps confidence and provenance. `minimal=True` drops them.
PAIR_EXTRAS = (
    "pair_id",
    "prompt_id",
    "confidence",
    "margin",
    "n_votes",
    "agreement",
    "source",
    "provenance",
)
KTO_EXTRAS = ("prompt_id", "completion_id", "confidence", "source")

# TRL's RewardTrainer reads any column named `margin` as its per-pair margin; ours is a rating
# gap on another scale, so it travels under a name TRL does not read (importers undo this).
EXPORT_RENAMES = {"margin": "prefdata_margin"}

_ASSISTANT = pl.Struct({"role": pl.String, "content": pl.String})


def _as_assistant(column: str) -> pl.Expr:
    return (
        pl.concat_list(
            pl.struct(pl.lit("assistant").alias("role"), pl.col(column).alias("content"))
        )
        .cast(pl.List(_ASSISTANT))
        .alias(column)
    )


def _prompt_text(table: pl.DataFrame, *, flatten: bool, source: str | None) -> pl.Expr:
    """The prompt as plain text: the content of a single user message.

    A multi-turn prompt has no faithful plain-text form in TRL's standard format, so it is
    refused (naming the first such row) unless `flatten`, which writes "Role: content" blocks.
    """
    turns = table["prompt"].list.len()
    multi = (turns != 1) | (table["prompt"].list.first().struct.field("role") != "user")
    if multi.any() and not flatten:
        row = int(multi.arg_true()[0]) + 1
        raise InputError(
            f"{int(multi.sum())} prompt(s) have several turns or a non-user message; the "
            "standard text format would lose the turns. Use the conversational format, or "
            "flatten=True (--flatten) to write 'User: ... Assistant: ...' text",
            source=source,
            row=row,
            column="prompt",
        )
    if not flatten:
        return pl.col("prompt").list.first().struct.field("content").alias("prompt")
    return (
        pl.col("prompt")
        .list.eval(
            pl.concat_str(
                [
                    pl.element().struct.field("role").str.to_titlecase(),
                    pl.lit(": "),
                    pl.element().struct.field("content"),
                ]
            )
        )
        .list.join("\n\n")
        .alias("prompt")
    )


def _extras(table: pl.DataFrame, names: tuple[str, ...], minimal: bool) -> list[pl.Expr]:
    if minimal:
        return []
    return [pl.col(c).alias(EXPORT_RENAMES.get(c, c)) for c in names if c in table.columns]


def from_export_names(table: pl.DataFrame) -> pl.DataFrame:
    """Undo EXPORT_RENAMES on a table read back from a TRL export."""
    renames = {
        new: old
        for old, new in EXPORT_RENAMES.items()
        if new in table.columns and old not in table.columns
    }
    return table.rename(renames) if renames else table


def to_trl(
    pairs: pl.DataFrame,
    *,
    conversational: bool = False,
    flatten: bool = False,
    minimal: bool = False,
    source: str | None = None,
) -> pl.DataFrame:
    """Pairs -> TRL preference rows with an explicit prompt.

    Input: pairs contract. Output columns: `prompt`, `chosen`, `rejected` (text, or in the
    conversational form a message list / one assistant message each), then prefdata's
    columns unless `minimal`.
    """
    pairs = validate(pairs, "pairs", source=source)
    extras = _extras(pairs, PAIR_EXTRAS, minimal)
    if conversational:
        cols = [pl.col("prompt"), _as_assistant("chosen"), _as_assistant("rejected")]
    else:
        cols = [
            _prompt_text(pairs, flatten=flatten, source=source),
            pl.col("chosen"),
            pl.col("rejected"),
        ]
    return pairs.select(*cols, *extras)


def to_kto(
    table: pl.DataFrame,
    *,
    conversational: bool = False,
    flatten: bool = False,
    minimal: bool = False,
    source: str | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Pairs or KTO rows -> TRL unpaired rows (`prompt`, `completion`, `label`).

    Input: pairs contract (each pair gives a desirable and an undesirable row) or kto
    contract. Output: the TRL rows, and a report with the desirable:undesirable ratio
    against TRL's 1:1 to 4:3 advice.
    """
    # A table with either side of a pair is a pairs table (missing the other is its error).
    if guess_contract(table) == "pairs" or {"chosen", "rejected"} & set(table.columns):
        converted = pairs_to_kto(validate(table, "pairs", source=source))
        kto, report = converted.tables["kto"], converted.report
    else:
        from prefdata.io.convert import kto_balance

        kto = validate(table, "kto", source=source)
        report = kto_balance(kto)
    extras = _extras(kto, KTO_EXTRAS, minimal)
    if conversational:
        cols = [pl.col("prompt"), _as_assistant("completion"), pl.col("label")]
    else:
        cols = [
            _prompt_text(kto, flatten=flatten, source=source),
            pl.col("completion"),
            pl.col("label"),
        ]
    return kto.select(*cols, *extras), report


def to_openai(pairs: pl.DataFrame, *, source: str | None = None) -> pl.DataFrame:
    """Pairs -> OpenAI preference fine-tuning rows.

    Output columns: `input` ({messages}), `preferred_output`, `non_preferred_output` (each a
    list with one assistant message). No other columns: the format allows none.
    """
    pairs = validate(pairs, "pairs", source=source)
    return pairs.select(
        pl.struct(pl.col("prompt").cast(MESSAGES).alias("messages")).alias("input"),
        _as_assistant("chosen").alias("preferred_output"),
        _as_assistant("rejected").alias("non_preferred_output"),
    )


def parse_format(name: str) -> ExportFormat:
    """The export format called `name`, or an error listing the known ones."""
    if name not in EXPORT_FORMATS:
        raise InputError(f"unknown export format '{name}'; choose one of {EXPORT_FORMATS}")
    return cast(ExportFormat, name)


def check_export_path(fmt: str, path: str | Path) -> None:
    """Refuse, before any work, an output path the format cannot be written to."""
    if fmt == "openai" and not str(path).endswith(".jsonl"):
        raise InputError(
            "the OpenAI format is JSONL: give an output path ending in .jsonl", source=str(path)
        )


def export_rows(
    table: pl.DataFrame,
    fmt: str,
    *,
    flatten: bool = False,
    minimal: bool = False,
    source: str | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The rows of a row format (every export format but `hf`, a folder) and, for KTO, the
    desirable:undesirable balance (empty for the others): what `export` and the streaming
    export (one batch at a time) both write."""
    if fmt in ("trl", "trl-conversational"):
        rows = to_trl(
            table,
            conversational=fmt == "trl-conversational",
            flatten=flatten,
            minimal=minimal,
            source=source,
        )
        return rows, {}
    if fmt in ("kto", "kto-conversational"):
        return to_kto(
            table,
            conversational=fmt == "kto-conversational",
            flatten=flatten,
            minimal=minimal,
            source=source,
        )
    if fmt == "openai":
        return to_openai(table, source=source), {}
    raise InputError(f"unknown export format '{fmt}'; choose one of {EXPORT_FORMATS}")


def export(
    table: pl.DataFrame,
    path: str | Path,
    fmt: ExportFormat,
    *,
    flatten: bool = False,
    minimal: bool = False,
    source: str | None = None,
) -> dict[str, Any]:
    """Write `table` (pairs, or kto for the KTO formats) to `path` in `fmt`, atomically.

    The file type comes from the path's suffix (.jsonl, .parquet, ...; OpenAI needs .jsonl);
    `hf` writes a datasets save_to_disk folder of the TRL conversational rows. Returns a
    report: rows written and, for KTO, the desirable:undesirable balance.
    """
    report: dict[str, Any] = {"format": fmt, "path": str(path)}
    check_export_path(fmt, path)
    file_format: Format | None = None
    if fmt == "hf":
        out = (
            to_kto(table, conversational=True, minimal=minimal, source=source)[0]
            if guess_contract(table) == "kto"
            else to_trl(table, conversational=True, minimal=minimal, source=source)
        )
        file_format = "hf"
    else:
        out, balance = export_rows(table, fmt, flatten=flatten, minimal=minimal, source=source)
        report.update(balance)
    write_table(out, path, fmt=file_format)
    report["rows"] = out.height
    return report


def push_to_hub(
    table: pl.DataFrame, repo_id: str, *, private: bool = True, token: str | None = None
) -> None:
    """Push TRL conversational rows to the Hugging Face Hub (needs network and a token)."""
    rows = to_trl(table, conversational=True)
    to_hf_dataset(rows).push_to_hub(repo_id, private=private, token=token)


__all__ = [
    "EXPORT_FORMATS",
    "atomic_path",
    "check_export_path",
    "export",
    "export_rows",
    "push_to_hub",
    "to_kto",
    "to_openai",
    "to_trl",
]

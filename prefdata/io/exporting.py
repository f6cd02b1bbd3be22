"""The `export` stage: a pairs (or KTO) file -> training files in one or several formats.

Files over 256 MB (or `stream=True`) go through prefdata.io.stream one batch at a time, with
the same rows and checks as the in-memory path (prefdata.io.exporters.export); the `hf`
format and a push to the Hub need the whole table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import polars as pl

from prefdata.errors import InputError
from prefdata.io import exporters
from prefdata.io.exporters import ExportFormat, export
from prefdata.stage import Input, Output, StageResult, stage


def _targets(out: Path, formats: Sequence[ExportFormat]) -> dict[ExportFormat, Path]:
    """Format -> path: `out` itself for one format when it names a file (has a suffix, or is
    the `hf` folder), else `<format>.jsonl` (hf: `hf/`) inside the folder `out`."""
    if len(formats) == 1 and not out.is_dir() and (out.suffix or formats[0] == "hf"):
        return {formats[0]: out}
    if out.suffix and not out.is_dir():
        raise InputError(
            f"{len(formats)} formats need a folder for -o, not a file name", source=out
        )
    return {fmt: out / ("hf" if fmt == "hf" else f"{fmt}.jsonl") for fmt in formats}


@stage("export", outputs=("trl", "trl-conversational", "kto", "kto-conversational", "openai", "hf"))
def export_files(
    pairs: Annotated[Path | pl.DataFrame, Input("kto", table=True)],
    out: Annotated[Path, Output(".")],
    *,
    formats: Sequence[ExportFormat] = ("trl-conversational",),
    flatten: bool = False,
    minimal: bool = False,
    push_to_hub: str | None = None,
    stream: bool | None = None,
) -> StageResult:
    """Export pairs (or KTO rows) for training: TRL (standard / conversational), KTO, OpenAI
    DPO JSONL, or a Hugging Face datasets folder; always with an explicit prompt.

    With one format, `out` is the file (or the hf folder); with several, a folder holding
    `<format>.jsonl` (and `hf/`). Report: per format, rows written (and the KTO balance).

    Example: prefdata export hh.parquet --format trl-conversational -o hh.trl.jsonl

    Args:
        pairs: the pairs (or KTO rows, for the KTO formats): a file, or from Python any
            table a stage accepts
        out: the output file, or a folder for several formats
        formats: trl, trl-conversational, kto, kto-conversational, openai or hf (repeat for
            several)
        flatten: write multi-turn prompts as plain text
        minimal: only the format's own columns (prefdata's confidence and provenance dropped)
        push_to_hub: also push the TRL conversational rows to this Hub repo (needs
            network and a token)
        stream: batched, bounded memory (default: files over 256 MB)
    """
    from prefdata.io.frames import source_name
    from prefdata.io.stream import stream_export, use_stream, whole_table

    if not formats:
        raise InputError("give at least one export format")
    targets = _targets(Path(out), formats)
    if targets and len(targets) > 1:
        Path(out).mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    table = None
    for fmt, path in targets.items():
        if fmt != "hf" and use_stream(pairs, stream):
            report[fmt] = stream_export(pairs, path, fmt, flatten=flatten, minimal=minimal)
            continue
        if table is None:
            table = whole_table(pairs)
        report[fmt] = export(
            table, path, fmt, flatten=flatten, minimal=minimal, source=source_name(pairs, "pairs")
        )
    if push_to_hub:
        exporters.push_to_hub(table if table is not None else whole_table(pairs), push_to_hub)
        report["pushed_to"] = push_to_hub
    one = report[formats[0]] if len(formats) == 1 and not push_to_hub else report
    return StageResult(report=one, files={str(fmt): path for fmt, path in targets.items()})

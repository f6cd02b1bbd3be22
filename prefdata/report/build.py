"""The stage `report`: the QA report of a data set (or of a data set beside the one it was
made from), written to a folder.

Writes `report.html` (the self-contained page), `report.json` (every figure of the page),
`README.md` (a Hugging Face dataset card) and the data itself as `data/<split>.parquet` (the
card's `data_files` point at them, so the folder can be uploaded as it is), each atomically;
everything is computed before the first file is written, so a failure leaves the folder as
it was.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import polars as pl

import prefdata
from prefdata.errors import InputError, OptionError
from prefdata.io.tables import atomic_path, read_text, write_table
from prefdata.report import card, html
from prefdata.report.figures import as_data, comparison, dataset_figures, dumps, jsonable
from prefdata.report.tokens import load_tokenizer
from prefdata.stage import Input, Output, StageResult, Table, stage

FILES = ("report.html", "report.json", "README.md")
DATA_DIR = "data"


def compute_report(
    data: pl.DataFrame,
    *,
    before: pl.DataFrame | None = None,
    annotations: pl.DataFrame | None = None,
    issues: pl.DataFrame | None = None,
    rejected: pl.DataFrame | None = None,
    sample: pl.DataFrame | None = None,
    tokenizer: str | Path | Any | None = "smollm2",
    max_length: int = 1024,
    token_rows: int | None = 20_000,
    title: str | None = None,
    license: str | None = None,
    filter_settings: Mapping[str, Any] | None = None,
    max_rows: int = 5000,
    sample_rows: int = 200,
    text_chars: int = 1500,
    bootstrap: int = 1000,
    seed: int = 0,
    names: Mapping[str, str | None] | None = None,
    rounds: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The report dict (what report.json holds); see `build_report` for the options.
    `names`: the input file names to show (data, before, annotations, ...); `rounds`: the
    per-round figures of an iterative pipeline (prefdata.pipeline.rounds.figures)."""
    if max_length < 1:
        raise OptionError("must be >= 1", option="max_length")
    names = dict(names or {})
    tok = load_tokenizer(tokenizer)
    settings = dict(filter_settings) if filter_settings else None
    common: dict[str, Any] = {
        "annotations": annotations,
        "issues": issues,
        "tokenizer": tok,
        "max_length": max_length,
        "token_rows": token_rows,
        "bootstrap": bootstrap,
        "seed": seed,
        "max_rows": max_rows,
        "sample_rows": sample_rows,
        "text_chars": text_chars,
    }
    report: dict[str, Any] = {
        "prefdata_version": prefdata.__version__,
        "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "options": {
            "tokenizer": tok.name if tok else None,
            "max_length": max_length,
            "token_rows": token_rows,
            "max_rows": max_rows,
            "sample_rows": sample_rows,
            "text_chars": text_chars,
            "bootstrap": bootstrap,
            "seed": seed,
        },
        "inputs": {
            k: names.get(k)
            for k in (
                "data",
                "before",
                "annotations",
                "issues",
                "rejected",
                "sample",
                "filter",
                "rounds",
            )
        },
        "license": license,
        "filter_settings": settings,
    }
    data_name = names.get("data") or _describe(data)
    if before is None:
        figures = dataset_figures(
            data, rejected=rejected, sample=sample, filter_settings=settings, **common
        )
        figures["name"] = data_name
        report["data"] = figures
        report["title"] = title or f"QA report: {data_name}"
    else:
        # The audit sample was drawn from (and describes) the data before; the rejected
        # rows are what the filter took out of it to make the data after.
        before_fig = dataset_figures(before, sample=sample, filter_settings=settings, **common)
        after_fig = dataset_figures(data, rejected=rejected, filter_settings=settings, **common)
        before_name = _describe(before)
        before_fig["name"] = f"before: {before_name}"
        after_fig["name"] = f"after: {data_name}"
        report["data"], report["compare"] = before_fig, after_fig
        report["comparison"] = comparison(before_fig, after_fig)
        report["title"] = title or f"QA report: {before_name} before, {data_name} after"
    report["data_file"] = data_name
    if rounds:
        report["rounds"] = rounds
    about = card.about(report)
    report["content_warning"] = about["content_warning"]
    report["sources_known"] = about["sources"]
    return jsonable(report)


def read_rounds(path: Path) -> list[dict[str, Any]]:
    """The rows of a rounds.json (one object per round, each with its `round` number)."""
    try:
        rows = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise InputError(f"not JSON: {exc.msg} (line {exc.lineno})", source=str(path)) from None
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and isinstance(r.get("round"), int) for r in rows
    ):
        raise InputError(
            "not a rounds file: expected a list of objects, each with an integer `round`",
            source=str(path),
        )
    return rows


def _describe(table: pl.DataFrame) -> str:
    """A data set in a few words: '2,303 pairs from hh-rlhf'."""
    kind = "pairs" if "chosen" in table.columns else "rows"
    sources = (
        sorted(str(s) for s in table["source"].drop_nulls().unique().to_list())
        if "source" in table.columns
        else []
    )
    origin = f" from {', '.join(sources[:3])}" + (" and others" if len(sources) > 3 else "")
    return f"{table.height:,} {kind}" + (origin if sources else "")


# Words of a source file's name that name its split (HH-RLHF's harmless-base_test.jsonl.gz,
# PandaLM's testset-v1.json): without a `split` column, a test set must not be published as
# "train" (issue 17).
_SPLIT_WORDS = {
    "test": "test",
    "testset": "test",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "train": "train",
    "training": "train",
}


def split_of_file(name: str | None) -> str | None:
    """The split a source file's name says (`harmless-base_test.jsonl.gz` -> test), or None."""
    words = re.split(r"[^a-z]+", (name or "").lower())
    found = {_SPLIT_WORDS[w] for w in words if w in _SPLIT_WORDS}
    return found.pop() if len(found) == 1 else None


def _split_files(table: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """split name -> its rows: the `split` column; else the split the row's source file name
    says (provenance `file`, as the importers record it); else "train"."""
    if "split" in table.columns:
        split = table["split"].cast(pl.String)
    else:
        split = pl.Series("split", [None] * table.height, dtype=pl.String)
    if "provenance" in table.columns:
        files = table["provenance"].cast(pl.String).str.json_path_match("$.file")
        from_file = files.map_elements(split_of_file, return_dtype=pl.String)
        split = split.fill_null(from_file)
    split = split.fill_null("train")
    if not table.height:  # an empty data set is still published, as an empty train split
        return {"train": table}
    return {str(name): table.filter(split == name) for name in sorted(split.unique().to_list())}


@stage("report", outputs=("report",))
def build_report(
    data: Annotated[pl.DataFrame, Table("pairs", "kto", rows=False)],
    *,
    out: Annotated[Path, Output("report")],
    before: Annotated[pl.DataFrame | None, Table("pairs", "kto", auto=False, rows=False)] = None,
    annotations: Annotated[pl.DataFrame | None, Table("annotations", rows=False)] = None,
    issues: Annotated[pl.DataFrame | None, Table("issues", rows=False)] = None,
    rejected: Annotated[pl.DataFrame | None, Table()] = None,
    sample: Annotated[pl.DataFrame | None, Table(auto=False)] = None,
    filter_settings: Annotated[Path | None, Input("filter")] = None,
    rounds: Annotated[Path | None, Input("rounds")] = None,
    tokenizer: str | None = "smollm2",
    max_length: int = 1024,
    token_rows: int = 20_000,
    title: str | None = None,
    license: str | None = None,
    max_rows: int = 5000,
    sample_rows: int = 200,
    text_chars: int = 1500,
    data_files: bool = True,
    bootstrap: int = 1000,
    seed: int = 0,
) -> StageResult:
    """A self-contained HTML QA report (plots inline, a searchable table of the flagged
    pairs, no network), report.json with every figure, a Hugging Face dataset card
    (README.md) and the data beside it (data/<split>.parquet), in the folder `out`.

    With `before` (the data set this one was made from, e.g. before filtering) the two are
    shown side by side; `rejected` then belongs to this data set and `sample` to `before`.
    Sections are present only when their data exists (prefdata.report.sections). Report:
    `written` (the files), `sections`, `rows_in_table` (pairs in the page's table), `license`.

    Example: prefdata report clean.parquet --before raw.parquet --annotations votes.parquet
    --issues issues.parquet --rejected dropped.parquet --filter-settings clean.filter.json
    -o qa/

    Args:
        data: the pairs or KTO table to report on
        out: the report folder
        before: the data set this one was made from, shown beside it
        annotations: votes on the pairs (judges and humans)
        issues: the issues table from `prefdata audit`
        rejected: the rows `prefdata filter` dropped (with `reason`)
        sample: a reviewed audit sample (its `mislabeled` column filled in)
        filter_settings: the OUT-stem.filter.json that `prefdata filter` wrote
        rounds: an iterative pipeline's rounds.json: the rounds compared in the page
        tokenizer: "smollm2" (embedded), a local tokenizer folder, or "none" (characters)
        max_length: TRL's max_length, for the truncation figures
        token_rows: tokenize at most this many rows (a seeded sample)
        title: the report's title (default from the file names)
        license: the dataset card's licence (default: from the sources)
        max_rows: the page's table holds at most this many flagged pairs
        sample_rows: and a random sample of this many unflagged pairs
        text_chars: texts in the page are cut after this many characters
        data_files: write the data beside the card (data/<split>.parquet)
        bootstrap: resamples for agreement intervals
        seed: the bootstrap, the samples and dedup
    """
    # The stage gets tables, not their files: the page names the inputs that were given.
    given = {
        "before": before,
        "annotations": annotations,
        "issues": issues,
        "rejected": rejected,
        "sample": sample,
    }
    names: dict[str, str | None] = {k: "given" for k, v in given.items() if v is not None}
    names["filter"] = filter_settings.name if filter_settings else None
    settings = json.loads(read_text(filter_settings)) if filter_settings is not None else None
    names["rounds"] = rounds.name if rounds else None
    report = compute_report(
        data,
        before=before,
        annotations=annotations,
        issues=issues,
        rejected=rejected,
        sample=sample,
        tokenizer=None if tokenizer in (None, "none") else tokenizer,
        max_length=max_length,
        token_rows=token_rows,
        title=title,
        license=license,
        filter_settings=settings,
        max_rows=max_rows,
        sample_rows=sample_rows,
        text_chars=text_chars,
        bootstrap=bootstrap,
        seed=seed,
        names=names,
        rounds=read_rounds(rounds) if rounds is not None else None,
    )
    splits = _split_files(as_data(data)[0]) if data_files else {}
    report["data_files"] = {name: f"{DATA_DIR}/{name}.parquet" for name in splits}
    contents = {
        "report.html": html.render(report),
        "report.json": dumps(report) + "\n",
        "README.md": card.render(report),
    }
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        with atomic_path(folder / name) as tmp:
            tmp.write_text(contents[name], encoding="utf-8")
            # mkstemp creates 0600 files; a report is meant to be read by others.
            tmp.chmod(0o644)
    for name, rows in splits.items():
        write_table(rows, folder / DATA_DIR / f"{name}.parquet")
    written = [str(folder / f) for f in FILES] + [
        str(folder / p) for p in report["data_files"].values()
    ]
    shown = report.get("compare") or report["data"]
    return StageResult(
        files={"report": folder},
        report={
            "files": written,
            "sections": [k for k in shown if k not in ("name", "contract")],
            "rows_in_table": len((shown.get("pairs") or {}).get("rows") or []),
            "license": card.front_matter(report)["license"],
        },
    )


__all__ = ["build_report", "compute_report", "jsonable"]

"""build_report: the QA report of a data set (or of two, side by side) written to a folder.

Writes `report.html` (self-contained page), `report.json` (every figure of the page) and
`README.md` (a Hugging Face dataset card), each atomically; everything is computed before
the first file is written, so a failure leaves the folder as it was.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

import prefdata
from prefdata.errors import OptionError
from prefdata.io.tables import atomic_path, read_table
from prefdata.report import card, html
from prefdata.report.figures import comparison, dataset_figures, dumps, jsonable
from prefdata.report.tokens import load_tokenizer
from prefdata.schema import conform, guess_contract

TableLike = pl.DataFrame | str | Path
FILES = ("report.html", "report.json", "README.md")


def _read(
    value: TableLike | None, contracts: tuple[str, ...] = ()
) -> tuple[pl.DataFrame | None, str | None]:
    """The table and its file name; a file is conformed to the first of `contracts` it looks
    like (prefdata.schema.conform), so a NaN or a number where text belongs is an error naming
    it, not a figure computed from it. Row problems (a null, a repeated id) are not errors:
    the report counts and shows them."""
    if value is None:
        return None, None
    if isinstance(value, pl.DataFrame):
        return value, None
    table = read_table(value)
    if contracts:
        guessed = guess_contract(table)
        contract = guessed if guessed in contracts else contracts[0]
        table = conform(table, contract, source=value)
    return table, Path(value).name


def compute_report(
    data: TableLike,
    *,
    annotations: TableLike | None = None,
    issues: TableLike | None = None,
    rejected: TableLike | None = None,
    sample: TableLike | None = None,
    tokenizer: str | Path | Any | None = "smollm2",
    max_length: int = 1024,
    token_rows: int | None = 20_000,
    compare: TableLike | None = None,
    title: str | None = None,
    license: str | None = None,
    filter_settings: Mapping[str, Any] | None = None,
    top: int = 20,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The report dict (what report.json holds); see `build_report` for the options."""
    if max_length < 1:
        raise OptionError("must be >= 1", option="max_length")
    table, data_name = _read(data, ("pairs", "kto"))
    assert table is not None
    anns, anns_name = _read(annotations, ("annotations",))
    iss, iss_name = _read(issues, ("issues",))
    rej, rej_name = _read(rejected)
    smp, smp_name = _read(sample)
    after, after_name = _read(compare, ("pairs", "kto"))
    tok = load_tokenizer(tokenizer)
    common: dict[str, Any] = {
        "annotations": anns,
        "issues": iss,
        "tokenizer": tok,
        "max_length": max_length,
        "token_rows": token_rows,
        "top": top,
        "bootstrap": bootstrap,
        "seed": seed,
    }
    report: dict[str, Any] = {
        "prefdata_version": prefdata.__version__,
        "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "options": {
            "tokenizer": tok.name if tok else None,
            "max_length": max_length,
            "token_rows": token_rows,
            "top": top,
            "bootstrap": bootstrap,
            "seed": seed,
        },
        "inputs": {
            "data": data_name,
            "compare": after_name,
            "annotations": anns_name,
            "issues": iss_name,
            "rejected": rej_name,
            "sample": smp_name,
        },
        "license": license,
        "filter_settings": dict(filter_settings) if filter_settings else None,
    }
    if after is None:
        figures = dataset_figures(table, rejected=rej, sample=smp, **common)
        figures["name"] = data_name or "data"
        report["data"] = figures
        report["title"] = title or f"QA report: {figures['name']}"
        report["data_file"] = data_name
    else:
        # The audit sample was drawn from (and describes) the data before; the rejected
        # rows are what the filter took out of it to make the data after.
        before_fig = dataset_figures(table, sample=smp, **common)
        after_fig = dataset_figures(after, rejected=rej, **common)
        before_fig["name"] = f"before: {data_name or 'data'}"
        after_fig["name"] = f"after: {after_name or 'compare'}"
        report["data"], report["compare"] = before_fig, after_fig
        report["comparison"] = comparison(before_fig, after_fig)
        report["title"] = title or (
            f"QA report: {data_name or 'before'} vs {after_name or 'after'}"
        )
        report["data_file"] = after_name
    return jsonable(report)


def build_report(
    data: TableLike,
    *,
    out_dir: str | Path,
    annotations: TableLike | None = None,
    issues: TableLike | None = None,
    rejected: TableLike | None = None,
    sample: TableLike | None = None,
    tokenizer: str | Path | Any | None = "smollm2",
    max_length: int = 1024,
    token_rows: int | None = 20_000,
    compare: TableLike | None = None,
    title: str | None = None,
    license: str | None = None,
    filter_settings: Mapping[str, Any] | None = None,
    top: int = 20,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Write report.html, report.json and README.md for a data set into `out_dir`.

    Input: `data`, a pairs or kto table (a DataFrame or a file path), and optionally:
    `annotations` (votes on its items; item_id = pair_id), `issues` (from `prefdata audit`),
    `rejected` (the rows `prefdata filter` dropped, with `reason`), `sample` (the reviewed
    audit sample with `mislabeled` filled in), `compare` (a second data set, e.g. after
    filtering: both are shown side by side, `data` as before; `rejected` then belongs to
    the after side and `sample` to the before side). `tokenizer`: "smollm2" (embedded),
    a local tokenizer folder, a loaded tokenizer, or None for character counts only;
    `max_length`: TRL's max_length for the truncation figures; `token_rows`: tokenize at most
    this many rows (a seeded sample; None: all). `license`, `title` and
    `filter_settings` (the thresholds the filter used) go into the dataset card. `top`:
    flagged items shown; `bootstrap`: resamples for agreement intervals; `seed`: for the
    bootstrap, the scatter subsample and dedup.

    Output: the report dict (the content of report.json). Sections are present only when
    their data exists (see `prefdata.report.figures`).
    """
    report = compute_report(
        data,
        annotations=annotations,
        issues=issues,
        rejected=rejected,
        sample=sample,
        tokenizer=tokenizer,
        max_length=max_length,
        token_rows=token_rows,
        compare=compare,
        title=title,
        license=license,
        filter_settings=filter_settings,
        top=top,
        bootstrap=bootstrap,
        seed=seed,
    )
    contents = {
        "report.html": html.render(report),
        "report.json": dumps(report) + "\n",
        "README.md": card.render(report),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        with atomic_path(out / name) as tmp:
            tmp.write_text(contents[name], encoding="utf-8")
            # mkstemp creates 0600 files; a report is meant to be read by others.
            tmp.chmod(0o644)
    return report

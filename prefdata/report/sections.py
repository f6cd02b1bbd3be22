"""The report's sections, in page order: one `Section` each (what it computes from a
`Context`, how the page shows it, its title). report.json, report.html and the card all
walk this one list.

To add a section (e.g. token-level integrity), write
- `compute(ctx) -> dict | None`: its figures from the data set (None: the section does not
  apply; the page then lists it under "sections without data"), and
- `render(figures, dataset_figures) -> str`: its HTML (escape every text from the data with
  prefdata.report.markup.esc),
and add `Section(key, title, compute, render)` to SECTIONS where it belongs in the page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from prefdata.report import audit_view, browse, measure, render_data, render_quality, votes
from prefdata.report.integrity import integrity_html, token_integrity_section
from prefdata.report.tokens import Tokenizer


@dataclass(frozen=True)
class Context:
    """Everything a section may compute from: one data set and the tables that describe it
    (already matched to its rows), and the report's options."""

    table: pl.DataFrame  # conformed to `contract`
    contract: str  # "pairs" or "kto"
    votes: pl.DataFrame | None  # usable votes on its items (a label, no error)
    issues: pl.DataFrame | None  # issue rows on its items
    rejected: pl.DataFrame | None  # what a filter run dropped from it
    sample: pl.DataFrame | None  # the reviewed audit sample
    overview: dict[str, Any]
    tokenizer: Tokenizer | None = None
    max_length: int = 1024
    token_rows: int | None = 20_000
    max_points: int = 2000
    bootstrap: int = 1000
    seed: int = 0
    filter_settings: dict[str, Any] | None = None
    max_rows: int = 5000
    sample_rows: int = 200
    text_chars: int = 1500

    @property
    def sides(self) -> list[str]:
        return ["chosen", "rejected"] if self.contract == "pairs" else ["completion"]

    @property
    def is_pairs(self) -> bool:
        return self.contract == "pairs" and self.table.height > 0


Compute = Callable[[Context], dict[str, Any] | None]
Render = Callable[[dict[str, Any], dict[str, Any]], str]


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    compute: Compute
    render: Render


def _lengths(c: Context) -> dict[str, Any] | None:
    if not c.table.height:
        return None
    return measure.lengths_section(
        c.table, c.sides, c.tokenizer, c.max_length, token_rows=c.token_rows, seed=c.seed
    )


def _token_integrity(c: Context) -> dict[str, Any] | None:
    if c.contract != "pairs" or c.issues is None or c.tokenizer is None:
        return None
    return token_integrity_section(c.table, c.issues, c.tokenizer)


def _length_bias(c: Context) -> dict[str, Any] | None:
    return (
        measure.length_bias_section(c.table, max_points=c.max_points, seed=c.seed)
        if c.is_pairs
        else None
    )


def _judges(c: Context) -> dict[str, Any] | None:
    v = c.votes
    if v is None:
        return None
    has_order = "order" in v.columns and v["order"].is_not_null().any()
    if not (has_order or (v["annotator_kind"] != "human").any()):
        return None
    return votes.judges_section(c.table if c.contract == "pairs" else None, v)


def _agreement(c: Context) -> dict[str, Any] | None:
    v = c.votes
    if v is None or v["annotator"].n_unique() < 2 or not v["item_id"].is_duplicated().any():
        return None
    return votes.agreement_section(v, bootstrap=c.bootstrap, seed=c.seed)


def _confidence(c: Context) -> dict[str, Any] | None:
    if not c.table.height or not c.table["confidence"].fill_nan(None).drop_nulls().len():
        return None
    return measure.confidence_section(c.table)


def _mislabel(c: Context) -> dict[str, Any] | None:
    return audit_view.mislabel_section(c.table, c.issues) if c.issues is not None else None


def _flags(c: Context) -> dict[str, Any] | None:
    if c.issues is None and c.sample is None:
        return None
    return audit_view.flags_section(c.table, c.issues, c.sample)


def _pairs(c: Context) -> dict[str, Any] | None:
    if not c.table.height:
        return None
    return browse.browse_section(
        c.table,
        c.contract,
        c.issues,
        max_rows=c.max_rows,
        sample_rows=c.sample_rows,
        text_chars=c.text_chars,
        seed=c.seed,
    )


def _filter_preview(c: Context) -> dict[str, Any] | None:
    if not c.is_pairs:
        return None
    return audit_view.filter_preview_section(c.table, c.issues, c.filter_settings)


def _filtering(c: Context) -> dict[str, Any] | None:
    return (
        audit_view.filtering_section(c.table.height, c.rejected) if c.rejected is not None else None
    )


def _duplicates(c: Context) -> dict[str, Any] | None:
    if not c.is_pairs:
        return None
    return audit_view.duplicates_section(c.table, c.issues, seed=c.seed, text_chars=c.text_chars)


SECTIONS: list[Section] = [
    Section("overview", "Overview", lambda c: c.overview, render_data.overview),
    Section("lengths", "Lengths", _lengths, render_data.lengths),
    Section(
        "token_integrity", "Token integrity", _token_integrity, lambda f, fig: integrity_html(f)
    ),
    Section("length_bias", "Length bias", _length_bias, render_data.length_bias),
    Section("judges", "Judges and annotators: position and length", _judges, render_quality.judges),
    Section("agreement", "Agreement", _agreement, render_quality.agreement),
    Section("confidence", "Confidence", _confidence, render_data.confidence),
    Section("mislabel", "Likely mislabels (model-based)", _mislabel, render_quality.mislabel),
    Section("audit", "Heuristic flags", _flags, render_quality.flags),
    Section("pairs", "Pairs: browse, search, filter", _pairs, render_quality.pairs),
    Section(
        "filter_preview", "What filter would drop", _filter_preview, render_quality.filter_preview
    ),
    Section("filtering", "Filtering", _filtering, render_quality.filtering),
    Section(
        "duplicates", "Duplicates and train/test overlap", _duplicates, render_quality.duplicates
    ),
]

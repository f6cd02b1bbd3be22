"""The figures of the QA report (report.json): one dict per data set, one key per section
(prefdata.report.sections lists them, in page order, with what each computes). A section is
present only when its data exists:

- `overview` (always): `prefdata.io.describe.describe()` of the table, `distinct_prompts`,
  what `provenance` records, and with annotations / issues how many matched the data set.
- `lengths`, `length_bias` (with the interval's reading), `confidence`
  (prefdata.report.measure).
- `judges` (LLM judges and human annotators in separate tables: position and length
  preferences with their readings) and `agreement` (prefdata.report.votes).
- `mislabel` (the combined audit's model-based P(swapped), or why there is none), `audit`
  (the heuristic flags and a reviewed sample's rate), `filter_preview` (what
  `prefdata filter` would drop under the current settings and alternatives), `filtering`
  (what a filter run dropped), `duplicates` (with both pairs' text)
  (prefdata.report.audit_view).
- `pairs`: the rows of the browsable table (prefdata.report.browse).

Annotations and issues are matched to the data set by item_id = pair_id (completion_id for
KTO); the votes and issue rows of items that are not in it are counted and left out, so a
filtered data set's figures describe what is left. When no vote matches, the votes are
used as they are (their item ids are something else, e.g. completion ids).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from prefdata.errors import ContractError
from prefdata.io.describe import describe
from prefdata.quality.sample import REVIEW_COLUMN
from prefdata.report.measure import provenance_summary
from prefdata.report.tokens import Tokenizer
from prefdata.schema import conform, guess_contract


def jsonable(value: Any) -> Any:
    """A copy that json.dumps(allow_nan=False) accepts: numpy scalars to Python, NaN and
    infinities to None (an undefined figure, e.g. a ratio with nothing below it)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def as_data(table: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """(the table conformed to its contract, "pairs" or "kto"); an empty table with no
    columns is an empty pairs table."""
    if table.width == 0:
        return conform(pl.DataFrame(schema=_pairs_schema()), "pairs"), "pairs"
    contract = guess_contract(table)
    if contract not in ("pairs", "kto"):
        raise ContractError(
            f"the report needs a pairs or kto table; this table looks like "
            f"{contract or 'no known contract'} (columns {table.columns})"
        )
    return conform(table, contract), contract


def _pairs_schema() -> dict[str, pl.DataType]:
    from prefdata.schema import contract_of

    return contract_of("pairs").required


def item_ids(table: pl.DataFrame, contract: str) -> pl.Series | None:
    column = "pair_id" if contract == "pairs" else "completion_id"
    return table[column].cast(pl.String) if column in table.columns else None


def _match(table: pl.DataFrame, items: pl.Series | None) -> tuple[pl.DataFrame, int, bool]:
    """(rows whose item_id is in `items`, rows left out, whether any matched at all)."""
    if items is None:
        return table, 0, False
    inside = table["item_id"].cast(pl.String).is_in(items.implode())
    if not bool(inside.any()):
        return table, 0, False
    kept = table.filter(inside)
    return kept, table.height - kept.height, True


def dataset_figures(
    table: pl.DataFrame,
    *,
    annotations: pl.DataFrame | None = None,
    issues: pl.DataFrame | None = None,
    rejected: pl.DataFrame | None = None,
    sample: pl.DataFrame | None = None,
    tokenizer: Tokenizer | None = None,
    max_length: int = 1024,
    token_rows: int | None = 20_000,
    max_points: int = 2000,
    bootstrap: int = 1000,
    seed: int = 0,
    filter_settings: dict[str, Any] | None = None,
    max_rows: int = 5000,
    sample_rows: int = 200,
    text_chars: int = 1500,
) -> dict[str, Any]:
    """Every section of one data set (see the module doc). Input: a pairs or kto table and
    the optional annotations, issues, rejected and reviewed-sample tables. Output: a
    JSON-ready dict."""
    from prefdata.report.sections import SECTIONS, Context

    table, contract = as_data(table)
    overview = describe(table)
    overview["distinct_prompts"] = (
        table["prompt_id"].n_unique()
        if "prompt_id" in table.columns
        else table["prompt"].n_unique()
    )
    if "provenance" in table.columns and table.height:
        overview["provenance"] = provenance_summary(table["provenance"])
    items = item_ids(table, contract)

    votes: pl.DataFrame | None = None
    if annotations is not None:
        anns = conform(annotations, "annotations")
        matched, left_out, _ = _match(anns, items)
        usable = matched.filter(pl.col("label").is_not_null())
        if "error" in usable.columns:
            usable = usable.filter(pl.col("error").is_null())
        summary = describe(matched) if matched.height else {"rows": 0}
        summary.update(
            votes_total=anns.height, votes_not_in_data=left_out, usable_votes=usable.height
        )
        overview["annotations"] = summary
        votes = usable if usable.height else None

    matched_issues: pl.DataFrame | None = None
    if issues is not None:
        conformed = conform(issues, "issues")
        # Unlike votes, issue rows always name pairs (or KTO rows): no fallback to all.
        matched_issues = (
            conformed
            if items is None
            else conformed.filter(pl.col("item_id").cast(pl.String).is_in(items.implode()))
        )
        left_out = conformed.height - matched_issues.height
        overview["issues"] = {"rows": conformed.height, "rows_not_in_data": left_out}
    if sample is not None and REVIEW_COLUMN not in sample.columns:
        raise ContractError(
            f"the audit sample has no '{REVIEW_COLUMN}' column", column=REVIEW_COLUMN
        )

    ctx = Context(
        table=table,
        contract=contract,
        votes=votes,
        issues=matched_issues,
        rejected=rejected,
        sample=sample,
        overview=overview,
        tokenizer=tokenizer,
        max_length=max_length,
        token_rows=token_rows,
        max_points=max_points,
        bootstrap=bootstrap,
        seed=seed,
        filter_settings=filter_settings,
        max_rows=max_rows,
        sample_rows=sample_rows,
        text_chars=text_chars,
    )
    out: dict[str, Any] = {"contract": contract}
    for section in SECTIONS:
        figures = section.compute(ctx)
        if figures is not None:
            out[section.key] = figures
    return jsonable(out)


# ------------------------------------------------------------------------------- comparison


HEADLINE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rows", ("overview", "rows")),
    ("distinct prompts", ("overview", "distinct_prompts")),
    ("mean confidence", ("confidence", "mean")),
    ("P(chosen longer)", ("length_bias", "overall", "p_chosen_longer")),
    ("median prompt length", ("lengths", "fields", "prompt", "p50")),
    ("median chosen length", ("lengths", "fields", "chosen", "p50")),
    ("median rejected length", ("lengths", "fields", "rejected", "p50")),
    ("rows over max length", ("lengths", "truncation", "rows_over")),
    ("share over max length", ("lengths", "truncation", "rows_over_share")),
    ("pairs flagged by heuristics", ("audit", "items_flagged")),
    ("share flagged by heuristics", ("audit", "items_flagged_share")),
    ("likely mislabels (model-based)", ("mislabel", "flagged")),
    ("expected mislabeled pairs", ("mislabel", "expected_mislabeled")),
    (
        "headline Krippendorff alpha (nominal)",
        ("agreement", "headline", "krippendorff_alpha", "nominal", "value"),
    ),
    ("headline percent agreement", ("agreement", "headline", "percent_agreement", "value")),
    ("duplicate pairs", ("duplicates", "counts", "duplicate_pair")),
    ("near-duplicate pairs", ("duplicates", "counts", "near_duplicate_pair")),
)


def lookup(figures: dict[str, Any], path: Sequence[str]) -> Any:
    value: Any = figures
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def comparison(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Headline figures side by side: metric, before, after, delta (after - before)."""
    out = []
    for name, path in HEADLINE:
        a, b = lookup(before, path), lookup(after, path)
        if a is None and b is None:
            continue
        delta = b - a if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
        out.append(
            {"metric": name, "path": ".".join(path), "before": a, "after": b, "delta": delta}
        )
    return out


def dumps(report: dict[str, Any]) -> str:
    """The report as strict JSON (no NaN)."""
    return json.dumps(jsonable(report), ensure_ascii=False, indent=1, allow_nan=False)

"""The rows behind the report's browsable table: which pairs go into the page, with their
text, every issue row (score, reason) and the model-based P(swapped).

What goes in (said on the page, and in `included`): every flagged pair up to `max_rows`
(the most likely mislabels first when a model-based probability exists, else the pairs with
the most flags), plus a seeded uniform sample of `sample_rows` unflagged pairs to compare
with. Texts are cut at `text_chars` characters (their full length is kept). At 100k pairs
the page stays a few tens of MB at most; the full lists are the issues table and
`prefdata filter --rejected`.

A row carries a content warning (`warn`, shown before its text) when its source is known to
hold offensive text (prefdata.io.importers.sources) or a rule flags the prompt as harmful.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from prefdata.io.importers.sources import SOURCES
from prefdata.report.audit_view import MODEL_ISSUES, excerpt, prompt_text

# A rule found a harmful-looking prompt: refusal_vs_answer says so in its reason ("the prompt
# looks harmful", "a harmful-looking prompt"). Not the word "harmful" alone: an over-refusal
# row says the prompt "matches no harmful pattern".
HARMFUL_RULE = ("refusal_vs_answer", r"looks harmful|harmful-looking")  # (issue, reason regex)


def _per_item(issues: pl.DataFrame) -> pl.DataFrame:
    """item_id -> flagged, heuristic flags, their lowest score, P(swapped), issue rows."""
    model = pl.col("issue").is_in(list(MODEL_ISSUES))
    flagged = pl.col("is_issue").fill_null(False)
    p_col = (
        pl.col("p_flipped").cast(pl.Float64)
        if "p_flipped" in issues.columns
        else 1.0 - pl.col("score").cast(pl.Float64)
    )
    harmful = (pl.col("issue") == HARMFUL_RULE[0]) & pl.col("reason").fill_null("").str.contains(
        HARMFUL_RULE[1]
    )
    return issues.group_by("item_id").agg(
        flagged.any().alias("flagged"),
        pl.col("issue").filter(flagged & ~model).unique(maintain_order=True).alias("flags"),
        pl.col("score").filter(flagged & ~model).min().alias("min_score"),
        p_col.filter(pl.col("issue") == "mislabeled").first().alias("p"),
        (flagged & (pl.col("issue") == "mislabeled")).any().alias("likely_mislabel"),
        harmful.any().alias("harmful"),
        pl.struct(
            pl.col("issue"),
            pl.col("score"),
            flagged.alias("flagged"),
            pl.col("reason"),
        ).alias("issues"),
    )


def browse_section(
    table: pl.DataFrame,
    contract: str,
    issues: pl.DataFrame | None,
    *,
    max_rows: int = 5000,
    sample_rows: int = 200,
    text_chars: int = 1500,
    seed: int = 0,
) -> dict[str, Any]:
    """The `pairs` section: the rows of the browsable table and what was included."""
    key = "pair_id" if contract == "pairs" else "completion_id"
    sides = ["chosen", "rejected"] if contract == "pairs" else ["completion"]
    if key not in table.columns:
        return {"rows": [], "included": {"reason": f"the table has no {key} column"}}
    base = table.with_columns(pl.col(key).cast(pl.String).alias("__id"))
    if "provenance" in base.columns:
        base = base.with_columns(
            pl.col("provenance").str.json_path_match("$.dataset").alias("__dataset")
        )
    else:
        base = base.with_columns(pl.lit(None, dtype=pl.String).alias("__dataset"))
    has_model = False
    if issues is not None and issues.height:
        per = _per_item(issues.with_columns(pl.col("item_id").cast(pl.String)))
        has_model = bool((issues["issue"] == "mislabeled").any())
        base = base.join(per, left_on="__id", right_on="item_id", how="left")
    else:
        base = base.with_columns(
            pl.lit(None, dtype=pl.Boolean).alias("flagged"),
            pl.lit(None, dtype=pl.List(pl.String)).alias("flags"),
            pl.lit(None, dtype=pl.Float64).alias("min_score"),
            pl.lit(None, dtype=pl.Float64).alias("p"),
            pl.lit(None, dtype=pl.Boolean).alias("likely_mislabel"),
            pl.lit(None, dtype=pl.Boolean).alias("harmful"),
            pl.lit(None).alias("issues"),
        )
    base = base.with_columns(
        pl.col("flagged").fill_null(False),
        pl.col("flags").fill_null(pl.lit([], dtype=pl.List(pl.String))),
    )
    flagged = base.filter("flagged")
    order = (
        [pl.col("p").fill_null(-1.0), pl.col("flags").list.len(), pl.col("__id")]
        if has_model
        else [pl.col("flags").list.len(), pl.col("min_score").fill_null(1.0), pl.col("__id")]
    )
    descending = [True, True, False] if has_model else [True, False, False]
    flagged = flagged.sort(order, descending=descending).head(max_rows)
    rest = base.filter(~pl.col("flagged"))
    if rest.height > sample_rows:
        picked = np.sort(
            np.random.default_rng(seed).choice(rest.height, sample_rows, replace=False)
        )
        rest = rest[picked]
    rows = [
        _row(r, sides, text_chars, has_model)
        for r in pl.concat([flagged, rest]).iter_rows(named=True)
    ]
    n_flagged = int(base["flagged"].sum())
    return {
        "rows": rows,
        "has_model": has_model,
        "has_issues": issues is not None,
        "included": {
            "flagged": flagged.height,
            "flagged_total": n_flagged,
            "sample": rest.height,
            "unflagged_total": base.height - n_flagged,
            "seed": seed,
            "text_chars": text_chars,
            "max_rows": max_rows,
            "order": "p" if has_model else "flags",
        },
        "issue_names": sorted({i for r in rows for i in (x["issue"] for x in r["issues"])}),
        "sources": sorted({str(r["source"]) for r in rows}),
    }


def _warning(row: dict[str, Any]) -> str | None:
    for name in (row.get("__dataset"), row.get("source")):
        info = SOURCES.get(str(name or ""))
        if info is not None and info.content_warning:
            return info.content_warning
    if row.get("harmful"):
        return "a rule found a harmful-looking request in the prompt"
    return None


def _row(r: dict[str, Any], sides: list[str], chars: int, has_model: bool) -> dict[str, Any]:
    issues = sorted(r.get("issues") or [], key=lambda i: (not i["flagged"], i["score"] or 0.0))
    out: dict[str, Any] = {
        "id": r["__id"],
        "source": r.get("source"),
        "split": r.get("split"),
        "confidence": r.get("confidence"),
        "agreement": r.get("agreement"),
        "margin": r.get("margin"),
        "n_votes": r.get("n_votes"),
        "flagged": bool(r["flagged"]),
        "flags": list(r["flags"] or []),
        "min_score": r.get("min_score"),
        "p": r.get("p") if has_model else None,
        "likely_mislabel": bool(r.get("likely_mislabel")),
        "issues": [
            {
                "issue": i["issue"],
                "score": i["score"],
                "flagged": i["flagged"],
                "reason": i["reason"],
            }
            for i in issues
        ],
        "warn": _warning(r),
        "prompt": excerpt(prompt_text(r["prompt"]), chars),
    }
    for side in sides:
        out[side] = excerpt(r[side], chars)
    return out

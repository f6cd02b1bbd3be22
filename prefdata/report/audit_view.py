"""Figures about what the audit found and what filtering does: heuristic flags apart from the
model-based mislabel probability, what `prefdata filter` would drop under the current
settings and a few alternatives, what a filter run dropped, and duplicates with their text.

Heuristic flags (rules, duplicates, disagreement) say that a check fired; their score says
how strongly, and many of them mark pairs that are right (a short refusal against a long
harmful answer trips the length-ratio rule). The combined audit's `mislabeled` rows carry an
out-of-fold probability that chosen and rejected are swapped (prefdata.quality.mislabel):
that is the figure to rank pairs by. The report keeps the two apart and says when the
model-based one is missing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from prefdata.errors import ContractError, PrefdataError
from prefdata.quality.dedup import dedup
from prefdata.quality.sample import mislabel_rate

# Issues whose score is a model's probability, not a rule firing.
MODEL_ISSUES = ("mislabeled", "model_disagrees")
DEDUP_ISSUES = (
    "duplicate_pair",
    "near_duplicate_pair",
    "conflicting_duplicate",
    "duplicate_prompt",
    "near_duplicate_prompt",
)
P_BINS = 20
NO_MODEL = (
    "No model-based mislabel signal in the issues table: prefdata audit found no signal "
    "about the labels to combine (judge or human votes, --model embeddings or reward, "
    "reference answers). The flags below are heuristics; their score of 0 says that a "
    "check fired, not how likely the label is wrong, so pairs are not ranked by it."
)


def prompt_text(messages: Sequence[dict[str, Any]] | None) -> str:
    """A prompt as one text: each turn as `[role] content`."""
    return "\n\n".join(f"[{m['role']}] {m['content'] or ''}" for m in messages or [])


def excerpt(text: str | None, chars: int) -> dict[str, Any]:
    """The first `chars` characters of a text and its full length."""
    text = text or ""
    return {"text": text[:chars], "chars": len(text)}


def pair_texts(table: pl.DataFrame, item_ids: Sequence[str], chars: int) -> dict[str, Any]:
    """pair id -> its prompt, chosen and rejected (excerpts) and source."""
    if not item_ids or "pair_id" not in table.columns:
        return {}
    rows = table.filter(pl.col("pair_id").cast(pl.String).is_in(list(item_ids)))
    return {
        str(r["pair_id"]): {
            "prompt": excerpt(prompt_text(r["prompt"]), chars),
            "chosen": excerpt(r["chosen"], chars),
            "rejected": excerpt(r["rejected"], chars),
            "source": r.get("source"),
        }
        for r in rows.iter_rows(named=True)
    }


# ------------------------------------------------------------------------------ flags


def flags_section(
    table: pl.DataFrame, issues: pl.DataFrame | None, sample: pl.DataFrame | None
) -> dict[str, Any]:
    """The heuristic flags (every flagged issue except the model-based ones) and the
    reviewed audit sample's mislabel rate."""
    out: dict[str, Any] = {}
    if issues is not None:
        heuristic = issues.filter(~pl.col("issue").is_in(list(MODEL_ISSUES)))
        flagged = heuristic.filter(pl.col("is_issue").fill_null(False))
        out["issue_rows"] = issues.height
        out["issue_counts"] = {
            r[0]: r[1] for r in flagged.group_by("issue").len().sort("issue").iter_rows()
        }
        out["rows_per_issue"] = {
            r[0]: r[1] for r in heuristic.group_by("issue").len().sort("issue").iter_rows()
        }
        n = flagged["item_id"].n_unique()
        out["items_flagged"] = n
        out["items_flagged_share"] = n / table.height if table.height else None
    if sample is not None:
        out["sample"] = mislabel_rate(sample).report
    return out


def mislabel_section(table: pl.DataFrame, issues: pl.DataFrame) -> dict[str, Any]:
    """The model-based mislabel probability (the combined audit's `mislabeled` rows): how
    many pairs are flagged, the expected number of swapped labels, the distribution of
    P(swapped), and which signals read each pair. `available` False (with `why`) when the
    issues table has none."""
    rows = issues.filter(pl.col("issue") == "mislabeled")
    if not rows.height:
        return {"available": False, "why": NO_MODEL}
    p = (
        rows["p_flipped"].cast(pl.Float64)
        if "p_flipped" in rows.columns
        else 1.0 - rows["score"].cast(pl.Float64)
    ).to_numpy()
    flagged = rows["is_issue"].fill_null(False).to_numpy()
    bins = np.minimum((p * P_BINS).astype(np.int64), P_BINS - 1)
    signals: dict[str, int] = {}
    if "signals" in rows.columns:
        for text in rows["signals"].fill_null("").to_list():
            for name in filter(None, text.split(",")):
                signals[name] = signals.get(name, 0) + 1
    k = int(flagged.sum())
    return {
        "available": True,
        "pairs": rows.height,
        "pairs_in_data": table.height,
        "flagged": k,
        "flagged_share": k / rows.height,
        "expected_mislabeled": float(p.sum()),
        "mean_p": float(p.mean()),
        "threshold": float(p[flagged].min()) if k else None,
        "histogram": {
            "edges": [i / P_BINS for i in range(P_BINS + 1)],
            "counts": np.bincount(bins, minlength=P_BINS).tolist(),
        },
        "signals": dict(sorted(signals.items())),
    }


# -------------------------------------------------------------------------- filtering


def filtering_section(kept_rows: int, rejected: pl.DataFrame) -> dict[str, Any]:
    """The `filtering` section from a rejected table (`reason`, optional `reasons`)."""
    if "reason" not in rejected.columns:
        raise ContractError("the rejected table has no 'reason' column", column="reason")
    reasons = rejected["reason"].cast(pl.String).fill_null("(no reason)")
    total = kept_rows + rejected.height
    out: dict[str, Any] = {
        "kept": kept_rows,
        "dropped": rejected.height,
        "dropped_share": rejected.height / total if total else None,
        "dropped_by_reason": {
            r[0]: r[1]
            for r in reasons.value_counts(sort=True, name="n")
            .sort(["n", "reason"], descending=[True, False])
            .iter_rows()
        },
    }
    if "reasons" in rejected.columns:
        every = rejected["reasons"].cast(pl.String).str.split("; ").explode().drop_nulls()
        out["failing_by_rule"] = {
            r[0]: r[1]
            for r in every.value_counts(sort=True, name="n")
            .sort(["n", "reasons"], descending=[True, False])
            .iter_rows()
        }
    return out


def filter_scenarios(
    table: pl.DataFrame, issues: pl.DataFrame | None, settings: dict[str, Any] | None
) -> list[tuple[str, dict[str, Any]]]:
    """(name, filter options) of the settings the report tries: the current ones (the filter
    document given, else the filter's defaults) and up to three alternatives that apply to
    the data at hand."""
    out = [("current settings" if settings else "defaults (no thresholds)", dict(settings or {}))]
    flagged = issues.filter(pl.col("is_issue").fill_null(False)) if issues is not None else None
    if flagged is not None and flagged.height:
        out.append(("drop every flagged pair", {"drop_issues": "all"}))
        if (flagged["issue"] == "mislabeled").any():
            out.append(("drop likely mislabels only", {"drop_issues": "mislabeled"}))
    if table["confidence"].drop_nulls().len():
        out.append(("min_confidence 0.7", {"min_confidence": 0.7}))
    if len(out) < 4 and table["agreement"].drop_nulls().len():
        out.append(("min_agreement 0.67", {"min_agreement": 0.67}))
    return out[:4]


def filter_preview_section(
    table: pl.DataFrame, issues: pl.DataFrame | None, settings: dict[str, Any] | None
) -> dict[str, Any]:
    """What `prefdata filter` would keep and drop, by first reason, under each scenario of
    `filter_scenarios` (computed with prefdata.quality.filter.filter_pairs itself)."""
    from prefdata.quality.filter import filter_pairs

    runs = []
    for name, options in filter_scenarios(table, issues, settings):
        needs_issues = bool(options.get("drop_issues"))
        entry: dict[str, Any] = {"name": name, "settings": options}
        try:
            result = filter_pairs(table, issues=issues if needs_issues else None, **options)
        except (PrefdataError, TypeError) as exc:
            entry["error"] = str(exc)
            runs.append(entry)
            continue
        report = result.report
        entry.update(
            kept=report["kept"],
            dropped=report["rejected"],
            dropped_by_reason={
                k.removeprefix("dropped_"): v for k, v in report.items() if k.startswith("dropped_")
            },
        )
        runs.append(entry)
    return {"rows": table.height, "scenarios": runs}


# ------------------------------------------------------------------------- duplicates

_OTHER = re.compile(r"pair ([0-9a-f]{8,})")
EXAMPLES = {"conflicting_duplicate": 100, "duplicate_pair": 10, "near_duplicate_pair": 10}


def duplicates_section(
    pairs: pl.DataFrame, issues: pl.DataFrame | None, *, seed: int, text_chars: int
) -> dict[str, Any]:
    """Duplicate counts (from the issues table when it holds dedup rows, else
    `dedup(pairs)`), train/test overlap, and examples with the text of both pairs:
    every pair labelled both ways (up to 100), then up to 10 exact and 10 near duplicates."""
    from prefdata.quality.dedup import split_overlap

    out: dict[str, Any]
    dedup_rows = (
        issues.filter(pl.col("issue").is_in(list(DEDUP_ISSUES))) if issues is not None else None
    )
    if dedup_rows is not None and dedup_rows.height:
        out = {"source": "issues"}
        rows = dedup_rows
    else:
        unique = pairs.unique("pair_id", keep="first", maintain_order=True)
        rows, report = dedup(unique, seed=seed)
        out = {
            "source": "dedup",
            "bands": report["bands"],
            "rows": report["rows"],
            "repeated_pair_ids_left_out": pairs.height - unique.height,
        }
    out["counts"] = {name: int((rows["issue"] == name).sum()) for name in DEDUP_ISSUES}
    out["flagged"] = {
        name: int(((rows["issue"] == name) & rows["is_issue"]).sum()) for name in DEDUP_ISSUES
    }
    out["pairs"] = pairs.height
    out["distinct_prompts"] = pairs["prompt_id"].n_unique()
    out["examples"] = _examples(pairs, rows, text_chars)
    overlap = issues.filter(pl.col("issue") == "train_test_overlap") if issues is not None else None
    if overlap is not None and overlap.height:
        exact = int((overlap["score"] == 0).sum())
        out["overlap"] = {
            "source": "issues",
            "overlap_exact": exact,
            "overlap_near": overlap.height - exact,
        }
    elif "split" in pairs.columns:
        split = pairs["split"].cast(pl.String)
        train, test = pairs.filter(split == "train"), pairs.filter(split == "test")
        if train.height and test.height:
            _, report = split_overlap(train, test, seed=seed)
            out["overlap"] = {"source": "split_overlap", **report}
    return out


def _examples(pairs: pl.DataFrame, rows: pl.DataFrame, chars: int) -> list[dict[str, Any]]:
    """Duplicate examples, each with both pairs' text (the other pair is named in the
    reason); a conflicting pair of rows (A names B, B names A) is one example."""
    picked: list[dict[str, Any]] = []
    seen: set[frozenset[str]] = set()
    for issue, limit in EXAMPLES.items():
        n = 0
        for r in rows.filter(pl.col("issue") == issue).sort("item_id").iter_rows(named=True):
            found = _OTHER.search(r["reason"] or "")
            other = found.group(1) if found else None
            key = frozenset({r["item_id"], other or ""})
            if key in seen:
                continue
            seen.add(key)
            picked.append(
                {"issue": issue, "item_id": r["item_id"], "other_id": other, "reason": r["reason"]}
            )
            n += 1
            if n >= limit:
                break
    texts = pair_texts(
        pairs, sorted({e[k] for e in picked for k in ("item_id", "other_id") if e[k]}), chars
    )
    for e in picked:
        e["item"] = texts.get(e["item_id"])
        e["other"] = texts.get(e["other_id"]) if e["other_id"] else None
    return picked

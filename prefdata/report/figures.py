"""The figures of the QA report (report.json), computed with the quality stages.

`dataset_figures(table, *, options) -> dict` holds one data set's sections; a section is
present only when its data exists:

- `overview` (always): `prefdata.io.describe.describe()` of the table (rows, columns, contract,
  problems, sources, confidence summary, P(chosen longer) in characters; for KTO the
  desirable:undesirable balance against TRL's 1:1 to 4:3 advice), plus `distinct_prompts`,
  and with annotations `annotations` (describe() of the votes used: labels, annotators,
  items; `votes_total`, `votes_not_in_data`).
- `lengths` (rows > 0): per field (prompt, chosen, rejected or completion, and `sequence`:
  the longer training sequence of the row) count, mean, min, p50, p90, p95, p99, max
  (numpy's default linear quantiles), one shared-bin histogram, and with a tokenizer the
  rows TRL would truncate at `max_length` (see `prefdata.report.tokens`). Unit: tokens with a
  tokenizer, else characters (no truncation figures then). Above `token_rows` rows a seeded
  uniform sample of that many is tokenized (`measured` says which; the share over
  max_length then gets a Wilson interval).
- `length_bias` (pairs): `bias_stats(pairs)["length"]` (characters) and the scatter points
  (chosen, rejected lengths; at most `max_points`, a seeded random subset).
- `judges` (votes from an `llm` annotator, or an `order` column): per annotator P(first
  shown wins) (bias_stats), position consistency (items voted in both orders whose labels
  all agree), P(longer wins) (a/b votes on pairs of the data set whose sides differ in
  length, with a Wilson interval), agreement with the human consensus
  (`judge_vs_human`).
- `agreement` (two or more annotators): `agreement()` of the human votes (or all votes
  when fewer than two humans) as the headline, `agreement()` of all votes for the
  annotator-by-annotator Cohen's kappa heatmap and per-annotator quality, Dawid-Skene
  accuracy per annotator (`consensus()`).
- `confidence` (some confidence known): a 0-1 histogram (20 bins) and, per threshold, the
  rows `prefdata filter --min-confidence t` keeps (a null confidence passes, as in the filter).
- `audit` (issues or a reviewed sample): issue counts by type (is_issue rows), pairs
  flagged, the top flagged pairs (lowest score first) with their reasons, and the
  `mislabel_rate()` of a reviewed audit sample.
- `filtering` (a rejected table): kept, dropped, dropped by (first) reason, and failing per
  rule when the table has `reasons`.
- `duplicates` (pairs): the dedup issue counts from the issues table when it holds them,
  else `dedup(pairs)`; train/test overlap from `train_test_overlap` issues, or
  `split_overlap()` between the rows whose `split` is train and test.

Annotations and issues are matched to the data set by item_id = pair_id (completion_id for
KTO); the votes and issue rows of items that are not in it are counted and left out, so a
filtered data set's figures describe what is left. When no vote matches, the votes are
used as they are (their item ids are something else, e.g. completion ids).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from prefdata import ids
from prefdata.errors import ContractError
from prefdata.io.describe import describe
from prefdata.quality.agreement import agreement
from prefdata.quality.bias import bias_stats as bias_stage
from prefdata.quality.consensus import consensus
from prefdata.quality.dedup import dedup, split_overlap
from prefdata.quality.disagreement import judge_vs_human
from prefdata.quality.sample import REVIEW_COLUMN, mislabel_rate, wilson_interval
from prefdata.report.integrity import token_integrity_section
from prefdata.report.tokens import Tokenizer, token_lengths
from prefdata.schema import PAIR_LABELS, conform, guess_contract

# The statistics without the stage's input check: the report takes data with contract problems
# on purpose and shows them (overview `problems`), so it must not stop at the first one.
bias_stats = inspect.unwrap(bias_stage)

QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99))
HIST_BINS = 30
CONFIDENCE_BINS = 20
CONFIDENCE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
DEDUP_ISSUES = (
    "duplicate_pair",
    "near_duplicate_pair",
    "conflicting_duplicate",
    "duplicate_prompt",
    "near_duplicate_prompt",
)
PAIR_LABEL_ORDER = ("b", "tie", "a")
EXCERPT_CHARS = 1500


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


# ---------------------------------------------------------------------------------- lengths


def _stats(values: np.ndarray) -> dict[str, Any]:
    if not len(values):
        return {"count": 0}
    out: dict[str, Any] = {
        "count": len(values),
        "mean": float(values.mean()),
        "min": int(values.min()),
    }
    for name, q in QUANTILES:
        out[name] = float(np.quantile(values, q))
    out["max"] = int(values.max())
    return out


def _char_lengths(table: pl.DataFrame, sides: Sequence[str]) -> dict[str, np.ndarray]:
    prompt = table.select(
        pl.col("prompt")
        .list.eval(pl.element().struct.field("content").fill_null("").str.len_chars())
        .list.sum()
        .fill_null(0)
    ).to_series()
    out = {"prompt": prompt.to_numpy().astype(np.int64)}
    for c in sides:
        side = table[c].fill_null("").str.len_chars().to_numpy().astype(np.int64)
        out[c] = side
        out[f"sequence_{c}"] = out["prompt"] + side
    return out


def lengths_section(
    table: pl.DataFrame,
    sides: Sequence[str],
    tokenizer: Tokenizer | None,
    max_length: int,
    *,
    token_rows: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The `lengths` section (see the module doc). With a tokenizer and more than
    `token_rows` rows, a seeded uniform sample of `token_rows` rows is tokenized (chat
    templates render in Python at about a thousand pairs a second); `measured` says so."""
    measured: dict[str, Any] = {
        "rows_measured": table.height,
        "rows": table.height,
        "sampled": False,
        "seed": None,
    }
    if tokenizer is not None:
        sub = table
        if token_rows is not None and table.height > token_rows:
            picked = np.sort(
                np.random.default_rng(seed).choice(table.height, token_rows, replace=False)
            )
            sub = table[picked]
            measured.update(rows_measured=token_rows, sampled=True, seed=seed)
        arrays = token_lengths(sub, tokenizer)
        unit = "tokens"
    else:
        arrays = _char_lengths(table, sides)
        unit = "chars"
    sequence = np.maximum.reduce([arrays[f"sequence_{c}"] for c in sides])
    fields = {"prompt": arrays["prompt"], **{c: arrays[c] for c in sides}, "sequence": sequence}
    # One bin width for every field so the histograms compare; the tail beyond the largest
    # p99 goes into an open last bin instead of stretching every plot.
    top = max(float(np.quantile(v, 0.99)) for v in fields.values())
    step = max(1, math.ceil(top / HIST_BINS))
    edges = [i * step for i in range(HIST_BINS + 1)]
    counts = {
        name: np.bincount(np.minimum(v // step, HIST_BINS - 1), minlength=HIST_BINS).tolist()
        for name, v in fields.items()
    }
    out: dict[str, Any] = {
        "unit": unit,
        "tokenizer": tokenizer.name if tokenizer else None,
        "fields": {name: _stats(v) for name, v in fields.items()},
        "histogram": {"edges": edges, "open_last_bin": True, "counts": counts},
        "measured": measured,
    }
    if tokenizer is not None:
        rows = len(arrays["prompt"])
        over = {c: arrays[f"sequence_{c}"] > max_length for c in sides}
        any_over = np.logical_or.reduce(list(over.values()))
        out["truncation"] = {
            "max_length": max_length,
            **{f"{c}_over": int(over[c].sum()) for c in sides},
            "rows_over": int(any_over.sum()),
            "rows_over_share": float(any_over.mean()),
            # TRL drops an example whose prompt alone fills max_length (keep_start).
            "prompt_fills_max_length": int((arrays["prompt"] >= max_length).sum()),
            "rows": rows,
        }
        if measured["sampled"]:
            lo, hi = wilson_interval(int(any_over.sum()), rows)
            out["truncation"]["rows_over_share_interval"] = [float(lo), float(hi)]
    return out


# ------------------------------------------------------------------------------ length bias


def length_bias_section(pairs: pl.DataFrame, *, max_points: int, seed: int) -> dict[str, Any]:
    """`bias_stats(pairs)["length"]` and the scatter points (chars)."""
    report = bias_stats(pairs).report["length"]
    lc = pairs["chosen"].fill_null("").str.len_chars().to_numpy()
    lr = pairs["rejected"].fill_null("").str.len_chars().to_numpy()
    rows = np.arange(len(lc))
    if len(rows) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), max_points, replace=False))
    report["scatter"] = {
        "unit": "chars",
        "points": [[int(lc[i]), int(lr[i])] for i in rows],
        "total": len(lc),
    }
    return report


# ----------------------------------------------------------------------------------- judges


def _wilson(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n)
    return {
        "p": k / n if n else None,
        "low": float(lo) if n else None,
        "high": float(hi) if n else None,
    }


def _side_a_is_chosen(pairs: pl.DataFrame) -> pl.Series:
    """Whether chosen is side `a` of prefdata.ids.canonical_sides, vectorised."""
    d_c = pl.Series(ids.digests(pairs["chosen"].to_list()), dtype=pl.String)
    d_r = pl.Series(ids.digests(pairs["rejected"].to_list()), dtype=pl.String)
    return (d_c < d_r) | ((d_c == d_r) & (pairs["chosen"] <= pairs["rejected"]))


def judges_section(pairs: pl.DataFrame | None, votes: pl.DataFrame) -> dict[str, Any]:
    """The `judges` section (see the module doc); `votes` are usable votes (label, no error)."""
    no_pairs = pl.DataFrame(schema={"chosen": pl.String, "rejected": pl.String})
    bias = bias_stats(pairs if pairs is not None else no_pairs, annotations=votes).report
    position = bias.get("position", {}).get("by_annotator", {})
    kinds = dict(votes.group_by("annotator").agg(pl.col("annotator_kind").first()).iter_rows())
    consistency: dict[str, Any] = {}
    if "order" in votes.columns:
        cells = (
            votes.filter(pl.col("order").is_in(["ab", "ba"]))
            .group_by("item_id", "annotator")
            .agg(
                (pl.col("order").n_unique() == 2).alias("both"),
                (pl.col("label").n_unique() == 1).alias("same"),
            )
            .filter("both")
        )
        for name, n, same in (
            cells.group_by("annotator").agg(pl.len(), pl.col("same").sum()).iter_rows()
        ):
            consistency[name] = {
                "items_both_orders": int(n),
                "consistent": int(same),
                "share": int(same) / int(n),
            }
    longer: dict[str, Any] = {}
    if pairs is not None and pairs.height:
        sides = pairs.select(
            pl.col("pair_id").alias("item_id"),
            pl.when(_side_a_is_chosen(pairs))
            .then(pl.col("chosen"))
            .otherwise(pl.col("rejected"))
            .str.len_chars()
            .alias("la"),
            pl.when(_side_a_is_chosen(pairs))
            .then(pl.col("rejected"))
            .otherwise(pl.col("chosen"))
            .str.len_chars()
            .alias("lb"),
        )
        joined = (
            votes.filter(pl.col("label").is_in(["a", "b"]))
            .join(sides, on="item_id", how="inner")
            .filter(pl.col("la") != pl.col("lb"))
        )
        per = joined.group_by("annotator").agg(
            pl.len().alias("n"),
            (
                ((pl.col("label") == "a") & (pl.col("la") > pl.col("lb")))
                | ((pl.col("label") == "b") & (pl.col("lb") > pl.col("la")))
            )
            .sum()
            .alias("k"),
        )
        for name, n, k in per.select("annotator", "n", "k").iter_rows():
            longer[name] = {"votes": int(n), "longer_wins": int(k), **_wilson(int(k), int(n))}
    vs_human: dict[str, Any] | None = None
    kinds_present = set(kinds.values())
    if {"human", "llm"} <= kinds_present:
        _, vs_human = judge_vs_human(votes)
    annotators = {}
    for name in sorted(kinds):
        annotators[name] = {
            "annotator_kind": kinds[name],
            "votes": int((votes["annotator"] == name).sum()),
            "position": position.get(name),
            "position_consistency": consistency.get(name),
            "longer_wins": longer.get(name),
            "agreement_with_humans": (vs_human or {}).get("per_judge", {}).get(name),
        }
    out: dict[str, Any] = {"annotators": annotators}
    if "position" in bias:
        out["position_overall"] = bias["position"]["overall"]
    if vs_human is not None:
        out["judge_vs_human"] = {k: v for k, v in vs_human.items() if k != "per_judge"}
    return out


# -------------------------------------------------------------------------------- agreement


def _level(votes: pl.DataFrame) -> tuple[str, list[str] | None]:
    labels = set(votes["label"].str.strip_chars().unique().to_list())
    if labels <= set(PAIR_LABELS):
        return "ordinal", list(PAIR_LABEL_ORDER)
    numbers = votes["label"].cast(pl.Float64, strict=False)
    if numbers.null_count() == 0:
        return "interval", None
    return "nominal", None


def agreement_section(votes: pl.DataFrame, *, bootstrap: int, seed: int) -> dict[str, Any]:
    """The `agreement` section (see the module doc)."""
    level, order = _level(votes)
    kw: dict[str, Any] = {
        "level": level,
        "label_order": order,
        "bootstrap": bootstrap,
        "seed": seed,
    }
    humans = votes.filter(pl.col("annotator_kind") == "human")
    scope = "human" if humans["annotator"].n_unique() >= 2 else "all"
    headline = agreement(humans if scope == "human" else votes, **kw).report
    everyone = headline
    if scope == "human" and humans.height != votes.height:
        everyone = agreement(votes, **kw).report
    names = sorted(votes["annotator"].unique().to_list())
    index = {n: i for i, n in enumerate(names)}
    kappa: list[list[float | None]] = [[None] * len(names) for _ in names]
    items: list[list[int]] = [[0] * len(names) for _ in names]
    for entry in everyone["cohen_kappa"]:
        i, j = (index[n] for n in entry["annotators"])
        kappa[i][j] = kappa[j][i] = entry["value"]
        items[i][j] = items[j][i] = entry["items"]
    _, ds = consensus(votes, method="dawid-skene", labels=order)
    return {
        "scope": scope,
        "level": level,
        "headline": headline,
        "all_votes": everyone,
        "heatmap": {"annotators": names, "kappa": kappa, "items": items},
        "dawid_skene_accuracy": {n: a["accuracy"] for n, a in ds["annotators"].items()},
    }


# ------------------------------------------------------------------------------- confidence


def confidence_section(table: pl.DataFrame) -> dict[str, Any]:
    """The `confidence` section (see the module doc)."""
    # A NaN is no measurement (the overview counts it as a contract problem), like a null.
    conf = table["confidence"].fill_nan(None).drop_nulls().to_numpy().astype(np.float64)
    bins = np.minimum((conf * CONFIDENCE_BINS).astype(np.int64), CONFIDENCE_BINS - 1)
    thresholds = []
    for t in CONFIDENCE_THRESHOLDS:
        # The filter's low_confidence rule: below t fails, a null (unmeasured) passes.
        failing = int((table["confidence"] < t).fill_null(False).sum())
        thresholds.append({"threshold": t, "kept": table.height - failing, "dropped": failing})
    return {
        "known": len(conf),
        "missing": table.height - len(conf),
        "mean": float(conf.mean()),
        "histogram": {
            "edges": [i / CONFIDENCE_BINS for i in range(CONFIDENCE_BINS + 1)],
            "counts": np.bincount(bins, minlength=CONFIDENCE_BINS).tolist(),
        },
        "thresholds": thresholds,
    }


# ------------------------------------------------------------------------------------ audit


def _excerpt(text: str | None) -> dict[str, Any]:
    text = text or ""
    return {
        "text": text[:EXCERPT_CHARS],
        "chars": len(text),
        "cut": max(len(text) - EXCERPT_CHARS, 0),
    }


def _prompt_text(messages: Sequence[dict[str, Any]] | None) -> str:
    return "\n\n".join(f"[{m['role']}] {m['content'] or ''}" for m in messages or [])


def audit_section(
    table: pl.DataFrame,
    contract: str,
    issues: pl.DataFrame | None,
    sample: pl.DataFrame | None,
    *,
    top: int,
) -> dict[str, Any]:
    """The `audit` section (see the module doc); `issues` already matched to the data."""
    out: dict[str, Any] = {}
    if issues is not None:
        flagged = issues.filter(pl.col("is_issue").fill_null(False))
        out["issue_rows"] = issues.height
        out["issue_counts"] = {
            r[0]: r[1] for r in flagged.group_by("issue").len().sort("issue").iter_rows()
        }
        out["rows_per_issue"] = {
            r[0]: r[1] for r in issues.group_by("issue").len().sort("issue").iter_rows()
        }
        n_flagged = flagged["item_id"].n_unique()
        out["items_flagged"] = n_flagged
        out["items_flagged_share"] = n_flagged / table.height if table.height else None
        worst = (
            flagged.group_by("item_id")
            .agg(
                pl.col("score").min().alias("score"),
                pl.col("issue").unique(maintain_order=True).alias("issues"),
                pl.format("{}: {}", "issue", "reason").alias("reasons"),
            )
            .sort(
                pl.col("score"),
                pl.col("issues").list.len(),
                pl.col("item_id"),
                descending=[False, True, False],
            )
            .head(top)
        )
        key = "pair_id" if contract == "pairs" else "completion_id"
        texts = (
            ["prompt", "chosen", "rejected"] if contract == "pairs" else ["prompt", "completion"]
        )
        rows = (
            worst.join(
                table.select(pl.col(key).cast(pl.String).alias("item_id"), *texts),
                on="item_id",
                how="left",
                maintain_order="left",
            )
            if key in table.columns
            else worst
        )
        out["top"] = [
            {
                "item_id": r["item_id"],
                "score": r["score"],
                "issues": r["issues"],
                "reasons": r["reasons"],
                **{
                    c: _excerpt(_prompt_text(r[c]) if c == "prompt" else r[c])
                    for c in texts
                    if c in r
                },
            }
            for r in rows.iter_rows(named=True)
        ]
    if sample is not None:
        out["sample"] = mislabel_rate(sample).report
    return out


# -------------------------------------------------------------------------------- filtering


def filtering_section(kept_rows: int, rejected: pl.DataFrame) -> dict[str, Any]:
    """The `filtering` section from a rejected table (`reason`, optional `reasons`)."""
    if "reason" not in rejected.columns:
        raise ContractError("the rejected table has no 'reason' column", column="reason")
    reasons = rejected["reason"].cast(pl.String).fill_null("(no reason)")
    out: dict[str, Any] = {
        "kept": kept_rows,
        "dropped": rejected.height,
        "dropped_share": rejected.height / (kept_rows + rejected.height)
        if kept_rows + rejected.height
        else None,
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


# ------------------------------------------------------------------------------- duplicates


def duplicates_section(
    pairs: pl.DataFrame, issues: pl.DataFrame | None, *, seed: int
) -> dict[str, Any]:
    """The `duplicates` section (see the module doc)."""
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
    out["examples"] = [
        {"item_id": r["item_id"], "issue": r["issue"], "reason": r["reason"]}
        for r in rows.filter(
            pl.col("issue").is_in(
                ["duplicate_pair", "near_duplicate_pair", "conflicting_duplicate"]
            )
        )
        .head(10)
        .iter_rows(named=True)
    ]
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


# ------------------------------------------------------------------------------- provenance

PROVENANCE_KEYS = (
    "judge",
    "judges",
    "judge_model",
    "model",
    "models",
    "rubric",
    "rubrics",
    "template",
    "prompt_template",
    "template_version",
    "method",
)
PROVENANCE_ROWS = 20_000


def provenance_summary(provenance: pl.Series) -> dict[str, Any]:
    """Which keys the `provenance` JSON holds (rows with each), and the distinct values (up
    to 10) of the keys that name judges, models, rubrics and templates. Reads the first
    PROVENANCE_ROWS rows: provenance is per-row JSON and parsing millions costs minutes."""
    keys: dict[str, int] = {}
    values: dict[str, list[str]] = {}
    parsed = unreadable = 0
    for text in provenance.head(PROVENANCE_ROWS).to_list():
        if not text:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            unreadable += 1
            continue
        if not isinstance(data, dict):
            unreadable += 1
            continue
        parsed += 1
        for k, v in data.items():
            keys[k] = keys.get(k, 0) + 1
            if k in PROVENANCE_KEYS:
                seen = values.setdefault(k, [])
                text_v = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
                if text_v not in seen and len(seen) < 10:
                    seen.append(text_v[:200])
    return {
        "rows_read": min(provenance.len(), PROVENANCE_ROWS),
        "parsed": parsed,
        "unreadable": unreadable,
        "keys": dict(sorted(keys.items())),
        "values": values,
    }


# ---------------------------------------------------------------------------------- dataset


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
    top: int = 20,
    max_points: int = 2000,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every section of one data set (see the module doc). Input: a pairs or kto table and
    the optional annotations, issues, rejected and reviewed-sample tables. Output: a
    JSON-ready dict."""
    table, contract = as_data(table)
    sides = ["chosen", "rejected"] if contract == "pairs" else ["completion"]
    out: dict[str, Any] = {"contract": contract}
    overview = describe(table)
    overview["distinct_prompts"] = (
        table["prompt_id"].n_unique()
        if "prompt_id" in (table.columns)
        else table["prompt"].n_unique()
    )
    if "provenance" in table.columns and table.height:
        overview["provenance"] = provenance_summary(table["provenance"])
    out["overview"] = overview
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
            else conformed.filter(pl.col("item_id").is_in(items.implode()))
        )
        left_out = conformed.height - matched_issues.height
        overview["issues"] = {"rows": conformed.height, "rows_not_in_data": left_out}

    if table.height:
        out["lengths"] = lengths_section(
            table, sides, tokenizer, max_length, token_rows=token_rows, seed=seed
        )
        if contract == "pairs":
            out["length_bias"] = length_bias_section(table, max_points=max_points, seed=seed)
    if votes is not None:
        has_order = "order" in votes.columns and votes["order"].is_not_null().any()
        if has_order or (votes["annotator_kind"] == "llm").any():
            out["judges"] = judges_section(table if contract == "pairs" else None, votes)
        if votes["annotator"].n_unique() >= 2 and votes["item_id"].is_duplicated().any():
            out["agreement"] = agreement_section(votes, bootstrap=bootstrap, seed=seed)
    if table.height and table["confidence"].drop_nulls().len():
        out["confidence"] = confidence_section(table)
    if matched_issues is not None or sample is not None:
        if sample is not None and REVIEW_COLUMN not in sample.columns:
            raise ContractError(
                f"the audit sample has no '{REVIEW_COLUMN}' column", column=REVIEW_COLUMN
            )
        out["audit"] = audit_section(table, contract, matched_issues, sample, top=top)
    if contract == "pairs" and matched_issues is not None and tokenizer is not None:
        tokens = token_integrity_section(table, matched_issues, tokenizer)
        if tokens is not None:
            out["token_integrity"] = tokens
    if rejected is not None:
        out["filtering"] = filtering_section(table.height, rejected)
    if contract == "pairs" and table.height:
        out["duplicates"] = duplicates_section(table, matched_issues, seed=seed)
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
    ("items flagged by the audit", ("audit", "items_flagged")),
    ("share flagged by the audit", ("audit", "items_flagged_share")),
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

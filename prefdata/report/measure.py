"""Figures about the text itself: lengths (tokens or characters, truncation at TRL's
max_length), length bias (P(chosen longer) with its interval and what it means), confidence,
and what the `provenance` column records."""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from prefdata.quality.bias import bias_stats as bias_stage
from prefdata.quality.sample import wilson_interval
from prefdata.report import interpret
from prefdata.report.tokens import Tokenizer, token_lengths

# The statistics without the stage's input check: the report takes data with row problems on
# purpose and shows them (overview `problems`), so it must not stop at the first one.
bias_stats = inspect.unwrap(bias_stage)

QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99))
HIST_BINS = 30
CONFIDENCE_BINS = 20
CONFIDENCE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


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
    o = report["overall"]
    differ = o["chosen_longer"] + o["rejected_longer"]
    report["reading"] = interpret.length_bias(
        o["p_chosen_longer"] if differ else None, o["low"], o["high"], differ
    )
    return report


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
    "dataset",
    "license",
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

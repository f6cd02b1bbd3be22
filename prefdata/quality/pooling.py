"""Pooling judge votes: the two orders of one judge into one verdict (`pool_orders`), and
several judges into one label per pair (`panel`), with Cohen's kappa between judges.

    verdicts = pool_orders(votes)                       # one row per (pair, judge)
    pooled, report = panel(verdicts, method="mean")     # one row per pair

`pool_orders`: a vote maps to P(a) (a: its confidence or 1, b: 1 - that, tie: 0.5; a
next-token judge: its p_a); the orders' mean is `p_a`. A judge whose two orders name
different winners is *inconsistent*: its verdict is `tie` with confidence 0.5 (no
information), however sure each vote was.

`panel`: several judges (any mix of backends and models) vote on the same pairs; their
verdicts pool by `majority` (confidence = the winning label's vote share) or `mean`
probability (the mean of the judges' p_a; confidence = max(p_a, 1 - p_a)). The report has
Cohen's kappa for every pair of judges over the items both labelled.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import numpy as np
import polars as pl

from prefdata.errors import InputError
from prefdata.quality.agreement import kappa_from_confusion
from prefdata.schema import PAIR_LABELS, conform, contract_of

__all__ = [
    "ONE_ORDER_ONLY",
    "ORDERS",
    "Pooling",
    "judge_kappas",
    "kappa",
    "one_order_only_votes",
    "order_pooled",
    "panel",
    "pool_orders",
]

# The two orders a pair is shown in: "ab" shows canonical side a first as Response A.
ORDERS: tuple[str, ...] = ("ab", "ba")
Pooling = Literal["majority", "mean"]

# What pooling measures beside the annotations contract's columns.
_MEASURED: dict[str, pl.DataType] = {
    "p_a": pl.Float64(),
    "consistent": pl.Boolean(),
    "n_orders": pl.Int64(),
    "one_order_only": pl.Boolean(),
    "n_judges": pl.Int64(),
}


def _pooled_table(rows: list[dict[str, Any]], extra: tuple[str, ...]) -> pl.DataFrame:
    """Pooled votes as an annotations table: item_id, annotator, annotator_kind, label,
    confidence, then the `extra` columns (contract or measured ones), in that order."""
    types = {**contract_of("annotations").columns, **_MEASURED}
    names = ("item_id", "annotator", "annotator_kind", "label", "confidence", *extra)
    return conform(pl.DataFrame(rows, schema={k: types[k] for k in names}), "annotations")


def _vote_p_a(label: str | None, confidence: float | None, p_a: float | None) -> float | None:
    if p_a is not None:
        return p_a
    if label is None:
        return None
    c = 1.0 if confidence is None else confidence
    return {"a": c, "b": 1.0 - c}.get(label, 0.5)


def pool_orders(annotations: pl.DataFrame) -> pl.DataFrame:
    """One verdict per (item_id, annotator) from its votes in both orders.

    Input: judge votes (annotations with `order`; `p_a` optional). Output (annotations
    contract): `item_id`, `annotator`, `annotator_kind`, `label`, `confidence` (probability
    that the label's side is better, from p_a; 0.5 for a tie; null when a vote named a
    winner without stating a confidence), and extra columns `p_a` (mean over the
    orders), `consistent` (both orders name the same label; null with fewer than two valid
    votes), `n_orders` (valid votes pooled), `one_order_only` (the judge was asked both
    orders and only one answered). Votes with `error` are left out; an item whose votes all
    failed gets label null and error "no valid vote".

    One order only: the missing order counts as a vote of no information (P(a) = 0.5), so
    p_a is the mean of the one vote and 0.5 and the confidence is lower than that vote's: a
    position-biased judge's lone vote must not look like a confident label. Consensus sets
    such a verdict aside by default (`one_order_only_votes`, reason "one_order_only").
    """
    table = annotations
    if "p_a" not in table.columns:
        table = table.with_columns(pl.lit(None, dtype=pl.Float64).alias("p_a"))
    if "error" not in table.columns:
        table = table.with_columns(pl.lit(None, dtype=pl.String).alias("error"))
    if "confidence" not in table.columns:
        table = table.with_columns(pl.lit(None, dtype=pl.Float64).alias("confidence"))
    if "order" not in table.columns:
        table = table.with_columns(pl.lit(None, dtype=pl.String).alias("order"))
    rows = []
    keys = ["item_id", "annotator"]
    for (item, annotator), group in table.group_by(keys, maintain_order=True):
        ok = group.filter(pl.col("error").is_null() & pl.col("label").is_not_null())
        kind = group["annotator_kind"][0]
        asked = group["order"].drop_nulls().n_unique()
        lone = asked >= 2 and ok.height == 1
        if not ok.height:
            rows.append(
                {
                    "item_id": item,
                    "annotator": annotator,
                    "annotator_kind": kind,
                    "label": None,
                    "confidence": None,
                    "error": "no valid vote",
                    "p_a": None,
                    "consistent": None,
                    "n_orders": 0,
                    "one_order_only": False,
                }
            )
            continue
        labels = ok["label"].to_list()
        ps = [
            _vote_p_a(lab, c, p)
            for lab, c, p in zip(
                labels, ok["confidence"].to_list(), ok["p_a"].to_list(), strict=True
            )
        ]
        p_a = sum(p for p in ps if p is not None) / len(ps)
        if lone:
            p_a = (p_a + 0.5) / 2.0  # the order that never answered says nothing
        consistent = len(set(labels)) == 1 if len(labels) > 1 else None
        confidence: float | None
        if {"a", "b"} <= set(labels):
            # Opposite winners in the two orders: the judge followed the position, not the
            # content; its verdict carries no information about this pair.
            label, confidence = "tie", 0.5
        else:
            label = "a" if p_a > 0.5 else "b" if p_a < 0.5 else "tie"
            # A winner named without a stated confidence has an unknown one, never 1.0.
            stated = all(
                c is not None or p is not None or lab == "tie"
                for lab, c, p in zip(
                    labels, ok["confidence"].to_list(), ok["p_a"].to_list(), strict=True
                )
            )
            confidence = max(p_a, 1.0 - p_a) if stated else None
        rows.append(
            {
                "item_id": item,
                "annotator": annotator,
                "annotator_kind": kind,
                "label": label,
                "confidence": confidence,
                "error": None,
                "p_a": p_a,
                "consistent": consistent,
                "n_orders": ok.height,
                "one_order_only": lone,
            }
        )
    return _pooled_table(rows, ("error", "p_a", "consistent", "n_orders", "one_order_only"))


ONE_ORDER_ONLY = "one_order_only"
"""The reason a pair judged in one order only is set aside (consensus, pairs, filter)."""


def one_order_only_votes(votes: pl.DataFrame) -> pl.DataFrame:
    """(item_id, annotator) of the judges asked a pair in both orders that answered only one
    (the other failed, retries included). Empty for votes without `order`."""
    schema = {"item_id": pl.String, "annotator": pl.String}
    if "order" not in votes.columns or "annotator" not in votes.columns:
        return pl.DataFrame(schema=schema)
    valid = pl.col("label").is_not_null()
    if "error" in votes.columns:
        valid = valid & pl.col("error").is_null()
    flagged = (
        votes.filter(pl.col("order").is_not_null())
        .group_by("item_id", "annotator")
        .agg(pl.col("order").n_unique().alias("asked"), valid.sum().alias("answered"))
        .filter((pl.col("asked") >= 2) & (pl.col("answered") == 1))
    )
    return flagged.select(pl.col("item_id").cast(pl.String), pl.col("annotator").cast(pl.String))


def order_pooled(annotations: pl.DataFrame) -> pl.DataFrame:
    """Order-pooled verdicts; a table that already has one row per (item, judge) is kept."""
    if "order" in annotations.columns and annotations["order"].is_not_null().any():
        return pool_orders(annotations)
    return annotations


def kappa(x: list[str], y: list[str]) -> float | None:
    """Cohen's kappa of two raters' pair labels (a / b / tie), None without items or when
    it is undefined (both always gave one and the same label)."""
    k = len(PAIR_LABELS)
    code = {lab: i for i, lab in enumerate(PAIR_LABELS)}
    conf = np.zeros((k, k))
    for a, b in zip(x, y, strict=True):
        conf[code[a], code[b]] += 1
    if not len(x):
        return None
    value = float(kappa_from_confusion(conf))
    return None if np.isnan(value) else value


def judge_kappas(verdicts: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Cohen's kappa (labels a / b / tie) for every pair of annotators, over shared items.

    Input: one label per (item_id, annotator) (e.g. `pool_orders` output). Output:
    {"judge1 | judge2": {"items": n, "kappa": k, "agreement": share}}.
    """
    ok = verdicts.filter(pl.col("label").is_not_null())
    by_judge = {
        str(name[0]): dict(zip(g["item_id"].to_list(), g["label"].to_list(), strict=True))
        for name, g in ok.group_by("annotator", maintain_order=True)
    }
    out: dict[str, dict[str, Any]] = {}
    for j1, j2 in itertools.combinations(sorted(by_judge), 2):
        shared = sorted(set(by_judge[j1]) & set(by_judge[j2]))
        x = [by_judge[j1][i] for i in shared]
        y = [by_judge[j2][i] for i in shared]
        out[f"{j1} | {j2}"] = {
            "items": len(shared),
            "kappa": kappa(x, y),
            "agreement": sum(a == b for a, b in zip(x, y, strict=True)) / len(shared)
            if shared
            else None,
        }
    return out


def panel(
    annotations: pl.DataFrame, *, method: Pooling = "majority", annotator: str = "panel"
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Pool several judges' verdicts into one per item.

    Input: judge votes (both orders; pooled per judge first with `pool_orders`) or verdicts.
    Output (annotations contract): `item_id`, `annotator` (= `annotator`), `annotator_kind`
    "llm", `label`, `confidence`, and extra columns `p_a` (mean: mean of the judges' p_a),
    `n_judges`. majority: the strict plurality of the judges' labels (no plurality -> tie),
    confidence = its share of the judges. mean: label from the mean p_a (> 0.5 a, < 0.5 b,
    = 0.5 tie), confidence = max(p_a, 1 - p_a). Report: method, items, judges, kappas.
    """
    if method not in ("majority", "mean"):
        raise InputError(f"method must be majority or mean, got {method!r}")
    verdicts = order_pooled(annotations).filter(pl.col("label").is_not_null())
    rows = []
    for (item,), group in verdicts.group_by("item_id", maintain_order=True):
        labels = group["label"].to_list()
        n = len(labels)
        p_values = (
            [p for p in group["p_a"].to_list() if p is not None] if "p_a" in group.columns else []
        )
        p_a = sum(p_values) / len(p_values) if p_values else None
        if method == "majority":
            counts = {lab: labels.count(lab) for lab in PAIR_LABELS}
            top = max(counts.values())
            winners = [lab for lab, c in counts.items() if c == top]
            label = winners[0] if len(winners) == 1 else "tie"
            confidence = top / n if len(winners) == 1 else 0.5
        else:
            if p_a is None:
                continue
            label = "a" if p_a > 0.5 else "b" if p_a < 0.5 else "tie"
            confidence = max(p_a, 1.0 - p_a)
        rows.append(
            {
                "item_id": item,
                "annotator": annotator,
                "annotator_kind": "llm",
                "label": label,
                "confidence": confidence,
                "p_a": p_a,
                "n_judges": n,
            }
        )
    pooled = _pooled_table(rows, ("p_a", "n_judges"))
    report = {
        "method": method,
        "items": pooled.height,
        "judges": sorted(set(verdicts["annotator"].to_list())),
        "kappas": judge_kappas(verdicts),
    }
    return pooled, report

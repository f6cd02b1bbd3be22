"""Judge panels and calibration against human labels.

    verdicts = pool_orders(votes)                       # one row per (pair, judge)
    pooled, report = panel(verdicts, method="mean")     # one row per pair
    cal = calibration(votes, gold)                      # accuracy and kappa vs humans

- `panel`: several judges (any mix of backends and models) vote on the same pairs; their
  verdicts pool by `majority` (confidence = the winning label's vote share) or `mean`
  probability (the mean of the judges' p_a; confidence = max(p_a, 1 - p_a)). The report has
  Cohen's kappa for every pair of judges over the items both labelled.
- `calibration`: each judge's accuracy against the human label (the human majority per item
  of `gold`), with ties (a judge's tie counts as wrong) and without (items where the judge
  said tie are left out, their number reported), and its Cohen's kappa with the humans.
  Human items without a strict majority (the votes tie) are left out.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import numpy as np
import polars as pl

from prefdata.errors import InputError
from prefdata.label.judge import pool_orders
from prefdata.quality.agreement import kappa_from_confusion
from prefdata.schema import PAIR_LABELS, conform

__all__ = ["calibration", "human_majority", "judge_kappas", "panel"]

Pooling = Literal["majority", "mean"]


def _verdicts(annotations: pl.DataFrame) -> pl.DataFrame:
    """Order-pooled verdicts; a table that already has one row per (item, judge) is kept."""
    if "order" in annotations.columns and annotations["order"].is_not_null().any():
        return pool_orders(annotations)
    return annotations


def _kappa(x: list[str], y: list[str]) -> float | None:
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
            "kappa": _kappa(x, y),
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
    verdicts = _verdicts(annotations).filter(pl.col("label").is_not_null())
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
    schema = {
        "item_id": pl.String,
        "annotator": pl.String,
        "annotator_kind": pl.String,
        "label": pl.String,
        "confidence": pl.Float64,
        "p_a": pl.Float64,
        "n_judges": pl.Int64,
    }
    pooled = conform(pl.DataFrame(rows, schema=schema), "annotations")
    report = {
        "method": method,
        "items": pooled.height,
        "judges": sorted(set(verdicts["annotator"].to_list())),
        "kappas": judge_kappas(verdicts),
    }
    return pooled, report


def human_majority(gold: pl.DataFrame) -> dict[str, str]:
    """item_id -> the strict plurality label of the human votes (items whose top labels tie
    are left out). Input: annotations; rows with annotator_kind other than human are ignored
    when the column exists."""
    table = gold
    if "annotator_kind" in table.columns:
        table = table.filter(pl.col("annotator_kind") == "human")
    table = table.filter(pl.col("label").is_in(list(PAIR_LABELS)))
    out: dict[str, str] = {}
    counts = table.group_by("item_id", "label").len()
    for (item,), group in counts.group_by("item_id"):
        top = group["len"].max()
        winners = group.filter(pl.col("len") == top)["label"].to_list()
        if len(winners) == 1:
            out[str(item)] = str(winners[0])
    return out


def calibration(
    annotations: pl.DataFrame,
    gold: pl.DataFrame,
    *,
    min_human_agreement: float | None = None,
    item_column: str = "item_id",
) -> dict[str, Any]:
    """Each judge against the human majority (see the module doc).

    item_column: what one item is (e.g. "record_id" to score a judge per source record when
    the importer pooled identical records into one pair).

    Input: judge votes or verdicts (annotations contract) and gold (annotations with human
    votes, or a pairs table: chosen is the human label). Output: {"judges": {name:
    {items, accuracy_with_ties, accuracy_without_ties, judge_ties, kappa, passes}},
    "gold_items", "min_human_agreement"}. `passes`: accuracy without ties >= the threshold.
    """
    if {"chosen", "rejected"} <= set(gold.columns) and "label" not in gold.columns:
        gold = gold_from_pairs(gold)
    if item_column != "item_id":
        gold = gold.drop("item_id").rename({item_column: "item_id"})
        annotations = annotations.drop("item_id").rename({item_column: "item_id"})
    truth = human_majority(gold)
    verdicts = _verdicts(annotations.filter(pl.col("annotator_kind") != "human"))
    verdicts = verdicts.filter(pl.col("label").is_not_null())
    judges: dict[str, Any] = {}
    for (name,), group in verdicts.group_by("annotator", maintain_order=True):
        pairs = [
            (truth[i], lab)
            for i, lab in zip(group["item_id"], group["label"], strict=True)
            if i in truth
        ]
        n = len(pairs)
        right = sum(h == j for h, j in pairs)
        decided = [(h, j) for h, j in pairs if j != "tie"]
        acc_nt = sum(h == j for h, j in decided) / len(decided) if decided else None
        judges[str(name)] = {
            "items": n,
            "accuracy_with_ties": right / n if n else None,
            "accuracy_without_ties": acc_nt,
            "judge_ties": n - len(decided),
            "kappa": _kappa([h for h, _ in pairs], [j for _, j in pairs]) if n else None,
            "passes": None
            if min_human_agreement is None
            else (acc_nt is not None and acc_nt >= min_human_agreement),
        }
    return {
        "gold_items": len(truth),
        "min_human_agreement": min_human_agreement,
        "judges": judges,
    }


def gold_from_pairs(pairs: pl.DataFrame) -> pl.DataFrame:
    """Human labels from a pairs table (chosen is better): item_id = pair_id, label = the
    canonical side of chosen. Output: annotations (one human vote per pair)."""
    from prefdata import ids
    from prefdata.schema import with_messages

    table = ids.with_pair_ids(with_messages(pairs))
    labels = [
        "a" if ids.canonical_sides(c, r)[0] == c else "b"
        for c, r in zip(table["chosen"], table["rejected"], strict=True)
    ]
    return conform(
        pl.DataFrame(
            {
                "item_id": table["pair_id"],
                "annotator": ["gold"] * table.height,
                "annotator_kind": ["human"] * table.height,
                "label": labels,
            }
        ),
        "annotations",
    )

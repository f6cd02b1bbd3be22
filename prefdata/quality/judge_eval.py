"""Judges measured: against human labels (`calibration`) and against themselves
(`judge_stats`: position consistency, P(first shown wins), P(longer wins)).

    cal = calibration(votes, gold)           # accuracy and kappa vs humans, per judge
    stats = judge_stats(votes, items)        # bias figures, per judge

- `calibration`: each judge's accuracy against the human label (the human majority per item
  of `gold`), with ties (a judge's tie counts as wrong) and without (items where the judge
  said tie are left out, their number reported), and its Cohen's kappa with the humans.
  Human items without a strict majority (the votes tie) are left out.
- `judge_stats`: over a judge's votes in both orders, how often its two orders agree, how
  often the response shown first wins, and how often the longer response wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import polars as pl

from prefdata.errors import InputError
from prefdata.llm.base import CallUsage
from prefdata.quality.pooling import ORDERS, Pooling, kappa, order_pooled, panel
from prefdata.schema import ANNOTATOR_KINDS, PAIR_LABELS, conform
from prefdata.stage import StageResult, Table, stage

__all__ = [
    "JudgeStats",
    "calibration",
    "gold_from_pairs",
    "human_majority",
    "judge_eval",
    "judge_stats",
    "pair_sides",
    "with_annotators",
]


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
    verdicts = order_pooled(annotations.filter(pl.col("annotator_kind") != "human"))
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
            "kappa": kappa([h for h, _ in pairs], [j for _, j in pairs]) if n else None,
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


@dataclass
class JudgeStats(CallUsage):
    """Per-judge figures (shares are None when there is nothing to count)."""

    votes: int = 0
    ties: int = 0
    pairs_both_orders: int = 0
    consistent_pairs: int = 0
    first_wins: int = 0
    decided_with_order: int = 0
    longer_wins: int = 0
    decided_unequal_length: int = 0

    @property
    def position_consistency(self) -> float | None:
        return self.consistent_pairs / self.pairs_both_orders if self.pairs_both_orders else None

    @property
    def p_first_wins(self) -> float | None:
        return self.first_wins / self.decided_with_order if self.decided_with_order else None

    @property
    def p_longer_wins(self) -> float | None:
        return (
            self.longer_wins / self.decided_unequal_length if self.decided_unequal_length else None
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "votes": self.votes,
            "errors": self.errors,
            "ties": self.ties,
            "pairs_both_orders": self.pairs_both_orders,
            "position_consistency": self.position_consistency,
            "p_first_wins": self.p_first_wins,
            "first_wins": self.first_wins,
            "decided_with_order": self.decided_with_order,
            "p_longer_wins": self.p_longer_wins,
            "decided_unequal_length": self.decided_unequal_length,
            "inconsistent_pairs": self.pairs_both_orders - self.consistent_pairs,
            **self.usage(),
        }


def judge_stats(
    annotations: pl.DataFrame, items: pl.DataFrame | None = None
) -> dict[str, JudgeStats]:
    """Position consistency, P(first shown wins), P(longer wins) per judge.

    Input: votes (`item_id`, `annotator`, `label`, `order`, `error`, token / cost columns)
    and the judged pairs (`item_id`, `a`, `b`: canonical sides; `pair_sides` makes them
    from a pairs table). Consistency: over pairs with a valid vote in both orders, the share
    whose two labels are equal. First wins: over a/b votes, the share whose winner was shown
    first. Longer wins: over a/b votes on pairs whose sides differ in length (characters),
    the share won by the longer side (None without `items`).
    """
    for column in ("error", "order"):
        if column not in annotations.columns:
            annotations = annotations.with_columns(pl.lit(None, dtype=pl.String).alias(column))
    lengths = (
        {}
        if items is None
        else {
            r["item_id"]: (len(r["a"]), len(r["b"]))
            for r in items.select("item_id", "a", "b").to_dicts()
        }
    )
    out: dict[str, JudgeStats] = {}
    for row in annotations.to_dicts():
        s = out.setdefault(row["annotator"], JudgeStats())
        s.votes += 1
        s.add(
            row.get("input_tokens") or 0, row.get("output_tokens") or 0, row.get("cost_usd") or 0.0
        )
        if row.get("error") is not None or row["label"] is None:
            s.failed(row.get("error"))
            continue
        label = row["label"]
        if label == "tie":
            s.ties += 1
            continue
        order = row.get("order")
        if order in ORDERS:
            s.decided_with_order += 1
            s.first_wins += int(label == order[0])
        la, lb = lengths.get(row["item_id"], (0, 0))
        if la != lb:
            s.decided_unequal_length += 1
            s.longer_wins += int((label == "a") == (la > lb))
    ok = annotations.filter(pl.col("error").is_null() & pl.col("label").is_not_null())
    if "order" in ok.columns:
        both = (
            ok.group_by("annotator", "item_id")
            .agg(pl.col("order").n_unique().alias("n"), pl.col("label").n_unique().alias("labels"))
            .filter(pl.col("n") == 2)
        )
        for name, group in both.group_by("annotator"):
            s = out[str(name[0])]
            s.pairs_both_orders = group.height
            s.consistent_pairs = int((group["labels"] == 1).sum())
    return out


# ---- cost estimate -----------------------------------------------------------------------


def pair_sides(pairs: pl.DataFrame) -> pl.DataFrame:
    """`item_id` (= pair_id) and the canonical sides `a`, `b` of a pairs table (prompt,
    chosen, rejected), as judge votes name them."""
    from prefdata import ids
    from prefdata.schema import with_messages

    table = ids.with_pair_ids(with_messages(pairs))
    sides = [
        ids.canonical_sides(c, r) for c, r in zip(table["chosen"], table["rejected"], strict=True)
    ]
    return pl.DataFrame(
        {"item_id": table["pair_id"], "a": [x for x, _ in sides], "b": [y for _, y in sides]},
        schema={"item_id": pl.String, "a": pl.String, "b": pl.String},
    )


def with_annotators(table: pl.DataFrame, *, kind: str, name: str, what: str) -> pl.DataFrame:
    """`table` with `annotator_kind` (`kind` where the column or the value is absent) and
    `annotator` (`name` where absent); InputError naming the allowed kinds for any other
    value."""
    # Absent, or present but empty (a stage's contract check adds missing columns as nulls).
    for column, value in (("annotator_kind", kind), ("annotator", name)):
        if column not in table.columns:
            table = table.with_columns(pl.lit(value).alias(column))
        else:
            table = table.with_columns(pl.col(column).cast(pl.String).fill_null(value))
    bad = table.filter(~pl.col("annotator_kind").is_in(ANNOTATOR_KINDS))
    if bad.height:
        raise InputError(
            f"{what}: annotator_kind must be one of {', '.join(ANNOTATOR_KINDS)}; got "
            f"{bad['annotator_kind'][0]!r}",
            column="annotator_kind",
        )
    return table


JUDGES_SCHEMA: dict[str, Any] = {
    "judge": pl.String,
    "items": pl.Int64,
    "accuracy_with_ties": pl.Float64,
    "accuracy_without_ties": pl.Float64,
    "judge_ties": pl.Int64,
    "kappa": pl.Float64,
    "passes": pl.Boolean,
    "position_consistency": pl.Float64,
    "p_first_wins": pl.Float64,
    "p_longer_wins": pl.Float64,
}
PANEL = "panel"


# What judge-eval and a judge's gold labels read of their tables (prefdata.stage.Table(needs=)).
# Votes to evaluate need no annotator columns (consensus posteriors have none): see judge_eval.
VOTE_COLUMNS = ("item_id", "annotator", "label")
JUDGE_VOTE_COLUMNS = ("item_id", "label")
PAIR_COLUMNS = ("prompt", "chosen", "rejected")


@stage("judge-eval", outputs=("judges",))
def judge_eval(
    votes: Annotated[pl.DataFrame, Table("annotations", needs=JUDGE_VOTE_COLUMNS)],
    *,
    gold: Annotated[
        pl.DataFrame,
        Table(
            "annotations",
            "pairs",
            auto=False,
            needs={"annotations": VOTE_COLUMNS, "pairs": PAIR_COLUMNS},
        ),
    ],
    pairs: Annotated[pl.DataFrame | None, Table("pairs", auto=False, needs=PAIR_COLUMNS)] = None,
    min_human_agreement: float | None = None,
    item_column: str = "item_id",
    panel_method: Pooling = "mean",
) -> StageResult:
    """Each judge's accuracy (with and without ties) and kappa against the humans, its
    position consistency, P(first wins) and P(longer wins), and the pooled panel's accuracy.

    Table `judges`: one row per judge and one for the panel ("panel": every judge pooled by
    `panel_method`): judge, items, accuracy_with_ties, accuracy_without_ties, judge_ties,
    kappa, passes, position_consistency, p_first_wins, p_longer_wins (the last three need
    votes with `order`; P(longer wins) needs the pair texts: `pairs`, or a pairs table as
    `gold`). Report: `calibration`'s figures (gold_items, min_human_agreement, judges, each
    with its bias figures) and `panel` (method, its accuracy against the humans, the kappas
    between judges).

    Votes and gold without `annotator_kind` are "human" (the annotations default); the
    votes' non-human rows are evaluated, or all of them when none is marked otherwise (e.g.
    consensus posteriors); votes without `annotator` are one labeller, "votes".

    Example: prefdata judge-eval votes.parquet --gold humans.parquet

    Args:
        votes: judge votes or verdicts (annotations), e.g. from prefdata judge
        gold: human labels: annotations, or pairs whose chosen side is the human label
        pairs: the judged pairs (for P(longer wins) when gold is not a pairs table)
        min_human_agreement: a judge passes when its accuracy without ties reaches this
        item_column: what one item is (e.g. record_id: a judge per source record)
        panel_method: how the panel pools its judges: mean (of P(a)) or majority
    """
    votes = with_annotators(votes, kind="human", name="votes", what="votes")
    if "label" in gold.columns:
        gold = with_annotators(gold, kind="human", name="gold", what="gold")
    judged = votes.filter(pl.col("annotator_kind") != "human")
    if not judged.height:
        # Only human votes, or none marked (annotations default to human): the table is what
        # is evaluated (e.g. consensus posteriors, or one annotator against the gold).
        judged = votes.with_columns(pl.lit("llm").alias("annotator_kind"))
    report = calibration(
        judged, gold, min_human_agreement=min_human_agreement, item_column=item_column
    )
    texts = pairs if pairs is not None else gold if "chosen" in gold.columns else None
    items = pair_sides(texts) if texts is not None else None
    for name, stats in judge_stats(judged, items).items():
        figures = stats.as_dict()
        report["judges"].setdefault(name, {}).update(
            {k: figures[k] for k in ("position_consistency", "p_first_wins", "p_longer_wins")}
        )
    pooled, panel_report = panel(judged, method=panel_method, annotator=PANEL)
    pooled_figures = calibration(
        pooled, gold, min_human_agreement=min_human_agreement, item_column=item_column
    )["judges"].get(PANEL, {})
    report["panel"] = {**pooled_figures, **panel_report}
    rows = [{"judge": name, **figures} for name, figures in report["judges"].items()]
    rows.append({"judge": PANEL, **pooled_figures})
    judges = pl.DataFrame(
        [{k: r.get(k) for k in JUDGES_SCHEMA} for r in rows], schema=JUDGES_SCHEMA
    )
    return StageResult(tables={"judges": judges}, report=report)

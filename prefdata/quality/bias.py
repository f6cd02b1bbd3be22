"""Bias statistics: length preference, position balance, label balance.

- Length: P(chosen is longer than rejected), over pairs whose sides differ in length (equal
  lengths are counted apart), with a Wilson interval, overall and per `source`; and the mean
  of ln(len chosen / len rejected). Length-biased labels teach a model that longer is better.
- Position (annotations with `order`): P(the response shown first wins), over a/b votes
  whose order is known, per annotator and overall, with a Wilson interval and a two-sided
  exact binomial test against 1/2; ties counted apart. A judge that favours the first slot
  (LLM judges often do) is visible here.
- Labels: the share of each label per annotator, and per source (annotations joined to
  pairs by item_id = pair_id). For pair votes a and b are canonical content-hash sides, so
  a healthy annotator is near 50/50 on a/b; the tie share shows how often they abstain.
  A vote without a label (a judge reply that could not be parsed) counts as "(missing)".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import polars as pl
from scipy.stats import binomtest

from prefdata.errors import ContractError
from prefdata.quality.sample import wilson_interval
from prefdata.stage import StageResult, Table, stage


def _share(k: int, n: int, confidence: float) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n, confidence=confidence)
    return {
        "p": k / n if n else None,
        "low": float(lo) if n else None,
        "high": float(hi) if n else None,
    }


def _length_block(df: pl.DataFrame, confidence: float) -> dict[str, Any]:
    longer = int((df["lc"] > df["lr"]).sum())
    shorter = int((df["lc"] < df["lr"]).sum())
    both = df.filter((pl.col("lc") > 0) & (pl.col("lr") > 0))
    log_ratio = both.select(
        (pl.col("lc").cast(pl.Float64).log() - pl.col("lr").cast(pl.Float64).log()).mean()
    ).item()
    share = _share(longer, longer + shorter, confidence)
    return {
        "pairs": df.height,
        "chosen_longer": longer,
        "rejected_longer": shorter,
        "equal_length": df.height - longer - shorter,
        "p_chosen_longer": share["p"],
        "low": share["low"],
        "high": share["high"],
        "mean_log_length_ratio": None if log_ratio is None else float(log_ratio),
    }


def _position_block(k: int, n: int, ties: int, confidence: float) -> dict[str, Any]:
    share = _share(k, n, confidence)
    return {
        "votes": n,
        "first_shown_wins": k,
        "ties": ties,
        "p_first_shown_wins": share["p"],
        "low": share["low"],
        "high": share["high"],
        "p_value": float(binomtest(k, n, 0.5).pvalue) if n else None,
    }


def _label_block(df: pl.DataFrame, key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    counts = df.group_by(key, "label").len().sort(key, "label")
    totals = df.group_by(key).len()
    total_of = dict(totals.iter_rows())
    for group, label, n in counts.iter_rows():
        entry = out.setdefault(str(group), {"votes": total_of[group], "counts": {}, "shares": {}})
        entry["counts"][label] = n
        entry["shares"][label] = n / total_of[group]
    return out


@stage("bias")
def bias_stats(
    # Any table with chosen / rejected (and votes with item_id / annotator / label) will do:
    # the statistics need only those, and say "(none)" for a missing source. What is there
    # is checked as the contracts say (a NaN chosen is an error, not a length of 3).
    pairs: Annotated[pl.DataFrame, Table("pairs", needs=("chosen", "rejected"))],
    *,
    annotations: Annotated[
        pl.DataFrame | None,
        Table("annotations", needs=("item_id", "annotator", "label")),
    ] = None,
    confidence: float = 0.95,
    unit: Literal["chars", "words"] = "chars",
) -> StageResult:
    """Bias statistics: P(chosen is longer), position balance, label balance per source and
    per annotator (see the module doc).

    Output: the report, with `length` {overall, by_source}, and with annotations `position`
    {overall, by_annotator} (when an `order` column exists) and `labels` {by_annotator,
    by_source}.

    Example: prefdata bias pairs.parquet --annotations votes.parquet

    Args:
        pairs: the pairs
        annotations: votes on the pairs (item_id = pair_id), for position and label bias
        confidence: the level of the intervals
        unit: lengths in characters or in whitespace-separated words
    """
    for col in ("chosen", "rejected"):
        if col not in pairs.columns:
            raise ContractError(f"bias_stats needs column '{col}'", column=col)

    def length(col: str) -> pl.Expr:
        text = pl.col(col).fill_null("")
        return text.str.len_chars() if unit == "chars" else text.str.count_matches(r"\S+")

    src = pl.col("source").fill_null("(none)") if "source" in pairs.columns else pl.lit("(none)")
    lens = pairs.select(
        length("chosen").alias("lc"),
        length("rejected").alias("lr"),
        src.cast(pl.String).alias("source"),
    )
    report: dict[str, Any] = {
        "unit": unit,
        "confidence": confidence,
        "length": {
            "overall": _length_block(lens, confidence),
            "by_source": {
                str(s): _length_block(g, confidence)
                for (s,), g in lens.sort("source").group_by("source", maintain_order=True)
            },
        },
    }
    if annotations is None:
        return StageResult(report=report)
    for col in ("item_id", "annotator", "label"):
        if col not in annotations.columns:
            raise ContractError(f"bias_stats: annotations need column '{col}'", column=col)

    if "order" in annotations.columns:
        pos = annotations.filter(pl.col("order").is_in(["ab", "ba"])).select(
            "annotator",
            (pl.col("label") == "tie").alias("tie"),
            (
                ((pl.col("label") == "a") & (pl.col("order") == "ab"))
                | ((pl.col("label") == "b") & (pl.col("order") == "ba"))
            ).alias("first"),
            pl.col("label").is_in(["a", "b"]).alias("decided"),
        )
        per = (
            pos.group_by("annotator")
            .agg(
                pl.col("first").sum().alias("k"),
                pl.col("decided").sum().alias("n"),
                pl.col("tie").sum().alias("ties"),
            )
            .sort("annotator")
        )
        k_all, n_all, t_all = (int(per[c].sum()) for c in ("k", "n", "ties"))
        report["position"] = {
            "overall": _position_block(k_all, n_all, t_all, confidence),
            "by_annotator": {
                str(a): _position_block(int(k), int(n), int(t), confidence)
                for a, k, n, t in per.iter_rows()
            },
        }

    labels = annotations.select(
        "item_id", "annotator", pl.col("label").cast(pl.String).fill_null("(missing)")
    )
    report["labels"] = {"by_annotator": _label_block(labels, "annotator")}
    if "pair_id" in pairs.columns:
        with_source = labels.join(
            pairs.select("pair_id", src.cast(pl.String).alias("source")).unique("pair_id"),
            left_on="item_id",
            right_on="pair_id",
            how="inner",
        )
        report["labels"]["by_source"] = _label_block(with_source, "source")
        report["labels"]["votes_without_pair"] = labels.height - with_source.height
    return StageResult(report=report)

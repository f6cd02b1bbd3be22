"""Figures about the votes: each judge's and each human annotator's position and length
preferences (with intervals, in separate tables), and agreement between annotators."""

from __future__ import annotations

import inspect
from typing import Any

import polars as pl

from prefdata import ids
from prefdata.quality.agreement import agreement
from prefdata.quality.bias import bias_stats as bias_stage
from prefdata.quality.consensus import consensus
from prefdata.quality.disagreement import judge_vs_human
from prefdata.quality.sample import wilson_interval
from prefdata.report import interpret
from prefdata.schema import PAIR_LABELS

# The statistics without the stage's input check: the report takes data with row problems on
# purpose and shows them (overview `problems`), so it must not stop at the first one.
bias_stats = inspect.unwrap(bias_stage)

PAIR_LABEL_ORDER = ("b", "tie", "a")


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
    # Judges and humans apart: a judge's bias is a property of a model and a prompt, a
    # human's of a person; the report shows them in separate tables.
    judges: dict[str, Any] = {}
    humans: dict[str, Any] = {}
    for name in sorted(kinds):
        entry = {
            "annotator_kind": kinds[name],
            "votes": int((votes["annotator"] == name).sum()),
            "position": position.get(name),
            "position_consistency": consistency.get(name),
            "longer_wins": longer.get(name),
        }
        pos, lw = entry["position"], entry["longer_wins"]
        if pos and pos.get("votes"):
            entry["position"] = {
                **pos,
                "reading": interpret.position_bias(
                    name, pos["p_first_shown_wins"], pos["low"], pos["high"], pos["votes"]
                ),
            }
        if lw and lw.get("votes"):
            entry["longer_wins"] = {
                **lw,
                "reading": interpret.longer_wins(name, lw["p"], lw["low"], lw["high"], lw["votes"]),
            }
        if kinds[name] == "human":
            humans[name] = entry
        else:
            entry["agreement_with_humans"] = (vs_human or {}).get("per_judge", {}).get(name)
            judges[name] = entry
    out: dict[str, Any] = {"annotators": judges, "humans": humans}
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

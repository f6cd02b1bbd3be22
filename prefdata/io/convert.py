"""Conversions between the contracts: pairs -> KTO, ratings / rankings -> pairs, thumbs -> KTO.

Each is a stage (`prefdata convert NAME`): `convert(table, *, options) -> StageResult`. Rows
that cannot become output (a prompt whose completions all tie, tied thumbs) are counted in the
report, never turned into a pair with chosen == rejected.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl

from prefdata import ids
from prefdata.io.importers.common import kto_table, pairs_table
from prefdata.schema import MESSAGES, conform, with_messages
from prefdata.stage import StageResult, Table, stage

Mode = Literal["all", "best-vs-worst"]

# TRL's KTO advice: desirable_weight * n_desirable / (undesirable_weight * n_undesirable)
# should lie between 1:1 and 4:3.
KTO_RATIO_ADVICE = (1.0, 4.0 / 3.0)


def kto_balance(kto: pl.DataFrame) -> dict[str, Any]:
    """Desirable:undesirable counts and ratio, and whether it lies in TRL's advised range.

    Input columns: `label` (bool). Output: a report dict.
    """
    n_good = int(kto["label"].sum())
    n_bad = kto.height - n_good
    ratio = n_good / n_bad if n_bad else float("inf")
    lo, hi = KTO_RATIO_ADVICE
    return {
        "desirable": n_good,
        "undesirable": n_bad,
        "desirable_ratio": ratio,
        "within_trl_advice": bool(lo <= ratio <= hi),
        "trl_advice": "desirable:undesirable between 1:1 and 4:3 (after weights)",
    }


@stage("pairs-to-kto", outputs=("kto",))
def pairs_to_kto(pairs: Annotated[pl.DataFrame, Table("pairs")]) -> StageResult:
    """Each pair -> one desirable row (chosen) and one undesirable row (rejected).

    Output: `kto` (kto contract), 2n rows for n pairs, in pair order (chosen row first); the
    pair's confidence carries over to both rows. Report: kto_balance().

    Example: prefdata convert pairs-to-kto hh.parquet -o hh.kto.parquet

    Args:
        pairs: the pairs
    """
    base = pairs.select("prompt", "confidence", "source")
    good = base.with_columns(pairs["chosen"].alias("completion"), pl.lit(True).alias("label"))
    bad = base.with_columns(pairs["rejected"].alias("completion"), pl.lit(False).alias("label"))
    # Interleave (chosen row, rejected row) per pair, vectorised: no Python loop over rows.
    both = (
        pl.concat([good.with_row_index("__i"), bad.with_row_index("__i")])
        .sort("__i", maintain_order=True)
        .drop("__i")
        .select("prompt", "completion", "label", "confidence", "source")
    )
    kto = conform(ids.with_completion_ids(both), "kto")
    return StageResult(tables={"kto": kto}, report={"pairs": pairs.height, **kto_balance(kto)})


def _empty_kto() -> pl.DataFrame:
    return conform(
        pl.DataFrame(
            schema={
                "prompt": MESSAGES,
                "completion": pl.String,
                "label": pl.Boolean,
                "confidence": pl.Float64,
                "source": pl.String,
            }
        ),
        "kto",
    )


def _score_matrix(scores: list[Any]) -> list[list[float]]:
    # A score is one number or a list of numbers (one per rater); nulls are missing votes.
    out: list[list[float]] = []
    for s in scores:
        if s is None:
            out.append([])
        elif isinstance(s, (list, tuple)):
            out.append([float(v) for v in s if v is not None])
        else:
            out.append([float(s)])
    return out


def _prob_better(x: list[float], y: list[float]) -> float:
    """P(a rating of x beats a rating of y), ties counting half (the AUC of x over y)."""
    a = np.asarray(x)[:, None]
    b = np.asarray(y)[None, :]
    return float((a > b).mean() + 0.5 * (a == b).mean())


@stage("ratings-to-pairs", outputs=("pairs",))
def ratings_to_pairs(
    rated: Annotated[pl.DataFrame, Table()],
    *,
    mode: Mode = "all",
    min_margin: float = 0.0,
    source: str = "ratings",
) -> StageResult:
    """Rated completions -> pairs (`pairs`).

    Input columns: `prompt` (text or messages), `completion`, `score` (a number, or a list
    with one number per rater), optional `generator`, optional `group` (completions rated
    together, e.g. one question id; recorded in provenance). Completions are grouped by
    `group` when given, else by prompt; a pair takes the chosen completion's prompt.
    A pair is made when the mean scores differ by more than `min_margin` (strictly): with
    mode "all", every such pair; with "best-vs-worst", the top against the bottom. A prompt
    whose completions all tie yields no pair. Output: pairs with margin = difference of
    mean scores, confidence = P(a rater's score for chosen beats one for rejected),
    n_votes = raters per side, agreement = share of raters (aligned by position) ordering
    the pair like the means.

    Example: prefdata convert ratings-to-pairs rated.jsonl --mode best-vs-worst -o pairs.parquet

    Args:
        rated: rated completions (prompt, completion, score, optional generator and group)
        mode: every pair whose scores differ (all), or each prompt's best against its worst
        min_margin: the smallest score gap that makes a pair
        source: the `source` column of the pairs
    """
    table = with_messages(rated)
    generators = table["generator"].to_list() if "generator" in table.columns else None
    groups: dict[str, list[int]] = {}
    grouped = "group" in table.columns
    keys = (
        [str(g) for g in table["group"].to_list()]
        if grouped
        else [json.dumps(p, sort_keys=True) for p in table["prompt"].to_list()]
    )
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    scores = _score_matrix(table["score"].to_list())
    completions = table["completion"].to_list()
    prompts = table["prompt"].to_list()
    records: list[dict[str, Any]] = []
    report = {
        "prompts": len(groups),
        "prompts_all_tied": 0,
        "pairs_below_margin": 0,
        "completions_merged_identical": 0,
        "completions_without_score": 0,
    }
    for idx in groups.values():
        # The same text rated twice is one completion with more votes: pool its scores,
        # otherwise it would pair with itself or make duplicate pairs.
        first_of: dict[str, int] = {}
        for i in idx:
            if completions[i] in first_of:
                scores[first_of[completions[i]]] = scores[first_of[completions[i]]] + scores[i]
                scores[i] = []
                report["completions_merged_identical"] += 1
            else:
                first_of[completions[i]] = i
        idx = list(first_of.values())
        scored = [i for i in idx if scores[i]]
        report["completions_without_score"] += sum(1 for i in idx if not scores[i])
        means = {i: float(np.mean(scores[i])) for i in scored}
        if len(set(means.values())) <= 1:
            report["prompts_all_tied"] += 1
            continue
        ranked = sorted(scored, key=lambda i: -means[i])
        candidates = (
            [(ranked[0], ranked[-1])]
            if mode == "best-vs-worst"
            else [(i, j) for a, i in enumerate(ranked) for j in ranked[a + 1 :]]
        )
        for i, j in candidates:
            margin = means[i] - means[j]
            if margin <= min_margin:
                report["pairs_below_margin"] += 1
                continue
            si, sj = scores[i], scores[j]
            aligned = len(si) == len(sj) and len(si) > 1
            records.append(
                {
                    "prompt": prompts[i],
                    "chosen": completions[i],
                    "rejected": completions[j],
                    "margin": margin,
                    "confidence": _prob_better(si, sj),
                    "n_votes": min(len(si), len(sj)),
                    "agreement": (
                        float(np.mean([a > b for a, b in zip(si, sj, strict=True)]))
                        if aligned
                        else None
                    ),
                    "provenance": {
                        "scores_chosen": si,
                        "scores_rejected": sj,
                        "mode": mode,
                        "min_margin": min_margin,
                        **({"group": keys[i]} if grouped else {}),
                        **(
                            {"generator_chosen": generators[i], "generator_rejected": generators[j]}
                            if generators
                            else {}
                        ),
                    },
                }
            )
    pairs = pairs_table(records, source=source)
    report["pairs"] = pairs.height
    return StageResult(tables={"pairs": pairs}, report=report)


@stage("rankings-to-pairs", outputs=("pairs",))
def rankings_to_pairs(
    ranked: Annotated[pl.DataFrame, Table()],
    *,
    mode: Mode = "all",
    source: str = "rankings",
) -> StageResult:
    """Ranked sibling completions -> pairs (rank 0 is best).

    Input columns: `prompt` (messages), `completion`, `rank` (int; lower is better),
    optional `group` (completions ranked together; default: the prompt). Output: pairs for
    every ordered pair with different ranks ("all") or best against worst; equal ranks give
    no pair. The score is the negated rank, so this is ratings_to_pairs on ranks.

    Example: prefdata convert rankings-to-pairs ranked.jsonl -o pairs.parquet

    Args:
        ranked: ranked completions (prompt, completion, rank, optional group)
        mode: every pair with different ranks (all), or best against worst
        source: the `source` column of the pairs
    """
    scored = ranked.with_columns((-pl.col("rank").cast(pl.Float64)).alias("score"))
    result = ratings_to_pairs(scored, mode=mode, source=source)
    # Ranks are one aggregated ordering, not votes: confidence and agreement are unknown.
    pairs = result.tables["pairs"].with_columns(
        pl.lit(None, pl.Float64).alias("confidence"), pl.lit(None, pl.Float64).alias("agreement")
    )
    return StageResult(tables={"pairs": pairs}, report=result.report)


@stage("thumbs-to-kto", outputs=("kto", "tied"))
def thumbs_to_kto(
    thumbs: Annotated[pl.DataFrame, Table()], *, source: str = "thumbs"
) -> StageResult:
    """Up / down vote counts per completion -> KTO rows.

    Input columns: `prompt` (messages), `completion`, `up` (int), `down` (int).
    Output: `kto` and `tied`, and the report. label = up > down; confidence = the posterior
    probability
    that the label is right under a uniform Beta(1, 1) prior on the share of up-votes,
    i.e. P(p > 1/2) for label True. Completions with up == down (including 0 / 0) carry
    no label and go to `tied`, counted in the report.

    Example: prefdata convert thumbs-to-kto thumbs.jsonl -o kto.parquet

    Args:
        thumbs: completions with their up and down vote counts
        source: the `source` column of the KTO rows
    """
    from scipy.stats import beta  # scipy is a core dependency; imported here for start-up

    thumbs = with_messages(thumbs)
    up = thumbs["up"].fill_null(0).to_numpy().astype(float)
    down = thumbs["down"].fill_null(0).to_numpy().astype(float)
    p_good = beta.sf(0.5, up + 1, down + 1)
    label = up > down
    tied_mask = up == down
    conf = np.where(label, p_good, 1 - p_good)
    table = thumbs.with_columns(
        pl.Series("label", label), pl.Series("confidence", conf), pl.Series("__tied", tied_mask)
    )
    keep = table.filter(~pl.col("__tied")).drop("__tied")
    tied = table.filter(pl.col("__tied")).drop("__tied", "label", "confidence")
    kto = kto_table(keep.to_dicts(), source=source) if keep.height else _empty_kto()
    report = {"completions": thumbs.height, "dropped_tied_votes": tied.height, **kto_balance(kto)}
    return StageResult(tables={"kto": kto, "tied": tied}, report=report)

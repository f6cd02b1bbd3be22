"""The mislabel signals of a pairs table, each read as a block of the flip model
(prefdata.quality.flip_model): one level per pair, oriented by the given label.

Blocks, and what goes into each (signals whose errors go together share a block, so the
flip model never counts a common error twice):

- `content`: the out-of-fold content models: the embedding classifier's P(label right)
  (as a logit) and / or the cross-fitted reward model's margin r(chosen) - r(rejected).
  With both, one score: their weighted sum s' Cov^-1 m (m: the mean oriented readings,
  Cov: their covariance; the linear discriminant of two reflected Gaussians), so that the
  stronger, less noisy reading counts for more. Levels: quantile bins of |score| on each side.
- `judges`: LLM judge votes (annotator_kind "llm"); `humans`: human votes. Each annotator's
  votes on a pair (both orders, repeats) average to +1 / 0 / -1 for agree / tie / disagree
  with the chosen side; with at most `JOINT_MAX` annotators the block is their joint
  reading (so a reliable judge and a weak one are told apart), otherwise the mean over
  annotators cut into five levels. Annotator disagreement and the consensus posterior are
  what this block sees: how many voters, and which, side with the label.
- `answers`: the verifiable-answer verdict (prefdata.quality.verifiable): chosen right and
  rejected wrong agrees, the reverse disagrees, same correctness orders nothing.
- `consistency`: when several pairs of one prompt share responses (all pairs of N
  candidates, correct x incorrect solutions), the other pairs' labels: each side's net wins
  over the pairs it is in, leaving this pair out; their difference, chosen minus rejected,
  read as -3..+3 (clipped). It never reads the pair's own label, and its errors come from
  the other pairs' flips, not from what the content models find hard.
- `rules`: which side a rule check finds defective (empty, truncated, refusing): a defect on
  the chosen side alone disagrees, on the rejected side alone agrees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from prefdata import ids
from prefdata.errors import InputError
from prefdata.quality.flip_model import Block, quantile_levels

JOINT_MAX = 3
POOLED_EDGES = (-0.6, -0.2, 0.2, 0.6)  # mean vote in [-1, 1] -> 5 levels, symmetric about 0
# Rule checks whose reason names the defective side (prefdata.quality.rules); the others
# (identical sides, length ratio) say nothing about which side is better.
DIRECTIONAL_RULES = ("empty_response", "truncated_response", "refusal_vs_answer")


def content_bins(n: int) -> int:
    """Bins of |score| per side: about 60 pairs per level, between 3 and 10."""
    return int(min(10, max(3, n // 120)))


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-9, 1 - 1e-9)
    out: np.ndarray = np.log(q / (1.0 - q))
    return out


def combine_content(readings: Sequence[np.ndarray]) -> np.ndarray:
    """One oriented content score from several (n,) oriented readings (see the module doc).

    With one reading it is returned as is. Rows with a NaN reading get NaN.
    """
    if len(readings) == 1:
        return np.asarray(readings[0], dtype=np.float64)
    x = np.column_stack([np.asarray(r, dtype=np.float64) for r in readings])
    ok = np.isfinite(x).all(axis=1)
    if ok.sum() < 2 * x.shape[1] + 2:
        raise InputError("too few pairs with every content reading to combine them")
    # Each reading scaled to unit RMS first, so the weights do not depend on its units.
    x = x / (np.sqrt((x[ok] ** 2).mean(axis=0)) + 1e-12)
    m = x[ok].mean(axis=0)
    cov = np.cov(x[ok], rowvar=False) + 1e-6 * np.eye(x.shape[1])
    a = np.linalg.solve(cov, m)
    out = x @ a
    out[~ok] = np.nan
    return out / (np.sqrt((out[ok] ** 2).mean()) + 1e-12)


def content_block(readings: Sequence[np.ndarray], *, bins: int | None = None) -> Block:
    """The content block from oriented readings (logits or reward margins)."""
    score = combine_content(readings)
    b = bins or content_bins(int(np.isfinite(score).sum()))
    level, _ = quantile_levels(score, b)
    return Block("content", level, 2 * b, score)


def chosen_side_labels(pairs: pl.DataFrame) -> list[str]:
    """'a' or 'b' per pair: the canonical side (prefdata.ids.canonical_sides) of `chosen`,
    which is how annotation labels name it."""
    return [
        "a" if ids.canonical_sides(c, r)[0] == c else "b"
        for c, r in zip(pairs["chosen"].to_list(), pairs["rejected"].to_list(), strict=True)
    ]


def annotator_readings(
    pairs: pl.DataFrame, annotations: pl.DataFrame, kinds: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """(n_pairs, n_annotators) mean oriented vote (+1 agree with chosen, -1 against, 0 tie;
    NaN: no vote) of each annotator of the given kinds, and the annotators' names."""
    votes = annotations.filter(
        pl.col("annotator_kind").is_in(list(kinds)) & pl.col("label").is_not_null()
    )
    if "error" in votes.columns:
        votes = votes.filter(pl.col("error").is_null())
    names = sorted(set(votes["annotator"].to_list()))
    out = np.full((pairs.height, len(names)), np.nan)
    if not names:
        return out, names
    side = pl.DataFrame(
        {
            "item_id": pairs["pair_id"].cast(pl.String),
            "__side": chosen_side_labels(pairs),
            "__row": np.arange(pairs.height),
        }
    )
    scored = (
        votes.select(pl.col("item_id").cast(pl.String), "annotator", "label")
        .join(side, on="item_id", how="inner")
        .with_columns(
            pl.when(pl.col("label") == pl.col("__side"))
            .then(1.0)
            .when(pl.col("label") == "tie")
            .then(0.0)
            .otherwise(-1.0)
            .alias("__v")
        )
        .group_by("__row", "annotator")
        .agg(pl.col("__v").mean())
    )
    col = {n: j for j, n in enumerate(names)}
    rows = scored["__row"].to_numpy()
    cols = np.array([col[a] for a in scored["annotator"].to_list()], dtype=np.int64)
    out[rows, cols] = scored["__v"].to_numpy()
    return out, names


def vote_block(readings: np.ndarray, name: str) -> Block | None:
    """The block of one kind of annotator (see the module doc); None without any vote."""
    if readings.shape[1] == 0 or not np.isfinite(readings).any():
        return None
    present = np.isfinite(readings).any(axis=1)
    if readings.shape[1] <= JOINT_MAX:
        # each annotator a digit 0 (against) / 1 (tie or no vote) / 2 (agree)
        digits = np.where(np.isfinite(readings), np.sign(np.nan_to_num(readings)) + 1, 1)
        level = (digits.astype(np.int64) * (3 ** np.arange(readings.shape[1]))).sum(axis=1)
        levels = 3 ** readings.shape[1]
    else:
        total = np.nansum(readings, axis=1)
        count = np.isfinite(readings).sum(axis=1)
        mean = total / np.maximum(count, 1)
        level = np.digitize(mean, POOLED_EDGES)
        levels = len(POOLED_EDGES) + 1
    # no continuous score: a mean vote would merge levels the joint keeps apart
    return Block(name, np.where(present, level, -1), levels)


def answer_block(verdict: pl.Series) -> Block:
    """The verifiable-answer block from verdicts +1 / 0 / -1 / null."""
    v = verdict.cast(pl.Float64).to_numpy()
    level = np.where(np.isfinite(v), np.nan_to_num(v) + 1, -1).astype(np.int64)
    return Block("answers", level, 3)


def rule_sides(pairs: pl.DataFrame, rule_issues: pl.DataFrame) -> np.ndarray:
    """Per pair: -1 when a directional rule check finds only the chosen side defective, +1
    only the rejected side, 0 neither or both. Read from the `reason` of the rows of
    prefdata.quality.rules, which always names the side first ("chosen is empty", "chosen:
    ends mid-sentence; rejected: ...", "rejected refuses, chosen answers")."""
    reason = pl.col("reason")
    both_named = reason.str.starts_with("chosen and rejected")
    sides = (
        rule_issues.filter(pl.col("issue").is_in(list(DIRECTIONAL_RULES)))
        .select(
            pl.col("item_id").cast(pl.String),
            (reason.str.starts_with("chosen") | both_named).alias("c"),
            (
                reason.str.starts_with("rejected") | reason.str.contains("; rejected:") | both_named
            ).alias("r"),
        )
        .group_by("item_id")
        .agg(pl.col("c").any(), pl.col("r").any())
    )
    joined = pairs.select(pl.col("pair_id").cast(pl.String).alias("item_id")).join(
        sides, on="item_id", how="left", maintain_order="left"
    )
    c = joined["c"].fill_null(False).to_numpy()
    r = joined["r"].fill_null(False).to_numpy()
    return np.where(c & ~r, -1, np.where(r & ~c, 1, 0))


CONSISTENCY_CLIP = 3


def consistency_readings(pairs: pl.DataFrame) -> np.ndarray:
    """Per pair: net wins of chosen minus net wins of rejected over the other pairs of the
    same prompt (a side's net wins: +1 per pair it is chosen in, -1 per pair it is rejected
    in, this pair left out); NaN when neither side is in another pair."""
    n = pairs.height
    prompt = pairs["prompt_id"].cast(pl.String).to_list()
    # the pairs contract has no null response, so every digest is a string
    chosen = [str(d) for d in ids.digests(pairs["chosen"].to_list())]
    rejected = [str(d) for d in ids.digests(pairs["rejected"].to_list())]
    net: dict[tuple[str, str], int] = {}
    seen: dict[tuple[str, str], int] = {}
    for p, c, r in zip(prompt, chosen, rejected, strict=True):
        net[(p, c)] = net.get((p, c), 0) + 1
        net[(p, r)] = net.get((p, r), 0) - 1
        seen[(p, c)] = seen.get((p, c), 0) + 1
        seen[(p, r)] = seen.get((p, r), 0) + 1
    out = np.full(n, np.nan)
    for i, (p, c, r) in enumerate(zip(prompt, chosen, rejected, strict=True)):
        if seen[(p, c)] + seen[(p, r)] > 2:
            # leave this pair out: it gave chosen +1 and rejected -1
            out[i] = (net[(p, c)] - 1) - (net[(p, r)] + 1)
    return out


def consistency_block(readings: np.ndarray) -> Block | None:
    """The consistency block (None when no pair shares a response with another)."""
    if not np.isfinite(readings).any():
        return None
    r = np.clip(np.nan_to_num(readings), -CONSISTENCY_CLIP, CONSISTENCY_CLIP)
    level = np.where(np.isfinite(readings), r + CONSISTENCY_CLIP, -1).astype(np.int64)
    return Block(
        "consistency", level, 2 * CONSISTENCY_CLIP + 1, np.where(np.isfinite(readings), r, np.nan)
    )


def rule_block(sides: np.ndarray) -> Block:
    return Block("rules", np.asarray(sides, dtype=np.int64) + 1, 3)


def describe_reading(block: Block, i: int) -> str | None:
    """A short text of pair i's reading in a block (None when it has none)."""
    lv = int(block.level[i])
    if lv < 0:
        return None
    mid = (block.levels - 1) / 2
    lean = "agrees" if lv > mid else ("disagrees" if lv < mid else "neutral")
    if block.score is not None and math.isfinite(float(block.score[i])):
        return f"{block.name} {lean} ({float(block.score[i]):+.2f})"
    return f"{block.name} {lean}"

"""Consensus labels from many votes: majority vote and Dawid-Skene, with posteriors.

`consensus(annotations)` -> (posteriors, report).

Input: the annotations contract, long format (item_id, annotator, annotator_kind, label);
rows with an `error` or no label are not votes (counted in the report). Annotators may
label different subsets of the items, and one annotator may vote more than once on an
item (each vote is evidence).

Output `posteriors`, one row per item: `item_id`, `label` (the consensus label; null when
there is none, see below), `confidence` (the posterior probability of `label`, or the top
posterior when there is no label), `p_<label>` for every label, `n_votes`, `agreement`
(share of the item's votes equal to `label`; the top share when there is no label).

- `majority`: the posterior is the vote shares. When two or more labels share the top
  count (1 a + 1 b, or 1 a + 1 tie), there is no majority: `label` is null rather than a
  coin flip or a "tie" that nobody voted for. A strict plurality of "tie" votes gives the
  label "tie" (the annotators said the two are equal; `pairs_from_consensus` sets both
  kinds aside with different reasons).
- `dawid-skene`: EM over per-annotator confusion matrices (Dawid and Skene, 1979),
  started from the majority vote shares. Confusion counts and class counts get
  `smoothing` pseudo-counts (Laplace; 1 by default) so that an annotator with few items,
  or a label that annotator never used, never gets probability 0 and cannot veto an item.
  Stops when no posterior moves more than `tol` or after `max_iter` iterations.
  `label` is null only when the top two posteriors are equal (within 1e-12).
- `mean` (`mean_posteriors`): for judge votes on pairs that carry probabilities (`p_a`,
  or a stated confidence): each judge's orders averaged, then the judges averaged
  (prefdata.quality.pooling.panel(method="mean")); label a above 0.5, b below, tie at exactly
  0.5. It keeps what a position-biased judge knows, which every label-based method
  turns into a tie (see `mean_posteriors`).

Report (majority, dawid-skene): method, labels, items, votes, iterations, converged,
log_likelihood (DS), class_priors, per-annotator `confusion` (rows: true label, columns:
the label given, each row sums to 1; for majority it is measured against the majority
posterior) and `accuracy` (prior-weighted diagonal), items_no_consensus, label_counts.
(mean: method, items, label_counts, kappas.)

`pairs_from_consensus(pairs, posteriors)` puts the consensus onto a pairs table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl

from prefdata import ids
from prefdata.errors import InputError
from prefdata.quality.pooling import ONE_ORDER_ONLY, one_order_only_votes, panel
from prefdata.quality.votes import FloatArray, IntArray, Votes, encode_votes
from prefdata.schema import PAIR_LABELS, conform
from prefdata.stage import StageResult, Table, stage

Method = Literal["majority", "dawid-skene"]
"""The methods that fit encoded votes (`fit_votes`)."""
METHODS: tuple[Method, ...] = ("majority", "dawid-skene")
ConsensusMethod = Literal["majority", "dawid-skene", "mean"]
CONSENSUS_METHODS: tuple[ConsensusMethod, ...] = (*METHODS, "mean")
OneOrder = Literal["set_aside", "keep"]
_TIE_EPS = 1e-12


def consensus(
    annotations: pl.DataFrame,
    *,
    method: ConsensusMethod = "majority",
    labels: Sequence[str] | None = None,
    item_column: str = "item_id",
    max_iter: int = 500,
    tol: float = 1e-6,
    smoothing: float = 1.0,
    one_order: OneOrder = "set_aside",
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Consensus label and posterior per item (see the module doc for columns and rules).

    `labels`: the label set and its column order (a label outside it is an InputError);
    default: the labels present (a, b, tie order for pairs). `item_column`: the column
    that defines an item. `mean` is for pair votes keyed by `item_id` only (labels a / b /
    tie; see `mean_posteriors`).

    `one_order`: a judge asked a pair in both orders that answered in only one (the other
    failed, retries included) has a vote that position bias may have decided. "set_aside"
    (default) leaves such votes out; an item left without votes gets a posterior row with
    label null and `one_order_only` true, which `pairs_from_consensus` sets aside with
    reason "one_order_only". "keep" counts them (pooled, with the lower confidence of
    `prefdata.quality.pooling.pool_orders`). The report counts `one_order_only_votes`.
    """
    if method not in CONSENSUS_METHODS:
        raise InputError(f"method must be one of {CONSENSUS_METHODS}, got {method!r}")
    if method == "mean":
        if item_column != "item_id" or (labels is not None and set(labels) != set(PAIR_LABELS)):
            raise InputError("method mean pools pair votes: items by item_id, labels a / b / tie")
        # Checks every vote's label is a pair label, naming the first row that is not.
        encode_votes(annotations, label_order=PAIR_LABELS)
    if one_order not in ("set_aside", "keep"):
        raise InputError(f"one_order must be set_aside or keep, got {one_order!r}")
    lone = one_order_only_votes(annotations) if one_order == "set_aside" else None
    lone_items: list[Any] = []
    if lone is not None and lone.height:
        before = _voted_items(annotations, item_column)
        annotations = annotations.join(lone, on=["item_id", "annotator"], how="anti")
        lone_items = [i for i in before if i not in set(_voted_items(annotations, item_column))]
    if method == "mean":
        posteriors, report = _fit_or_empty(annotations, item_column, mean_posteriors)
    else:

        def fit_table(table: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
            votes = encode_votes(table, item_column=item_column, label_order=labels)
            fit = fit_votes(votes, method=method, max_iter=max_iter, tol=tol, smoothing=smoothing)
            return posterior_table(votes, fit.posterior, item_column=item_column), fit.report(votes)

        posteriors, report = _fit_or_empty(annotations, item_column, fit_table)
    report["one_order_only_votes"] = 0 if lone is None else lone.height
    posteriors = posteriors.with_columns(pl.lit(False).alias(ONE_ORDER_ONLY))
    if lone_items:
        extra = pl.DataFrame(
            {item_column: lone_items, "n_votes": [0] * len(lone_items)},
            schema_overrides={item_column: posteriors.schema.get(item_column, pl.String)},
        ).with_columns(pl.lit(True).alias(ONE_ORDER_ONLY))
        posteriors = pl.concat([posteriors, extra], how="diagonal_relaxed")
    return posteriors, report


def _voted_items(annotations: pl.DataFrame, item_column: str) -> list[Any]:
    """The items with at least one valid vote, in first-seen order."""
    valid = annotations.filter(pl.col("label").is_not_null())
    if "error" in valid.columns:
        valid = valid.filter(pl.col("error").is_null())
    return list(dict.fromkeys(valid[item_column].to_list()))


def _fit_or_empty(
    annotations: pl.DataFrame,
    item_column: str,
    fit: Callable[[pl.DataFrame], tuple[pl.DataFrame, dict[str, Any]]],
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """`fit(annotations)`, or an empty posteriors table when no valid vote is left (every
    vote was set aside)."""
    if _voted_items(annotations, item_column):
        return fit(annotations)
    schema = {
        item_column: pl.String,
        "label": pl.String,
        "confidence": pl.Float64,
        **{f"p_{k}": pl.Float64 for k in PAIR_LABELS},
        "n_votes": pl.Int64,
        "agreement": pl.Float64,
    }
    return pl.DataFrame(schema=schema), {"items": 0, "votes": 0}


def mean_posteriors(votes: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Posteriors from the judges' mean probability instead of their labels.

    Input: judge votes on pairs (the annotations contract with `p_a`, e.g. the local
    log-probability judge, or stated confidences; `order` when both orders were asked).
    The votes pool with prefdata.quality.pooling.panel(method="mean"): each judge's orders
    averaged, then the judges averaged; label a when that P(a) > 0.5, b when below, tie at
    exactly 0.5. Output: one row per item in the shape `pairs_from_consensus` reads
    (item_id, label, confidence = max(P(a), P(b)), p_a, p_b, p_tie = 0, n_votes = valid
    votes, agreement = the share of them naming `label`), and a report (method, items,
    label_counts, the panel's kappas).

    Why it exists: a judge that always prefers the response shown first names a different
    winner in each order, so every label-based consensus calls the pair a tie; what little
    it knows is only in how much more probable the first-shown answer is in one order than
    in the other, which the mean keeps.
    """
    pooled, panel_report = panel(votes, method="mean")
    valid = votes.filter(pl.col("label").is_not_null())
    if "error" in valid.columns:
        valid = valid.filter(pl.col("error").is_null())
    counts = (
        valid.join(pooled.select("item_id", pl.col("label").alias("__pooled")), on="item_id")
        .group_by("item_id")
        .agg(
            pl.len().alias("n_votes"),
            (pl.col("label") == pl.col("__pooled")).mean().alias("agreement"),
        )
    )
    posteriors = pooled.select(
        "item_id",
        "label",
        "confidence",
        pl.col("p_a"),
        (1.0 - pl.col("p_a")).alias("p_b"),
        pl.lit(0.0).alias("p_tie"),
    ).join(counts, on="item_id", how="left", maintain_order="left")
    report = {
        "method": "mean",
        "items": posteriors.height,
        "label_counts": {k: int((posteriors["label"] == k).sum()) for k in PAIR_LABELS},
        "kappas": panel_report["kappas"],
    }
    return posteriors, report


class Fit:
    """A fitted consensus model: item posteriors, class priors, confusion matrices."""

    def __init__(
        self,
        method: Method,
        posterior: FloatArray,
        priors: FloatArray,
        confusion: FloatArray,
        iterations: int,
        converged: bool,
        log_likelihood: float | None,
        smoothing: float,
    ) -> None:
        self.method = method
        self.posterior = posterior  # items x labels
        self.priors = priors  # labels
        self.confusion = confusion  # annotators x true label x given label
        self.iterations = iterations
        self.converged = converged
        self.log_likelihood = log_likelihood
        self.smoothing = smoothing

    def report(self, votes: Votes) -> dict[str, Any]:
        label, _ = consensus_codes(self.posterior)
        per_annotator = np.bincount(votes.annotator, minlength=len(votes.annotators))
        return {
            "method": self.method,
            "labels": votes.labels,
            "items": votes.n_items,
            "votes": len(votes.code),
            **votes.skipped,
            "iterations": self.iterations,
            "converged": self.converged,
            "log_likelihood": self.log_likelihood,
            "smoothing": self.smoothing if self.method == "dawid-skene" else None,
            "class_priors": dict(zip(votes.labels, self.priors.tolist(), strict=True)),
            "items_no_consensus": int((label < 0).sum()),
            "label_counts": {name: int((label == c).sum()) for c, name in enumerate(votes.labels)},
            "annotators": {
                name: {
                    "annotator_kind": votes.kinds[j],
                    "votes": int(per_annotator[j]),
                    "accuracy": float(self.priors @ np.diag(self.confusion[j])),
                    "confusion": self.confusion[j].tolist(),
                }
                for j, name in enumerate(votes.annotators)
            },
        }


def fit_votes(
    votes: Votes,
    *,
    method: Method = "dawid-skene",
    max_iter: int = 500,
    tol: float = 1e-6,
    smoothing: float = 1.0,
) -> Fit:
    """Fit majority or Dawid-Skene on encoded votes (see `votes.encode_votes`)."""
    counts = votes.counts().astype(np.float64)
    shares = counts / counts.sum(axis=1, keepdims=True)
    if method == "majority":
        # One M-step against the vote shares: the confusion each annotator shows vs the crowd.
        priors, confusion = _m_step(votes, shares, 0.0)
        return Fit(method, shares, priors, confusion, 0, True, None, 0.0)
    if smoothing < 0:
        raise InputError(f"smoothing must be >= 0, got {smoothing}")
    posterior = shares
    converged = False
    iterations = 0
    log_likelihood = float("nan")
    priors, confusion = _m_step(votes, posterior, smoothing)
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        new, log_likelihood = e_step(votes, priors, confusion)
        change = float(np.abs(new - posterior).max()) if new.size else 0.0
        posterior = new
        priors, confusion = _m_step(votes, posterior, smoothing)
        if change < tol:
            converged = True
            break
    # Report posteriors consistent with the returned matrices.
    posterior, log_likelihood = e_step(votes, priors, confusion)
    return Fit(
        method, posterior, priors, confusion, iterations, converged, log_likelihood, smoothing
    )


def _m_step(votes: Votes, posterior: FloatArray, smoothing: float) -> tuple[FloatArray, FloatArray]:
    """Class priors and confusion matrices (annotators x true x given) from soft labels."""
    j, k = len(votes.annotators), votes.n_labels
    priors = posterior.sum(axis=0) + smoothing
    priors = priors / priors.sum()
    # For each true class t: expected number of times annotator a gave label l.
    cell = votes.annotator * k + votes.code
    weight = posterior[votes.unit]
    confusion = np.empty((j, k, k))
    for t in range(k):
        confusion[:, t, :] = np.bincount(cell, weights=weight[:, t], minlength=j * k).reshape(j, k)
    confusion += smoothing
    totals = confusion.sum(axis=2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        # An annotator never seen with a class (no smoothing) gets a flat row, not NaN.
        confusion = np.where(totals > 0, confusion / totals, 1.0 / k)
    return priors, confusion


def log_evidence(votes: Votes, confusion: FloatArray) -> FloatArray:
    """votes x labels: log P(this vote | true label) under the confusion matrices."""
    with np.errstate(divide="ignore"):
        log_conf = np.log(confusion)
    # log_conf[a, :, l] for each vote's annotator a and given label l
    out: FloatArray = log_conf[votes.annotator, :, votes.code]
    return out


def item_log_scores(votes: Votes, priors: FloatArray, confusion: FloatArray) -> FloatArray:
    """items x labels: log prior + the log evidence of all the item's votes (unnormalised)."""
    evidence = log_evidence(votes, confusion)
    k = votes.n_labels
    with np.errstate(divide="ignore"):
        out = np.tile(np.log(priors), (votes.n_items, 1))
    for t in range(k):
        out[:, t] += np.bincount(votes.unit, weights=evidence[:, t], minlength=votes.n_items)
    return out


def normalise(log_scores: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(rows of probabilities, log normaliser per row) from log scores."""
    top = log_scores.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    p = np.exp(log_scores - top)
    z = p.sum(axis=-1, keepdims=True)
    # Every label impossible (only with smoothing=0): say so with a flat row, not NaN.
    flat = z == 0
    p = np.where(flat, 1.0, p)
    z = np.where(flat, p.shape[-1], z)
    with np.errstate(divide="ignore"):
        return p / z, (np.log(z) + top)[..., 0]


def e_step(votes: Votes, priors: FloatArray, confusion: FloatArray) -> tuple[FloatArray, float]:
    """(items x labels posteriors, log likelihood of all votes)."""
    posterior, log_z = normalise(item_log_scores(votes, priors, confusion))
    return posterior, float(log_z.sum())


def consensus_codes(posterior: FloatArray) -> tuple[IntArray, FloatArray]:
    """(label code per item, -1 when the top posteriors are equal; top posterior)."""
    if posterior.shape[1] == 0:
        return np.full(posterior.shape[0], -1, dtype=np.int64), np.zeros(posterior.shape[0])
    top = posterior.max(axis=1)
    tied = (posterior >= top[:, None] - _TIE_EPS).sum(axis=1) > 1
    code = np.where(tied, -1, posterior.argmax(axis=1))
    return code.astype(np.int64), top


def posterior_table(
    votes: Votes, posterior: FloatArray, *, item_column: str = "item_id"
) -> pl.DataFrame:
    """The `posteriors` table (see the module doc) from an items x labels posterior."""
    code, top = consensus_codes(posterior)
    counts = votes.counts()
    n = counts.sum(axis=1)
    own = np.where(code >= 0, counts[np.arange(len(code)), np.maximum(code, 0)], counts.max(axis=1))
    names = np.asarray([*votes.labels, ""], dtype=object)
    return pl.DataFrame(
        {
            item_column: votes.items,
            "label": pl.Series(names[code], dtype=pl.String).replace("", None),
            "confidence": top,
            **{f"p_{name}": posterior[:, c] for c, name in enumerate(votes.labels)},
            "n_votes": n.astype(np.int64),
            "agreement": own / n,
        }
    )


# ---------------------------------------------------------------------------------------


SET_ASIDE_REASONS = ("tie", "no_consensus", "no_votes", ONE_ORDER_ONLY)


def pairs_from_consensus(
    pairs: pl.DataFrame, posteriors: pl.DataFrame, *, method: str | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Orient each pair by its consensus label: (pairs, set_aside, report).

    Input: a pairs table (pair_id = the annotations' item_id) and `posteriors` from
    `consensus` on pair labels (a / b / tie, where a and b are
    prefdata.ids.canonical_sides(chosen, rejected)). Output pairs: chosen = the side the
    consensus prefers (swapped where the old chosen lost), confidence = the posterior of
    that side, n_votes and agreement from the posteriors, provenance gets a `consensus`
    entry (method, label, posteriors, whether the sides were swapped); margin and the other
    columns are kept. Pairs whose consensus is "tie", that have no consensus (top labels
    tie), that have no votes, or whose only votes came from a judge that answered in one
    order only go to `set_aside` unchanged, with a `reason` column ("tie" / "no_consensus" /
    "no_votes" / "one_order_only"); nothing is dropped. The report counts pairs_in,
    pairs_out, swapped and set_aside_<reason>.
    """
    extra_labels = [
        c[2:] for c in posteriors.columns if c.startswith("p_") and c[2:] not in ("a", "b", "tie")
    ]
    if extra_labels:
        raise InputError(f"posteriors hold labels other than a / b / tie: {extra_labels}")
    need = {"item_id", "label", "confidence", "n_votes", "agreement", "p_a", "p_b"}
    missing = sorted(need - set(posteriors.columns))
    if missing:
        raise InputError(
            f"posteriors lack column(s) {missing}: pass the table from consensus() "
            "on pair labels a / b / tie",
            column=missing[0],
        )
    pairs = conform(pairs, "pairs")
    if posteriors["item_id"].n_unique() != posteriors.height:
        raise InputError("posteriors hold an item_id twice", column="item_id")
    post = posteriors.select(
        pl.col("item_id").alias("pair_id"),
        pl.col("label").alias("__label"),
        pl.col("p_a").alias("__p_a"),
        pl.col("p_b").alias("__p_b"),
        (pl.col("p_tie") if "p_tie" in posteriors.columns else pl.lit(0.0)).alias("__p_tie"),
        pl.col("n_votes").alias("__n_votes"),
        pl.col("agreement").alias("__agreement"),
        (
            pl.col(ONE_ORDER_ONLY).fill_null(False)
            if ONE_ORDER_ONLY in posteriors.columns
            else pl.lit(False)
        ).alias("__one_order_only"),
    )
    joined = pairs.join(post, on="pair_id", how="left", maintain_order="left")
    d_chosen = pl.Series(ids.digests(joined["chosen"].to_list()), dtype=pl.String)
    d_rejected = pl.Series(ids.digests(joined["rejected"].to_list()), dtype=pl.String)
    # canonical_sides: a is the side with the smaller (digest, text), vectorised.
    chosen_is_a = (d_chosen < d_rejected) | (
        (d_chosen == d_rejected) & (joined["chosen"] <= joined["rejected"])
    )
    joined = joined.with_columns(chosen_is_a.alias("__chosen_is_a"))
    reason = (
        pl.when(pl.col("__label").is_null() & pl.col("__one_order_only").fill_null(False))
        .then(pl.lit(ONE_ORDER_ONLY))
        .when(pl.col("__label").is_null() & pl.col("__n_votes").is_null())
        .then(pl.lit("no_votes"))
        .when(pl.col("__label").is_null())
        .then(pl.lit("no_consensus"))
        .when(pl.col("__label") == "tie")
        .then(pl.lit("tie"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    joined = joined.with_columns(reason.alias("reason"))
    helper = [c for c in joined.columns if c.startswith("__")]
    set_aside = joined.filter(pl.col("reason").is_not_null()).drop(helper)
    kept = joined.filter(pl.col("reason").is_null()).drop("reason")

    winner_is_a = pl.col("__label") == "a"
    swap = winner_is_a != pl.col("__chosen_is_a")
    kept = kept.with_columns(
        swap.alias("__swap"),
        pl.when(winner_is_a).then(pl.col("__p_a")).otherwise(pl.col("__p_b")).alias("confidence"),
        pl.col("__n_votes").cast(pl.Int64).alias("n_votes"),
        pl.col("__agreement").alias("agreement"),
    ).with_columns(
        pl.when(pl.col("__swap"))
        .then(pl.col("rejected"))
        .otherwise(pl.col("chosen"))
        .alias("chosen"),
        pl.when(pl.col("__swap"))
        .then(pl.col("chosen"))
        .otherwise(pl.col("rejected"))
        .alias("rejected"),
    )
    provenance = [
        _with_consensus(prov, method, label, pa, pb, pt, sw)
        for prov, label, pa, pb, pt, sw in zip(
            kept["provenance"].to_list(),
            kept["__label"].to_list(),
            kept["__p_a"].to_list(),
            kept["__p_b"].to_list(),
            kept["__p_tie"].to_list(),
            kept["__swap"].to_list(),
            strict=True,
        )
    ]
    swapped = int(kept["__swap"].sum())
    kept = kept.with_columns(pl.Series("provenance", provenance, dtype=pl.String))
    kept = kept.drop([c for c in kept.columns if c.startswith("__")])
    report: dict[str, Any] = {
        "pairs_in": pairs.height,
        "pairs_out": kept.height,
        "swapped": swapped,
        **{f"set_aside_{r}": int((set_aside["reason"] == r).sum()) for r in SET_ASIDE_REASONS},
    }
    return conform(kept, "pairs"), set_aside, report


def _with_consensus(
    provenance: str | None,
    method: str | None,
    label: str,
    p_a: float,
    p_b: float,
    p_tie: float,
    swapped: bool,
) -> str:
    try:
        data = json.loads(provenance) if provenance else {}
    except json.JSONDecodeError:
        data = {"original": provenance}
    if not isinstance(data, dict):
        data = {"original": data}
    data["consensus"] = {
        "method": method,
        "label": label,
        "p": {"a": p_a, "b": p_b, "tie": p_tie},
        "swapped": swapped,
    }
    return json.dumps(data, ensure_ascii=False)


@stage("consensus", outputs=("pairs", "posteriors", "set_aside"))
def consensus_pairs(
    annotations: Annotated[pl.DataFrame, Table("annotations", rows=False)],
    *,
    pairs: Annotated[pl.DataFrame | None, Table("pairs")] = None,
    method: ConsensusMethod = "dawid-skene",
    one_order: OneOrder = "set_aside",
) -> StageResult:
    """Consensus labels with a posterior per item; with pairs, the pairs re-oriented by the
    consensus with confidence = the posterior.

    Output: `posteriors` (see the module doc); with `pairs` also `pairs` (oriented, the main
    product) and `set_aside` (tie / no consensus / no votes / one order only, with a
    reason). Report: the fit's figures, and with pairs `pairs` (pairs_from_consensus's
    counts).

    Example: prefdata consensus votes.annotations.parquet --pairs votes.parquet -o pairs.parquet

    Args:
        annotations: the votes, one row per vote (item_id = pair_id for pair votes)
        pairs: the pairs the votes are on; without it only the posteriors are made
        method: majority, dawid-skene, or mean (judge votes: the judges' mean P(a), each
            judge's two orders averaged first)
        one_order: set_aside (the pair, reason one_order_only) or keep the vote of a judge
            asked both orders that answered only one
    """
    posteriors, report = consensus(annotations, method=method, one_order=one_order)
    if pairs is None:
        return StageResult(tables={"posteriors": posteriors}, report=report)
    kept, set_aside, pair_report = pairs_from_consensus(pairs, posteriors, method=method)
    return StageResult(
        tables={"pairs": kept, "posteriors": posteriors, "set_aside": set_aside},
        report={**report, "pairs": pair_report},
    )

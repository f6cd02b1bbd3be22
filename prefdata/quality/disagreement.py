"""Mislabel audit signals from the annotations themselves, as rows of the issues contract.

Every function returns (issues, report). Issue rows: `item_id`, `issue`, `score` (0-1,
lower = worse), `is_issue`, `reason`, plus the extra columns named below.

- `low_consensus(posteriors)`: one row per item of a `consensus()` table; score = the
  posterior of the consensus label; an issue below `threshold`, or when there is no
  consensus label at all (top labels tie).
- `annotator_disagreement(annotations)`: one row per vote. score = the consensus model's
  posterior probability that the item's true label is this vote's label, given all the
  item's votes (Dawid-Skene by default, so each vote weighs by its annotator's estimated
  reliability, the voter's own included; majority: the label's vote share). An issue below
  `threshold`: the panel, weighed by reliability, says this vote is probably wrong.
  Why per vote and why the full posterior: a wrong vote is one annotator's error on one
  item; an item flag cannot say which vote to fix, and an item whose other votes still hold
  the right majority has no wrong consensus to flag. Leaving the voter out (the others'
  posterior alone) treats a reliable annotator's rare dissent like a noisy one's; on PandaLM
  with 20% of one annotator's votes flipped, the full posterior ranks the flips better
  (AUROC 0.98 against 0.96 for the others' vote share) at the same F1 (figures in
  tests/quality/test_disagreement.py). Votes on items
  nobody else labelled cannot be checked: they get no row and are counted
  (`votes_unchecked_no_other_annotator`). Extra columns: `row` (the vote's 1-based row in
  the input), `annotator`, `label`, `consensus_label` (null when the top labels tie).
- `judge_vs_human(annotations)`: one row per item that has both human and judge (llm)
  votes. score = the mean, over the item's judge votes, of the human posterior of the judge's
  label (with the default majority method: the share of (human vote, judge vote) pairs that
  agree). An issue below `threshold`. Extra columns: `human_label` (the human consensus,
  null when humans tie), `judge_labels` ("judge=label, ..."). The report gives each judge's
  agreement and Cohen's kappa with the human consensus label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from prefdata.errors import InputError
from prefdata.quality.agreement import kappa_from_confusion
from prefdata.quality.consensus import Method, consensus, consensus_codes, fit_votes
from prefdata.quality.votes import encode_votes
from prefdata.schema import conform, require_columns

ISSUE_COLUMNS = ("item_id", "issue", "score", "is_issue", "reason")


def _check_threshold(threshold: float) -> None:
    if not 0 <= threshold <= 1:
        raise InputError(f"threshold must be in 0-1, got {threshold}")


def low_consensus(
    posteriors: pl.DataFrame, *, threshold: float = 0.7, item_column: str = "item_id"
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Items whose consensus posterior is below `threshold` (or that have no consensus).

    Input: the `posteriors` table of `consensus()` (item_column, label, confidence).
    Output: issues with issue = "low_consensus", score = confidence, and the extra column
    `label`; report: items, flagged, no_consensus, threshold.
    """
    _check_threshold(threshold)
    needed = (item_column, "label", "confidence")
    require_columns(posteriors.columns, needed, "posteriors lack", error=InputError)
    no_label = pl.col("label").is_null()
    score = pl.col("confidence").cast(pl.Float64).clip(0.0, 1.0)
    issues = posteriors.select(
        pl.col(item_column).cast(pl.String).alias("item_id"),
        pl.lit("low_consensus").alias("issue"),
        score.alias("score"),
        (no_label | (score < threshold)).alias("is_issue"),
        pl.when(no_label)
        .then(pl.format("no consensus: top labels tie (posterior {})", score.round(3)))
        .otherwise(
            pl.format(
                "consensus '{}' has posterior {} (threshold {})",
                "label",
                score.round(3),
                pl.lit(threshold),
            )
        )
        .alias("reason"),
        pl.col("label"),
    )
    report = {
        "issue": "low_consensus",
        "threshold": threshold,
        "items": issues.height,
        "flagged": int(issues["is_issue"].sum()),
        "no_consensus": int(posteriors["label"].null_count()),
    }
    return conform(issues, "issues"), report


def annotator_disagreement(
    annotations: pl.DataFrame,
    *,
    method: Method = "dawid-skene",
    threshold: float = 0.5,
    labels: Sequence[str] | None = None,
    item_column: str = "item_id",
    max_iter: int = 500,
    tol: float = 1e-6,
    smoothing: float = 1.0,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Votes that the reliability-weighted panel contradicts (see the module doc).

    Input: the annotations contract. Output: one issue row per checkable vote (issue =
    "annotator_disagreement"); report: votes, votes_checked, votes_flagged,
    votes_unchecked_no_other_annotator, and per annotator votes_checked / flagged / share.
    """
    _check_threshold(threshold)
    votes = encode_votes(annotations, item_column=item_column, label_order=labels)
    fit = fit_votes(votes, method=method, max_iter=max_iter, tol=tol, smoothing=smoothing)
    j = len(votes.annotators)
    # A vote can be checked only where some other annotator voted on the same item.
    cell_keys, cell = np.unique(votes.unit * j + votes.annotator, return_inverse=True)
    own_n = np.bincount(cell, minlength=len(cell_keys))[cell]
    checked = votes.counts().sum(axis=1)[votes.unit] > own_n
    code, _ = consensus_codes(fit.posterior)
    score = np.clip(fit.posterior[votes.unit, votes.code], 0.0, 1.0)
    names = np.asarray([*votes.labels, ""], dtype=object)
    table = pl.DataFrame(
        {
            "item_id": votes.items.cast(pl.String).gather(votes.unit),
            "row": votes.rows + 1,
            "annotator": np.asarray(votes.annotators, dtype=object)[votes.annotator],
            "label": names[votes.code],
            "consensus_label": names[code[votes.unit]],
            "score": score,
            "__checked": checked,
        },
        schema_overrides={"annotator": pl.String, "label": pl.String, "consensus_label": pl.String},
    ).with_columns(pl.col("consensus_label").replace("", None))
    unchecked = int((~checked).sum())
    table = table.filter(pl.col("__checked")).drop("__checked")
    issues = table.select(
        "item_id",
        pl.lit("annotator_disagreement").alias("issue"),
        "score",
        (pl.col("score") < threshold).alias("is_issue"),
        pl.format(
            "{} voted '{}', which has posterior {} given all votes (consensus: {})",
            "annotator",
            "label",
            pl.col("score").round(3),
            pl.col("consensus_label").fill_null("none, top labels tie"),
        ).alias("reason"),
        "row",
        "annotator",
        "label",
        "consensus_label",
    )
    per = (
        issues.group_by("annotator")
        .agg(pl.len().alias("votes_checked"), pl.col("is_issue").sum().alias("flagged"))
        .sort("annotator")
    )
    report = {
        "issue": "annotator_disagreement",
        "method": method,
        "threshold": threshold,
        "votes": len(votes.code),
        **votes.skipped,
        "votes_checked": issues.height,
        "votes_flagged": int(issues["is_issue"].sum()),
        "votes_unchecked_no_other_annotator": unchecked,
        "per_annotator": {
            r["annotator"]: {
                "votes_checked": r["votes_checked"],
                "flagged": r["flagged"],
                "flagged_share": r["flagged"] / r["votes_checked"],
            }
            for r in per.iter_rows(named=True)
        },
    }
    return conform(issues, "issues"), report


def judge_vs_human(
    annotations: pl.DataFrame,
    *,
    method: Method = "majority",
    threshold: float = 0.5,
    labels: Sequence[str] | None = None,
    item_column: str = "item_id",
    judge_kinds: Sequence[str] = ("llm",),
    human_kinds: Sequence[str] = ("human",),
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Items where the judges disagree with the human consensus (see the module doc).

    Input: the annotations contract with human and judge votes. Output: one issue row per
    item with both (issue = "judge_vs_human"); report: items_compared,
    items_without_judge, items_without_human, flagged, and per judge votes_compared,
    agreement (share of its labels equal to the human consensus label, over items that have
    one), kappa (Cohen's, same items), mean_score.
    """
    _check_threshold(threshold)
    table = conform(annotations, "annotations")
    # One label domain for both sides: a judge may use a label no human used.
    domain = encode_votes(table, item_column=item_column, label_order=labels).labels
    humans = table.filter(pl.col("annotator_kind").is_in(list(human_kinds)))
    judges = table.filter(pl.col("annotator_kind").is_in(list(judge_kinds)))
    if not humans.height or not judges.height:
        raise InputError(
            f"need votes from both {list(human_kinds)} and {list(judge_kinds)} annotators; "
            f"got {humans.height} and {judges.height}",
            column="annotator_kind",
        )
    posteriors, _ = consensus(humans, method=method, labels=domain, item_column=item_column)
    judge_votes = encode_votes(judges, item_column=item_column, label_order=domain)
    jv = pl.DataFrame(
        {
            item_column: judge_votes.items.gather(judge_votes.unit),
            "judge": np.asarray(judge_votes.annotators, dtype=object)[judge_votes.annotator],
            "judge_label": np.asarray(domain, dtype=object)[judge_votes.code],
        },
        schema_overrides={"judge": pl.String, "judge_label": pl.String},
    )
    p_cols = [f"p_{x}" for x in domain]
    joined = jv.join(
        posteriors.select(item_column, pl.col("label").alias("human_label"), *p_cols),
        on=item_column,
        how="inner",
    )
    # The human posterior of each judge vote's label.
    p_matrix = joined.select(p_cols).to_numpy()
    code = joined["judge_label"].replace_strict(domain, list(range(len(domain))))
    joined = joined.with_columns(
        pl.Series("vote_score", p_matrix[np.arange(joined.height), code.to_numpy()])
    )
    items = (
        joined.group_by(item_column, maintain_order=True)
        .agg(
            pl.col("vote_score").mean().alias("score"),
            pl.col("human_label").first(),
            pl.format("{}={}", "judge", "judge_label").str.join(", ").alias("judge_labels"),
        )
        .with_columns(pl.col("score").clip(0.0, 1.0))
    )
    issues = items.select(
        pl.col(item_column).cast(pl.String).alias("item_id"),
        pl.lit("judge_vs_human").alias("issue"),
        "score",
        (pl.col("score") < threshold).alias("is_issue"),
        pl.format(
            "judges {} vs human consensus {}: agreement {}",
            "judge_labels",
            pl.col("human_label").fill_null("none (humans tie)"),
            pl.col("score").round(3),
        ).alias("reason"),
        "human_label",
        "judge_labels",
    )
    k = len(domain)
    per_judge: dict[str, Any] = {}
    for name in judge_votes.annotators:
        mine = joined.filter(pl.col("judge") == name)
        labelled = mine.filter(pl.col("human_label").is_not_null())
        h = labelled["human_label"].replace_strict(domain, list(range(k))).to_numpy()
        g = labelled["judge_label"].replace_strict(domain, list(range(k))).to_numpy()
        conf = np.bincount(h * k + g, minlength=k * k).reshape(k, k).astype(np.float64)
        n = labelled.height
        kappa = float(kappa_from_confusion(conf)) if n else float("nan")
        per_judge[name] = {
            "votes_compared": mine.height,
            "items_with_human_label": n,
            "agreement": float(np.trace(conf) / n) if n else None,
            "kappa": None if np.isnan(kappa) else kappa,
            "mean_score": float(mine["vote_score"].mean()) if mine.height else None,  # type: ignore[arg-type]
        }
    human_items = set(posteriors[item_column].to_list())
    judge_items = set(jv[item_column].to_list())
    report = {
        "issue": "judge_vs_human",
        "method": method,
        "threshold": threshold,
        "items_compared": issues.height,
        "items_without_judge": len(human_items - judge_items),
        "items_without_human": len(judge_items - human_items),
        "flagged": int(issues["is_issue"].sum()),
        "per_judge": per_judge,
    }
    return conform(issues, "issues"), report

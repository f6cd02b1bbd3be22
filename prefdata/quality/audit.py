"""The mislabel audit as one stage: every signal that applies to the inputs given, one issues
table, and a random sample for human review.

Signals: rule checks and dedup always; train/test overlap with `test`; low consensus,
annotator disagreement and judge-vs-human with `annotations`; the model-based classifier
with `model="embeddings"` (or `"scores"` with user-provided reward scores).
"""

from __future__ import annotations

from typing import Any, Literal

import polars as pl

from prefdata.quality.dedup import dedup, split_overlap
from prefdata.quality.rules import rule_checks
from prefdata.quality.sample import audit_sample
from prefdata.schema import validate

ModelSignal = Literal["none", "embeddings", "scores"]


def audit(
    pairs: pl.DataFrame,
    *,
    annotations: pl.DataFrame | None = None,
    test: pl.DataFrame | None = None,
    model: ModelSignal = "none",
    scores: pl.DataFrame | None = None,
    dedup_threshold: float = 0.8,
    consensus_threshold: float = 0.7,
    sample: int = 50,
    seed: int = 0,
    cache_dir: str | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Run every applicable audit signal on `pairs`.

    Input: pairs contract; optional annotations contract (votes on the pairs, item_id =
    pair_id), a test split of pairs (overlap check), reward scores (pair_id, score_chosen,
    score_rejected) for model="scores". Output: (issues, sample, report): the issues
    contract rows of every signal (extra columns of a signal kept, null elsewhere), a
    reproducible random sample of `sample` pairs with an empty `mislabeled` column for
    reviewers, and a report with each signal's report and the issue counts.
    """
    pairs = validate(pairs, "pairs")
    parts: list[pl.DataFrame] = []
    report: dict[str, Any] = {"pairs": pairs.height}

    issues, report["rules"] = rule_checks(pairs)
    parts.append(issues)
    issues, report["dedup"] = dedup(pairs, threshold=dedup_threshold, seed=seed)
    parts.append(issues)
    if test is not None:
        issues, report["split_overlap"] = split_overlap(
            pairs, validate(test, "pairs"), threshold=dedup_threshold, seed=seed
        )
        parts.append(issues)
    if annotations is not None:
        from prefdata.quality.consensus import consensus
        from prefdata.quality.disagreement import (
            annotator_disagreement,
            judge_vs_human,
            low_consensus,
        )

        annotations = validate(annotations, "annotations")
        humans = annotations.filter(pl.col("annotator_kind") == "human")
        if humans.height:
            posteriors, _ = consensus(humans, method="dawid-skene")
            issues, report["low_consensus"] = low_consensus(
                posteriors, threshold=consensus_threshold
            )
            parts.append(issues)
            issues, report["annotator_disagreement"] = annotator_disagreement(humans)
            parts.append(issues)
            if annotations["annotator_kind"].is_in(["llm"]).any():
                issues, report["judge_vs_human"] = judge_vs_human(annotations)
                parts.append(issues)
    if model != "none":
        from prefdata.paths import cache_root
        from prefdata.quality.model_audit import model_audit

        # Embeddings are cached on disk so a re-run (or a resumed one) never re-embeds.
        cache_dir = cache_dir or str(cache_root() / "embeddings")
        issues, report["model"] = model_audit(
            pairs, method=model, scores=scores, seed=seed, cache_dir=cache_dir
        )
        parts.append(issues)

    all_issues = (
        pl.concat([p for p in parts if p.height], how="diagonal_relaxed")
        if any(p.height for p in parts)
        else parts[0]
    )
    flagged = all_issues.filter(pl.col("is_issue"))
    report["issue_counts"] = {
        row["issue"]: row["len"]
        for row in flagged.group_by("issue").len().sort("issue").iter_rows(named=True)
    }
    report["pairs_flagged"] = flagged["item_id"].n_unique()
    drawn = audit_sample(pairs, n=min(sample, pairs.height), seed=seed) if sample else pairs.head(0)
    report["sample"] = drawn.height
    return all_issues, drawn, report

"""The mislabel audit as one stage: every signal that applies to the inputs given, one issues
table, and a random sample for human review.

Signals: rule checks, dedup and the consistency of pairs that share a response, always;
train/test overlap with `test`; low consensus, annotator disagreement and judge-vs-human
with `annotations`; the verifiable-answer check with reference `answers` (or an `answer`
column); content models with `model`: the out-of-fold embedding classifier ("embeddings"),
the cross-fitted reward model ("reward"), or user-provided reward scores ("scores").

By default (`combine=True`) every signal about the labels goes into one mislabel probability
per pair and one calibrated noise rate (prefdata.quality.mislabel: issue "mislabeled", the
report's `mislabel` part). The content models then add no issue rows of their own; with
`combine=False` they flag by confident learning as before (issue "model_disagrees").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl

from prefdata.engine import Engine
from prefdata.quality.dedup import dedup, split_overlap
from prefdata.quality.rules import rule_checks
from prefdata.quality.sample import audit_sample
from prefdata.quality.token_check import TokenCheck, token_check
from prefdata.stage import Resource, StageResult, Table, stage

ModelSignal = Literal[
    "none", "embeddings", "reward", "scores", "embeddings+reward", "embeddings+scores"
]
MODEL_SIGNALS: tuple[str, ...] = (
    "none",
    "embeddings",
    "reward",
    "scores",
    "embeddings+reward",
    "embeddings+scores",
)


@stage("audit", outputs=("issues", "sample"))
def audit(
    pairs: Annotated[pl.DataFrame, Table("pairs")],
    *,
    annotations: Annotated[pl.DataFrame | None, Table("annotations")] = None,
    test: Annotated[pl.DataFrame | None, Table("pairs", auto=False)] = None,
    answers: Annotated[pl.DataFrame | None, Table("prompts", auto=False, check=False)] = None,
    model: ModelSignal = "none",
    scores: Annotated[pl.DataFrame | None, Table(auto=False)] = None,
    combine: bool = True,
    flag_cap: float = 1.5,
    reward_folds: int = 3,
    reward_max_pairs: int | None = 400,
    reward_overrides: Sequence[str] = (),
    dedup_threshold: float = 0.8,
    consensus_threshold: float = 0.7,
    sample: int = 50,
    seed: int = 0,
    cache_dir: str | None = None,
    tokens: TokenCheck = TokenCheck(),  # noqa: B008 - frozen
    engine: Annotated[Engine | None, Resource("engine")] = None,
) -> StageResult:
    """Find likely mislabelled and broken pairs: rule checks, duplicates, train/test overlap,
    annotator disagreement, judge vs human, verifiable answers and content models, combined
    into one mislabel probability per pair and a calibrated noise rate.

    Input (each table a polars, pandas or `datasets` table, a pyarrow Table or a path,
    checked against its contract on the way in): pairs contract; optional annotations
    contract (votes on the pairs, item_id = pair_id), a test split of pairs (overlap
    check), reference answers (a prompts table with prompt_id and answer, as the GSM8K /
    MATH-500 importers give), reward scores (pair_id, score_chosen, score_rejected) for
    model="scores". Output: table `issues` (the
    issues contract rows of every signal; extra columns of a signal kept, null elsewhere),
    table `sample` (a reproducible random sample of `sample` pairs with an empty
    `mislabeled` column for reviewers, for `prefdata audit-rate`), and a report with each
    signal's report and the issue counts. The estimated label-noise rate is
    report["mislabel"]["noise_rate"] (prefdata.quality.mislabel.label_noise_rate reads it).

    Example: prefdata audit pairs.parquet --annotations votes.parquet -o issues.parquet

    Args:
        pairs: the pairs to audit
        annotations: votes on these pairs (judges and humans).
        test: a test split of pairs (train/test overlap).
        answers: reference answers, a prompts table with prompt_id and answer.
        model: content models: none, embeddings, reward (cross-fitted, slow on CPU),
            scores (user-provided), or embeddings+reward / embeddings+scores.
        scores: pair_id, score_chosen, score_rejected (model=scores).
        combine: one mislabel probability and noise rate from every label signal.
        flag_cap: flag at most this many times the estimated noise rate of the pairs.
        reward_folds: folds of the cross-fitted reward model.
        reward_max_pairs: train each reward fold on at most this many pairs.
        reward_overrides: recipe overrides for the reward folds (max_length=1024, ...).
        dedup_threshold: Jaccard similarity above which pairs are near duplicates.
        consensus_threshold: consensus posterior below which an item is flagged.
        sample: pairs drawn for human review (0: none).
        seed: folds, samples and bootstrap draws.
        cache_dir: embedding cache folder (default: the prefdata cache).
        tokens: the token-level pair check (prefdata.quality.token_check), with max_length
            or a recipe: issues prompt_fills_context, identical_after_truncation, ...
        engine: where the row-wise signals run (prefdata.engine): rule checks, dedup and
            overlap on Parquet shards, embeddings on model workers; the same issues either way.
    """
    parts: list[pl.DataFrame] = []
    report: dict[str, Any] = {"pairs": pairs.height}
    if model not in MODEL_SIGNALS:
        from prefdata.errors import InputError

        raise InputError(f"model must be one of {', '.join(MODEL_SIGNALS)}, got {model!r}")

    rules, report["rules"] = rule_checks(pairs, engine=engine)
    parts.append(rules)
    if tokens.wanted:
        issues, report["tokens"] = token_check(pairs, tokens)
        parts.append(issues)
    issues, report["dedup"] = dedup(pairs, threshold=dedup_threshold, seed=seed, engine=engine)
    parts.append(issues)
    if test is not None:
        issues, report["split_overlap"] = split_overlap(
            pairs, test, threshold=dedup_threshold, seed=seed, engine=engine
        )
        parts.append(issues)
    if annotations is not None:
        parts.extend(_vote_issues(annotations, consensus_threshold, report))
    verdict = None
    if answers is not None or "answer" in pairs.columns:
        from prefdata.quality.verifiable import answer_checks, verifiable_issues

        issues, report["answers"] = verifiable_issues(pairs, answers)
        parts.append(issues)
        verdict = answer_checks(pairs, answers)["verdict"]
    content = _content_readings(
        pairs,
        model,
        scores,
        combine,
        seed,
        cache_dir,
        engine,
        {
            "folds": reward_folds,
            "max_pairs_per_fold": reward_max_pairs,
            "overrides": tuple(reward_overrides),
        },
        report,
        parts,
    )
    if combine:
        combined = _combined(pairs, annotations, verdict, content, rules, flag_cap, seed, report)
        if combined is not None:
            parts.append(combined)

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
    return StageResult(tables={"issues": all_issues, "sample": drawn}, report=report)


def _vote_issues(
    annotations: pl.DataFrame, threshold: float, report: dict[str, Any]
) -> list[pl.DataFrame]:
    from prefdata.quality.consensus import consensus
    from prefdata.quality.disagreement import annotator_disagreement, judge_vs_human, low_consensus

    parts = []
    humans = annotations.filter(pl.col("annotator_kind") == "human")
    if humans.height:
        posteriors, _ = consensus(humans, method="dawid-skene")
        issues, report["low_consensus"] = low_consensus(posteriors, threshold=threshold)
        parts.append(issues)
        issues, report["annotator_disagreement"] = annotator_disagreement(humans)
        parts.append(issues)
        if annotations["annotator_kind"].is_in(["llm"]).any():
            issues, report["judge_vs_human"] = judge_vs_human(annotations)
            parts.append(issues)
    return parts


def _content_readings(
    pairs: pl.DataFrame,
    model: str,
    scores: pl.DataFrame | None,
    combine: bool,
    seed: int,
    cache_dir: str | None,
    engine: Engine | None,
    reward_options: dict[str, Any],
    report: dict[str, Any],
    parts: list[pl.DataFrame],
) -> list[np.ndarray]:
    """The content models' oriented readings (logit of the embedding classifier's P(label
    right), reward margins). Without `combine`, their confident-learning issue rows go to
    `parts` instead, as before."""
    from prefdata.quality.model_audit import model_audit, score_probabilities

    readings: list[np.ndarray] = []
    wanted = set(model.split("+")) - {"none"}
    if "embeddings" in wanted:
        from prefdata.paths import cache_root
        from prefdata.quality.model_audit import embedding_probabilities
        from prefdata.quality.signals import logit

        # Embeddings are cached on disk so a re-run (or a resumed one) never re-embeds.
        cache = cache_dir or str(cache_root() / "embeddings")
        if engine is not None and engine.distributed:
            from prefdata.quality.embeddings import embed_on_engine

            # The model pass on the engine's workers fills the cache; the fit below reads it.
            embed_on_engine(pairs, engine, cache_dir=cache)
        if combine:
            p, report["model"] = embedding_probabilities(pairs, seed=seed, cache_dir=cache)
            readings.append(logit(p))
        else:
            issues, report["model"] = model_audit(pairs, seed=seed, cache_dir=cache)
            parts.append(issues)
    if "scores" in wanted:
        from prefdata.errors import InputError

        if scores is None:
            raise InputError("model 'scores' needs a scores table (pair_id, score_chosen, ...)")
        if combine:
            from prefdata.quality.signals import logit

            p, t = score_probabilities(pairs, scores)
            readings.append(logit(p))  # = (score_chosen - score_rejected) / T
            report["scores"] = {"temperature": t}
        else:
            issues, report["model"] = model_audit(pairs, method="scores", scores=scores, seed=seed)
            parts.append(issues)
    if "reward" in wanted:
        from prefdata.quality.crossfit_reward import crossfit_reward_scores

        table, report["reward"] = crossfit_reward_scores(pairs, seed=seed, **reward_options)
        if combine:
            readings.append(table["margin"].to_numpy())
        else:
            issues, report["model"] = model_audit(pairs, method="scores", scores=table, seed=seed)
            parts.append(issues)
    return readings


def _combined(
    pairs: pl.DataFrame,
    annotations: pl.DataFrame | None,
    verdict: pl.Series | None,
    content: list[np.ndarray],
    rules: pl.DataFrame,
    flag_cap: float,
    seed: int,
    report: dict[str, Any],
) -> pl.DataFrame | None:
    """The combined mislabel issue rows, or None (with the reason in the report) when no
    signal about the labels is informative."""
    from prefdata.quality import signals as sg
    from prefdata.quality.flip_model import Block
    from prefdata.quality.mislabel import LABEL_BLOCKS, mislabel_audit

    blocks: list[Block | None] = []
    if content:
        blocks.append(sg.content_block(content))
    if annotations is not None:
        for kind, name in (("llm", "judges"), ("human", "humans")):
            readings, _ = sg.annotator_readings(pairs, annotations, [kind])
            blocks.append(sg.vote_block(readings, name))
    if verdict is not None:
        blocks.append(sg.answer_block(verdict))
    if "prompt_id" in pairs.columns:
        blocks.append(sg.consistency_block(sg.consistency_readings(pairs)))
    blocks.append(sg.rule_block(sg.rule_sides(pairs, rules)))
    present = [b for b in blocks if b is not None]
    if not any(b.name in LABEL_BLOCKS and b.informative() for b in present):
        report["mislabel"] = {
            "noise_rate": None,
            "skipped": "no informative signal about the labels (add model=embeddings, judge "
            "or human votes, or reference answers)",
        }
        return None
    issues, report["mislabel"] = mislabel_audit(pairs, present, seed=seed, flag_cap=flag_cap)
    return issues

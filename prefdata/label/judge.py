"""The pairwise LLM judge: every pair shown in both orders, structured verdicts, bias figures.

    result = judge(pairs, judges=["anthropic:claude-sonnet-4-6"], cache=CallCache())
    votes, verdicts = result.tables["annotations"], result.tables["verdicts"]
    plan = judge(pairs, judges=[...], cache=cache, estimate=True).report   # no call made

Why both orders: LLM judges prefer a position (published swap studies: the verdict flips in
roughly 15-45% of pairs), and a tiny local model picks whatever is shown first. One order
measures that bias into the labels; two orders expose it (`position_consistency`) and, pooled,
cancel it.

How a verdict is read (prefdata.label.verdicts; never by looking for a letter in free text):
- a judge with structured output (anthropic: forced tool use; openai-compatible servers:
  JSON output) fills `VERDICT_TOOL` (`verdict`: "A" / "B" / "tie", where A is the response
  shown first; `rationale`; optional `confidence` 0-1);
- a judge that reads next-token probabilities (local): no generation at all, the
  probabilities of "A" and "B" after the prompt, renormalised over the two: p(first shown)
  per vote, mapped onto canonical side a as the vote's `p_a`.
A reply without a valid verdict (malformed JSON, a verdict outside the enum, a refusal, a
backend error) is an annotation row with `error` set and no label.

Input: a `pairs` table (`prompt`, `chosen`, `rejected`; optional `answer` used as the reference
for the math rubric) or a `candidates` table (`prompt_id`, `prompt`, `completion`, optional
`score`), from which the pairs to judge are chosen here, in one place (`selection`: "all";
"best-vs-worst" by `score`, rated first by the same judges when there is none
(prefdata.label.pointwise); "tournament", a budgeted knockout that picks each round's pairs
from the last round's verdicts (prefdata.label.tournament); `max_pairs_per_prompt`).

Output tables:
- `annotations` (one row per vote, i.e. per pair x judge x order): `item_id` (= pair_id),
  `annotator` ("backend:model"), `annotator_kind` "llm", `label` a / b / tie on canonical
  sides (prefdata.ids.canonical_sides, never "first shown"), `confidence` (the judge's stated
  confidence; next-token judges: the probability of its label), `rationale`, `raw` (the tool
  input / the choice probabilities as JSON), `error`, `order` ("ab": side a shown first),
  `input_tokens` (all prompt tokens), `output_tokens`, `cost_usd`, `created_at`, and the extra
  columns `cache_read_tokens`, `cache_write_tokens` (the prompt-cached part), `p_a`
  (next-token judges: P(a better); others null), `template_version` (the rubric hash),
  `rubric`; a tournament adds `bracket` and `round`;
- `verdicts`: the orders pooled per (pair, judge) (prefdata.quality.pooling.pool_orders);
- from candidates: `pairs` (the judged pairs, pairs contract, confidence unknown until
  consensus), `standings` (tournament: each prompt's best and worst), `scores` (best-vs-worst
  without a score column: the candidates with the judges' pointwise `score`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Annotated, Any

import polars as pl

from prefdata.errors import InputError
from prefdata.label.estimate import estimate as estimate_calls
from prefdata.label.rubric import BUILTIN_RUBRICS, load_rubric, pointwise_rubric_for
from prefdata.label.runner import (
    JudgeOptions,
    failures,
    judge_name,
    judge_pairs,
    make_answerer,
    open_clients,
)
from prefdata.label.selection import (
    Selection,
    is_candidates,
    pair_items,
    select_pairs_with_report,
)
from prefdata.label.verdicts import votes_frame
from prefdata.llm.base import Client
from prefdata.llm.cache import CallCache
from prefdata.progress import progress_bar, synced
from prefdata.quality.judge_eval import (
    PAIR_COLUMNS,
    VOTE_COLUMNS,
    calibration,
    gold_from_pairs,
    judge_stats,
)
from prefdata.quality.pooling import pool_orders
from prefdata.schema import conform
from prefdata.stage import File, Resource, StageResult, Table, stage

__all__ = ["OUTPUTS", "ajudge", "judge", "judged_pairs"]

# The tables a judge run can make, the main product (the votes) first.
OUTPUTS = ("annotations", "verdicts", "pairs", "standings", "scores")


# The async function is the stage (declared here, so awaiting it converts and checks the
# tables as the sync one does); `judge` runs it to completion.
@stage("judge", outputs=OUTPUTS)
async def ajudge(
    pairs: Annotated[
        pl.DataFrame,
        Table(
            "pairs",
            "candidates",
            rows=("pairs",),
            needs={"pairs": PAIR_COLUMNS, "candidates": ("prompt_id", "prompt", "completion")},
        ),
    ],
    *,
    judges: Sequence[str] = ("local:smollm2",),
    cache: Annotated[CallCache, Resource("cache")],
    options: JudgeOptions = JudgeOptions(),  # noqa: B008 - frozen, so one shared default is safe
    selection: Selection = "all",
    max_pairs_per_prompt: int | None = None,
    pointwise_rubric: Annotated[str | None, File(names=BUILTIN_RUBRICS)] = None,
    seed: int = 0,
    gold: Annotated[
        pl.DataFrame | None,
        Table(
            "annotations",
            "pairs",
            auto=False,
            needs={"annotations": VOTE_COLUMNS, "pairs": PAIR_COLUMNS},
        ),
    ] = None,
    min_human_agreement: float | None = None,
    source: str = "judged",
    client_options: dict[str, dict[str, Any]] | None = None,
    estimate: bool = False,
    progress: Annotated[bool, Resource("progress")] = False,
) -> StageResult:
    """Pairwise LLM judge in both orders (position-debiased): votes, one verdict per pair and
    judge, and from candidates the judged pairs.

    Tables (see the module doc): `annotations` (the votes), `verdicts`, and from candidates
    `pairs`, `standings` (tournament) and `scores` (best-vs-worst without a score column).
    `judge` is the same without async; a client object may stand in a `judges` entry.

    Report: pairs, orders, rubric, template_version, cache, per judge the figures of
    `judge_stats` (votes, errors, position_consistency, p_first_wins, p_longer_wins, ...),
    `selection` (candidates: prompts, prompts_with_pairs and `skipped`, the prompts that gave
    no pair by reason), `pointwise` (the scoring pass), `calibration` (with gold). A
    tournament's report is that of prefdata.label.tournament; it refuses gold and
    min_human_agreement. With `estimate`, the report is `prefdata.label.estimate.estimate`'s
    and no call is made. `failures` counts the calls and the failed ones; the run fails
    (StageResult.failure: the command exits 1 after writing) when every call failed or more
    than `max_failed_share` of them did.

    Example: prefdata judge pairs.parquet -o votes.parquet --judge local:smollm2
    --judge anthropic:claude-sonnet-4-6 --rubric helpfulness --estimate

    Example: prefdata judge candidates.parquet -o votes.parquet --judge local:smollm2
    --selection tournament --max-pairs-per-prompt 6

    Args:
        pairs: pairs (prompt, chosen, rejected), or candidates (prompt_id, prompt,
            completion) from which the pairs are selected
        judges: backend:model, e.g. anthropic:claude-sonnet-4-6 (repeat for a panel)
        options: how the calls are made and read
        selection: candidates: all | best-vs-worst (by `score`; without one the judges rate
            each candidate first) | tournament (a budgeted knockout)
        max_pairs_per_prompt: all: a seeded random K pairs per prompt; tournament: the budget
        pointwise_rubric: template for rating candidates alone (default: from --rubric)
        seed: pair subsets and tournament draws
        gold: human labels for calibration (annotations, or pairs whose chosen side is the
            human label)
        min_human_agreement: each judge labels the gold pairs first and stops below this
            accuracy (ties left out)
        source: the `source` column of the judged pairs (candidates input)
        client_options: make_client options per backend, e.g. anthropic='{"timeout": 30}'
        estimate: print calls and cost, spend nothing
    """
    if estimate:
        plan = estimate_calls(
            pairs,
            judges=judges,
            options=options,
            selection=selection,
            max_pairs_per_prompt=max_pairs_per_prompt,
            pointwise_rubric=pointwise_rubric,
            seed=seed,
        )
        return StageResult(report=plan)
    if min_human_agreement is not None and gold is None:
        raise InputError("min_human_agreement needs gold labels (--gold) to measure agreement")
    candidates = is_candidates(pairs)
    tables: dict[str, pl.DataFrame] = {}
    if candidates and selection == "tournament":
        if min_human_agreement is not None:
            raise InputError("min_human_agreement is not available with selection 'tournament'")
        if gold is not None:
            # Gold only feeds the min_human_agreement gate, which a tournament has not got:
            # refused rather than ignored.
            raise InputError(
                "gold labels are not used with selection 'tournament' (they only feed "
                "min_human_agreement); score the votes against them with "
                "prefdata judge-eval, or use selection 'all' or 'best-vs-worst'"
            )
        from prefdata.label.tournament import atournament

        votes, standings, report = await atournament(
            pairs,
            judges=list(judges),
            cache=cache,
            options=options,
            max_pairs_per_prompt=max_pairs_per_prompt,
            seed=seed,
            client_options=client_options,
            progress=progress,
        )
        tables["standings"] = standings
    else:
        votes, report, scored = await _judge_selected(
            pairs,
            judges,
            cache,
            options,
            selection,
            max_pairs_per_prompt,
            pointwise_rubric,
            seed,
            gold,
            min_human_agreement,
            client_options,
            progress,
        )
        if scored is not None:
            tables["scores"] = scored
    tables = {"annotations": votes, "verdicts": pool_orders(votes), **tables}
    if candidates:
        tables["pairs"] = judged_pairs(pairs, votes, source=source)
    failed = int((votes["error"].is_not_null() | votes["label"].is_null()).sum())
    report["failures"], failure = failures(votes.height, failed, options)
    return StageResult(tables=tables, report=report, failure=failure)


judge = synced(ajudge)


async def _judge_selected(
    table: pl.DataFrame,
    judges: Sequence[str | Client],
    cache: CallCache,
    options: JudgeOptions,
    selection: Selection,
    max_pairs_per_prompt: int | None,
    pointwise_rubric: str | None,
    seed: int,
    gold: pl.DataFrame | None,
    min_human_agreement: float | None,
    client_options: dict[str, dict[str, Any]] | None,
    progress: bool,
) -> tuple[pl.DataFrame, dict[str, Any], pl.DataFrame | None]:
    """(votes, report, scored candidates or None): pairs, or candidates with "all" /
    "best-vs-worst"."""
    candidates = is_candidates(table)
    if gold is not None and "label" not in gold.columns:
        gold = gold_from_pairs(gold)  # a pairs table: chosen is the human label
    rubric = load_rubric(options.rubric)
    answer = make_answerer(options)
    report: dict[str, Any] = {}
    scored: pl.DataFrame | None = None
    async with open_clients(judges, options, client_options) as clients:
        if candidates and selection == "best-vs-worst" and "score" not in table.columns:
            # No score to pick best and worst by: the same judges rate each candidate alone.
            from prefdata.label.pointwise import ascore_candidates

            scoring = pointwise_rubric or pointwise_rubric_for(options.rubric).name
            scored, report["pointwise"] = await ascore_candidates(
                table,
                judges=list(clients),
                cache=cache,
                options=replace(options, rubric=scoring),
                progress=progress,
            )
            table = scored
        if candidates:
            # Selected here rather than in pair_items, to keep the counts of prompts that
            # yield no pair (and why) for the report.
            table, report["selection"] = select_pairs_with_report(
                table, selection=selection, max_pairs_per_prompt=max_pairs_per_prompt, seed=seed
            )
        items = pair_items(table)
        records = items.to_dicts()
        report = {
            "pairs": items.height,
            "orders": list(options.order_list),
            "rubric": rubric.name,
            "template_version": rubric.version,
            "judges": {},
            "calibration": {},
            **report,
        }
        rows: list[dict[str, Any]] = []
        total = len(records) * len(options.order_list) * len(clients)
        with progress_bar(total, progress, "judging") as tick:
            for client in clients:
                name = judge_name(client)
                mine: list[dict[str, Any]] = []
                ordered = list(records)
                if gold is not None and min_human_agreement is not None:
                    # Gold items first: the gate is decided before paying for the rest.
                    gold_ids = set(gold["item_id"].to_list())
                    ordered.sort(key=lambda r: r["item_id"] not in gold_ids)
                    n_gold = sum(1 for r in ordered if r["item_id"] in gold_ids)
                    mine += await judge_pairs(
                        client, ordered[:n_gold], rubric, options, cache, answer=answer, tick=tick
                    )
                    cal = calibration(conform(votes_frame(mine), "annotations"), gold)
                    stats = cal["judges"].get(name, {})
                    acc = stats.get("accuracy_without_ties")
                    report["calibration"][name] = stats
                    if acc is None or acc < min_human_agreement:
                        rows += mine
                        report["judges"][name] = {
                            "stopped": f"agreement with humans {acc} < {min_human_agreement} "
                            f"on {n_gold} gold pairs; the other pairs were not judged"
                        }
                        continue
                    ordered = ordered[n_gold:]
                mine += await judge_pairs(
                    client, ordered, rubric, options, cache, answer=answer, tick=tick
                )
                rows += mine
    votes = conform(votes_frame(rows), "annotations")
    for name, stats_ in judge_stats(votes, items).items():
        report["judges"].setdefault(name, {}).update(stats_.as_dict())
    report["cache"] = cache.stats.line()
    return votes, report, scored


def judged_pairs(candidates: pl.DataFrame, votes: pl.DataFrame, *, source: str) -> pl.DataFrame:
    """The pairs table behind judge votes on candidates: every pair of a prompt's distinct
    completions (`select_pairs_with_report`), kept where a vote names its pair_id.

    Input: candidates (`prompt_id`, `prompt`, `completion`) and the votes (`item_id`).
    Output: the pairs contract (confidence and margin unknown until consensus, n_votes 0),
    `source` as given, provenance {"from": "candidates"}.
    """
    from prefdata.io.importers.common import pairs_table

    selected, _ = select_pairs_with_report(candidates, selection="all")
    rows = selected.to_dicts()
    pairs = pairs_table(
        [{**r, "n_votes": 0, "provenance": {"from": "candidates"}} for r in rows], source=source
    )
    return pairs.filter(pl.col("pair_id").is_in(votes["item_id"].unique().implode()))

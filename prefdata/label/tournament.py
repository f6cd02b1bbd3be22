"""The budgeted tournament: from N candidates per prompt, judge only the pairs that find a
likely best and a likely worst, choosing each round's pairs from the last round's verdicts.

    votes, standings, report = tournament(
        candidates, judges=["anthropic:claude-sonnet-4-6"], cache=CallCache(),
        max_pairs_per_prompt=8,
    )

The algorithm (per prompt; one round of every prompt is judged together, as one batch):
1. Round 1: the prompt's distinct candidates in a seeded random order, paired off disjointly
   (c1-c2, c3-c4, ...). Each winner enters the winners' bracket, each loser the losers'
   bracket; with N odd the unpaired candidate enters both.
2. Each later round: in the winners' bracket neighbours meet and the loser leaves; in the
   losers' bracket neighbours meet and the *winner* leaves (an odd one out waits a round, and
   goes first in the next). Winners meet winners and losers meet losers, so the one left in
   each bracket is the likely best / the likely worst.
3. Final (`final=True`): the best against the worst, unless they already met: the pair a
   best-vs-worst data set wants, with the judge's own verdict on it.

Budget. A comparison is one pair judged by every judge in every order (calls = comparisons x
judges x orders). With a judge that orders the candidates consistently, the full tournament
finds the true best and the true worst in ceil(3N/2) - 2 comparisons (the known minimum for
finding both), plus at most one final (`max_comparisons`): N=4: 4-5 of the 6 pairs, N=8:
10-11 of 28, N=16: 22-23 of 120. `max_pairs_per_prompt` = K caps the comparisons of each
prompt and is never exceeded. Under the cap the winners' bracket comes first: round 1 plays
min(K, floor(N/2)) pairs (candidates left out of round 1 do not compete, and no best or worst
is named), a losers' match is played only with budget left after reserving what the winners'
bracket still needs, and the final comes last. So K >= N - 1 still finds the best, and
K >= ceil(3N/2) - 2 the worst too.

Who wins a match: the mean over judges of the pooled P(a is better) (`pool_orders`'s `p_a`,
the two orders averaged, which cancels a judge's position bias); above 0.5 side a wins, below
side b. Exactly 0.5 (a tie, or a judge naming opposite winners in the two orders) or no valid
vote at all (every call failed): a coin seeded by (seed, prompt, pair) decides, and the match
counts as undecided.

Output (votes, standings, report):
- votes: the annotations contract, one row per vote exactly as `judge` writes them
  (canonical sides a / b, `order`, `p_a`, tokens, ...), plus `bracket` (round1 / winners /
  losers / final) and `round` (the prompt's round, 1, 2, ...).
- standings: one row per prompt (of the input's `prompt_id`): `prompt_id` (the prompt's
  hash, `prefdata.ids.prompt_id`, the one the votes' item ids are made from: the pair of
  two completions is `ids.pair_id(prompt_id, x, y)`), `input_prompt_id` (the input's
  `prompt_id`, as text), `n_candidates` (distinct non-blank),
  `comparisons` (pairs judged), `all_pairs` (N(N-1)/2, what "all" would judge), `rounds`,
  `best`, `worst` (the completions; null when the budget ran out first; when a cyclic judge
  left one candidate at the end of both brackets it is the best and `worst` is null),
  `undecided` (matches decided by the coin).
- report: prompts, candidates, pairs, all_pairs, comparisons_max_per_prompt,
  comparisons_mean_per_prompt, budget, best_found, worst_found, cyclic, undecided_matches,
  final_matches, rounds, orders, rubric, template_version, per judge the figures of
  `judge_stats`, the cache line, and `selection` (as in `select_pairs_with_report`: the
  prompts with fewer than two distinct candidates, which play no match).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from prefdata import ids
from prefdata.errors import InputError
from prefdata.label.rubric import load_rubric
from prefdata.label.runner import JudgeOptions, judge_pairs, make_answerer, open_clients
from prefdata.label.selection import CandidateGroup, candidate_groups
from prefdata.label.verdicts import votes_frame
from prefdata.llm.base import Client
from prefdata.llm.cache import CallCache
from prefdata.progress import progress_bar, synced
from prefdata.quality.judge_eval import judge_stats
from prefdata.quality.pooling import pool_orders
from prefdata.schema import conform

__all__ = ["atournament", "max_comparisons", "tournament"]

_STANDINGS_SCHEMA: dict[str, Any] = {
    "prompt_id": pl.String,
    "input_prompt_id": pl.String,
    "n_candidates": pl.Int64,
    "comparisons": pl.Int64,
    "all_pairs": pl.Int64,
    "rounds": pl.Int64,
    "best": pl.String,
    "worst": pl.String,
    "undecided": pl.Int64,
}


def max_comparisons(n: int, *, final: bool = True) -> int:
    """Comparisons a full tournament of `n` distinct candidates makes at most:
    ceil(3n/2) - 2, plus the final when there is one (n <= 3: every pair meets anyway)."""
    if n < 2:
        return 0
    return (3 * n + 1) // 2 - 2 + (1 if final and n >= 4 else 0)


@dataclass
class _Match:
    x: str
    y: str
    bracket: str
    item_id: str = ""
    winner: str = ""
    loser: str = ""


def _neighbours(pool: list[str]) -> list[tuple[str, str]]:
    return [(pool[i], pool[i + 1]) for i in range(0, len(pool) - 1, 2)]


@dataclass
class _Prompt:
    """One prompt's tournament: its brackets and what it has spent."""

    group: CandidateGroup
    order: list[str]
    budget: int | None
    used: int = 0
    rounds: int = 0
    started: bool = False
    whole_field: bool = False  # every candidate played round 1 (or had the bye)
    bye: str | None = None
    winners: list[str] = field(default_factory=list)
    losers: list[str] = field(default_factory=list)
    met: set[frozenset[str]] = field(default_factory=set)
    undecided: int = 0
    finals: int = 0
    done: bool = False

    def schedule(self, final: bool) -> list[_Match]:
        """This round's matches within the budget; none means the tournament is over."""
        if self.done:
            return []
        left = len(self.order) ** 2 if self.budget is None else self.budget - self.used
        matches: list[_Match] = []
        if not self.started:
            pairs = _neighbours(self.order)
            take = pairs[: max(0, left)]
            matches = [_Match(x, y, "round1") for x, y in take]
            self.whole_field = bool(take) and len(take) == len(pairs)
            self.bye = self.order[-1] if self.whole_field and len(self.order) % 2 else None
        elif left > 0:
            w_pairs = _neighbours(self.winners)[:left]
            # Winners' matches still needed after this round: never spend them on losers.
            w_after = len(self.winners) - 1 - len(w_pairs)
            l_pairs = _neighbours(self.losers)[: max(0, left - len(w_pairs) - w_after)]
            matches = [_Match(x, y, "winners") for x, y in w_pairs]
            matches += [_Match(x, y, "losers") for x, y in l_pairs]
            best, worst = self.best, self.worst
            if (
                not matches
                and final
                and not self.finals
                and best is not None
                and worst is not None
                and frozenset((best, worst)) not in self.met
            ):
                matches = [_Match(best, worst, "final")]
        if not matches:
            self.done = True
            return []
        self.used += len(matches)
        self.rounds += 1
        self.met.update(frozenset((m.x, m.y)) for m in matches)
        return matches

    def settle(self, matches: list[_Match]) -> None:
        """Move the candidates on from this round's decided matches."""
        if not self.started:
            self.started = True
            extra = [self.bye] if self.bye is not None else []
            self.winners = [m.winner for m in matches] + extra
            self.losers = [m.loser for m in matches] + extra
            return
        played_w = {c for m in matches if m.bracket == "winners" for c in (m.x, m.y)}
        played_l = {c for m in matches if m.bracket == "losers" for c in (m.x, m.y)}
        # Whoever waited this round goes first, so the same candidate does not wait twice.
        self.winners = [c for c in self.winners if c not in played_w] + [
            m.winner for m in matches if m.bracket == "winners"
        ]
        self.losers = [c for c in self.losers if c not in played_l] + [
            m.loser for m in matches if m.bracket == "losers"
        ]
        self.finals += sum(m.bracket == "final" for m in matches)

    @property
    def best(self) -> str | None:
        return self.winners[0] if self.whole_field and len(self.winners) == 1 else None

    @property
    def worst(self) -> str | None:
        if not (self.whole_field and len(self.losers) == 1) or self.losers[0] == self.best:
            return None
        return self.losers[0]

    @property
    def cyclic(self) -> bool:
        return (
            self.whole_field
            and len(self.winners) == len(self.losers) == 1
            and self.winners[0] == self.losers[0]
        )


def _mean_p_a(votes: pl.DataFrame) -> dict[str, float]:
    """item_id -> mean over judges of the pooled P(a better); items without any left out."""
    pooled = pool_orders(votes).filter(pl.col("p_a").is_not_null())
    means = pooled.group_by("item_id").agg(pl.col("p_a").mean())
    return dict(zip(means["item_id"].to_list(), means["p_a"].to_list(), strict=True))


async def atournament(
    candidates: pl.DataFrame,
    *,
    judges: list[str | Client],
    cache: CallCache,
    options: JudgeOptions = JudgeOptions(),  # noqa: B008 - frozen, so one shared default is safe
    max_pairs_per_prompt: int | None = None,
    final: bool = True,
    seed: int = 0,
    client_options: dict[str, dict[str, Any]] | None = None,
    progress: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Judge a budgeted knockout per prompt; returns (votes, standings, report).
    `tournament` is the same without async.

    Input: candidates (`prompt_id`, `prompt`, `completion`; optional `answer`, the reference
    for the math rubric). The algorithm, its budget and the three outputs are described in
    the module docstring. Every call goes through `cache`, so a re-run replays the same
    rounds from the cache without a model call.

    Args:
        judges: backend:model, e.g. anthropic:claude-sonnet-4-6 (repeat for a panel); or clients
        options: how the calls are made and read (JudgeOptions)
        max_pairs_per_prompt: budget: pairs judged per prompt (default: the full tournament)
        final: end with best vs worst when they have not met
        seed: the round-1 draw and the coin for undecided matches
        client_options: library only: make_client options per backend, over those of `options`
        progress: a progress bar on stderr
    """
    orders = options.order_list
    if max_pairs_per_prompt is not None and max_pairs_per_prompt < 1:
        raise InputError(f"max_pairs_per_prompt must be >= 1, got {max_pairs_per_prompt}")
    the_rubric = load_rubric(options.rubric)
    states = []
    for g in candidate_groups(candidates, what="the tournament"):
        order = list(g.texts)
        # Seeded per prompt: adding prompts never changes another prompt's draw.
        random.Random(f"{seed}/{g.prompt_id}").shuffle(order)
        states.append(_Prompt(g, order, max_pairs_per_prompt))
    answer = make_answerer(options)
    upper = sum(
        min(max_comparisons(len(s.order), final=final), max_pairs_per_prompt or 1 << 62)
        for s in states
    )
    rows: list[dict[str, Any]] = []
    stage: dict[str, tuple[str, int]] = {}
    judged: dict[str, dict[str, Any]] = {}
    async with open_clients(judges, options, client_options) as clients:
        with progress_bar(upper * len(orders) * len(clients), progress, "tournament") as tick:
            while True:
                playing = [(s, s.schedule(final)) for s in states]
                playing = [(s, ms) for s, ms in playing if ms]
                if not playing:
                    break
                records: dict[str, dict[str, Any]] = {}
                for s, matches in playing:
                    pid = ids.prompt_id(s.group.prompt)
                    for m in matches:
                        m.item_id = ids.pair_id(pid, m.x, m.y)
                        a, b = ids.canonical_sides(m.x, m.y)
                        records.setdefault(
                            m.item_id,
                            {
                                "item_id": m.item_id,
                                "prompt_id": pid,
                                "prompt": s.group.prompt,
                                "a": a,
                                "b": b,
                                "reference": s.group.reference,
                            },
                        )
                        stage[m.item_id] = (m.bracket, s.rounds)
                todo = list(records.values())
                judged.update(records)
                this_round: list[dict[str, Any]] = []
                for client in clients:
                    this_round += await judge_pairs(
                        client, todo, the_rubric, options, cache, answer=answer, tick=tick
                    )
                rows += this_round
                p_a = _mean_p_a(votes_frame(this_round))
                for s, matches in playing:
                    for m in matches:
                        a, b = records[m.item_id]["a"], records[m.item_id]["b"]
                        p = p_a.get(m.item_id, 0.5)
                        # Opposite votes of equal confidence average to 0.5 only up to
                        # rounding (0.9 and 1 - 0.9): those are ties too.
                        if math.isclose(p, 0.5, abs_tol=1e-9):
                            s.undecided += 1
                            coin = random.Random(f"{seed}/{s.group.prompt_id}/{m.item_id}")
                            p = coin.choice((0.0, 1.0))
                        m.winner, m.loser = (a, b) if p > 0.5 else (b, a)
                    s.settle(matches)
    frame = votes_frame(rows)
    votes = conform(
        frame.with_columns(
            pl.Series("bracket", [stage[i][0] for i in frame["item_id"]], dtype=pl.String),
            pl.Series("round", [stage[i][1] for i in frame["item_id"]], dtype=pl.Int64),
        ),
        "annotations",
    )
    standings = pl.DataFrame(
        [
            {
                # The votes' prompt id (the hash of the prompt, as in their pair ids), so
                # that standings join votes; the input's own id beside it.
                "prompt_id": ids.prompt_id(s.group.prompt),
                "input_prompt_id": s.group.prompt_id,
                "n_candidates": len(s.order),
                "comparisons": s.used,
                "all_pairs": len(s.order) * (len(s.order) - 1) // 2,
                "rounds": s.rounds,
                "best": s.best,
                "worst": s.worst,
                "undecided": s.undecided,
            }
            for s in states
        ],
        schema=_STANDINGS_SCHEMA,
    )
    items = pl.DataFrame(
        {
            "item_id": list(judged),
            "a": [r["a"] for r in judged.values()],
            "b": [r["b"] for r in judged.values()],
        },
        schema={"item_id": pl.String, "a": pl.String, "b": pl.String},
    )
    report: dict[str, Any] = {
        "prompts": standings.height,
        "candidates": int(standings["n_candidates"].sum()),
        "pairs": len(judged),
        "all_pairs": int(standings["all_pairs"].sum()),
        "comparisons_max_per_prompt": max((s.used for s in states), default=0),
        "comparisons_mean_per_prompt": sum(s.used for s in states) / len(states) if states else 0.0,
        "budget": max_pairs_per_prompt,
        "best_found": int(standings["best"].is_not_null().sum()),
        "worst_found": int(standings["worst"].is_not_null().sum()),
        "cyclic": sum(s.cyclic for s in states),
        "undecided_matches": int(standings["undecided"].sum()),
        "final_matches": sum(s.finals for s in states),
        "rounds": max((s.rounds for s in states), default=0),
        "orders": list(orders),
        "rubric": the_rubric.name,
        "template_version": the_rubric.version,
        "judges": {name: st.as_dict() for name, st in judge_stats(votes, items).items()},
        "cache": cache.stats.line(),
        "selection": {
            "selection": "tournament",
            "prompts": len(states),
            "prompts_with_pairs": sum(len(s.order) >= 2 for s in states),
            "pairs": len(judged),
            "skipped": {"fewer_than_two_distinct": sum(len(s.order) < 2 for s in states)},
        },
    }
    return votes, standings, report


tournament = synced(atournament)

"""Pair selection from N candidates per prompt: the pointwise scoring pass (embedded SmolLM2
and the Anthropic / OpenAI wire protocols), best-vs-worst without a score column, and the
budgeted tournament against a judge with a known total order."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from prefdata import ids
from prefdata.cli import app
from prefdata.errors import InputError
from prefdata.io.importers.hhh import import_hhh
from prefdata.io.tables import read_table
from prefdata.label.estimate import estimate
from prefdata.label.pointwise import score_candidates
from prefdata.label.requests import build_score_request
from prefdata.label.rubric import RATINGS, load_pointwise_rubric
from prefdata.label.selection import pair_items, select_pairs_with_report
from prefdata.label.tournament import max_comparisons, tournament
from prefdata.llm.base import OnAnswer, Request, Response
from prefdata.llm.cache import CallCache
from prefdata.llm.local import LocalClient
from prefdata.quality.pooling import pool_orders
from tests.label.helpers import judge_votes
from tests.llm.conftest import FAST_RETRIES
from tests.llm.fake_server import FakeLLMServer

runner = CliRunner()

_PAIR = re.compile(
    r"\[Response A\]\n(.*?)\n\[End of Response A\].*?\[Response B\]\n(.*?)\n"
    r"\[End of Response B\]",
    re.DOTALL,
)
_ONE = re.compile(r"\[Response\]\n(.*?)\n\[End of Response\]", re.DOTALL)
_QUALITY = re.compile(r"quality=(\w+)")


def _quality(text: str) -> str:
    m = _QUALITY.search(text)
    assert m, f"every scripted candidate carries a quality marker: {text!r}"
    return m.group(1)


def scripted(body: dict[str, Any]) -> dict[str, Any] | str | None:
    """A judge with a known total order: a candidate's quality is its `quality=N` marker.
    Model "position-biased" always answers A. A marker `quality=bad` gets an invalid score."""
    text = str(body["messages"][-1]["content"])
    tool = body["tools"][0]["name"]
    if tool == "record_score":
        m = _ONE.search(text)
        assert m, "the pointwise prompt shows one [Response]"
        q = _quality(m.group(1))
        if q == "bad":
            return {"rationale": "Hard to say.", "score": "eight"}
        return {"rationale": "Scored by its quality.", "score": int(q)}
    assert tool == "record_verdict"
    m = _PAIR.search(text)
    assert m, "the pairwise prompt shows Response A and Response B"
    if body["model"] == "position-biased":
        return {"verdict": "A", "rationale": "The first.", "confidence": 0.9}
    qa, qb = int(_quality(m.group(1))), int(_quality(m.group(2)))
    verdict = "A" if qa > qb else "B" if qb > qa else "tie"
    return {"verdict": verdict, "rationale": "Higher quality.", "confidence": 0.9}


@pytest.fixture
def server(fake_server: FakeLLMServer) -> FakeLLMServer:
    fake_server.tool_answer = scripted
    return fake_server


def options(server: FakeLLMServer) -> dict[str, dict[str, Any]]:
    return {
        "anthropic": {"base_url": server.url, "retry_policy": FAST_RETRIES},
        "openai": {"base_url": server.url + "/v1", "retry_policy": FAST_RETRIES},
    }


def ranked_candidates(sizes: Sequence[int], seed: int = 7) -> pl.DataFrame:
    """Prompts with `n` candidates each; qualities 1..n in a shuffled order, lengths unrelated
    to quality (so a length-biased judge could not pass)."""
    rng = random.Random(seed)
    rows = []
    for p, n in enumerate(sizes):
        qualities = list(range(1, n + 1))
        rng.shuffle(qualities)
        for i, q in enumerate(qualities):
            padding = " and more" * rng.randrange(0, 6)
            rows.append(
                {
                    "prompt_id": f"p{p}",
                    "prompt": f"Question {p}?",
                    "completion": f"Answer {p}.{i} quality={q}{padding}",
                }
            )
    return pl.DataFrame(rows)


def pairs_per_prompt(cands: pl.DataFrame, votes: pl.DataFrame) -> Counter[str]:
    """Distinct judged pairs per prompt_id, found from the votes' item ids alone."""
    owner = {}
    for (pid,), group in cands.group_by("prompt_id"):
        messages = [{"role": "user", "content": group["prompt"][0]}]
        for x, y in itertools.combinations(group["completion"].unique().to_list(), 2):
            owner[ids.pair_id(ids.prompt_id(messages), x, y)] = str(pid)
    return Counter(owner[i] for i in votes["item_id"].unique())


def by_quality(cands: pl.DataFrame, pid: str) -> list[str]:
    texts = cands.filter(pl.col("prompt_id") == pid)["completion"].to_list()
    return sorted(texts, key=lambda t: int(_quality(t)))


# ---- pointwise scoring on the embedded model ----------------------------------------------


class CountingClient:
    """The real local client, counting the requests that reach the model."""

    def __init__(self, inner: LocalClient) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.model = inner.model
        self.capabilities = inner.capabilities
        self.endpoint = inner.endpoint
        self.requests = 0

    async def complete(
        self, requests: Sequence[Request], on_answer: OnAnswer | None = None
    ) -> list[Response]:
        self.requests += len(requests)
        return await self.inner.complete(requests, on_answer)

    async def aclose(self) -> None:
        return None


@pytest.fixture(scope="module")
def hhh_candidates(shared_data: Path) -> pl.DataFrame:
    """The three shortest HHH pairs as candidates (two per prompt), plus a blank and a repeat."""
    pairs = import_hhh(shared_data / "hhh_alignment" / "hhh_alignment_eval.json").tables["pairs"]
    short = pairs.sort(pl.col("chosen").str.len_chars() + pl.col("rejected").str.len_chars())
    short = short.head(3)
    cands = pl.concat(
        [
            short.select("prompt_id", "prompt", pl.col(side).alias("completion"))
            for side in ("chosen", "rejected")
        ]
    )
    blank = cands.head(1).with_columns(pl.lit("   ").alias("completion"))
    return pl.concat([cands, blank, cands.head(1)])


@pytest.mark.slow
def test_pointwise_local_scores_are_expectations_cached_and_deterministic(
    hhh_candidates: pl.DataFrame, tmp_path: Path
) -> None:
    local = LocalClient("smollm2", batch_size=8)
    counting = CountingClient(local)
    cache = CallCache(tmp_path / "c.sqlite")
    scored, report = score_candidates(hhh_candidates, judges=[counting], cache=cache)
    assert counting.requests == 6  # the repeat is rated once, the blank never
    assert scored.height == hhh_candidates.height == 8
    blank = scored.filter(pl.col("completion").str.strip_chars() == "")
    assert blank["score"].to_list() == [None]
    assert blank["score_error"].to_list() == ["empty completion"]
    ok = scored.filter(pl.col("score").is_not_null())
    assert ok.height == 7 and ok["score_error"].null_count() == 7
    for row in ok.to_dicts():
        raw = json.loads(row["score_raw"])["local:smollm2"]
        probs = [raw[k] for k in RATINGS]
        assert sum(probs) == pytest.approx(1.0, abs=1e-9)
        assert all(0 <= p <= 1 for p in probs) and 0 < raw["mass"] <= 1
        expected = sum(int(k) * raw[k] for k in RATINGS)
        assert raw["expected"] == pytest.approx(expected)
        assert row["score"] == pytest.approx((expected - 1) / 8)
        assert 0.0 <= row["score"] <= 1.0
    # Not a constant: the model's ratings differ between candidates.
    assert ok["score"].n_unique() > 1
    # The repeated text got the score of its first occurrence.
    assert scored["completion"][0] == scored["completion"][-1]
    assert scored["score"][0] == scored["score"][-1]
    figures = report["judges"]["local:smollm2"]
    assert figures["calls"] == 6 and figures["errors"] == 0 and report["new_calls"] == 6

    # A second run on the same cache: no request reaches the model, the same scores.
    again, again_report = score_candidates(hhh_candidates, judges=[counting], cache=cache)
    assert counting.requests == 6 and again_report["new_calls"] == 0
    assert again_report["cache_hits"] == 6
    assert again["score"].to_list() == scored["score"].to_list()
    cache.close()
    # Deterministic: the same requests asked afresh (other batch, no cache) read the same.
    rubric = load_pointwise_rubric("helpfulness")
    rows = ok.head(2).to_dicts()
    requests = [
        build_score_request(rubric, {**r, "item_id": "x"}, capabilities=local.capabilities)
        for r in rows
    ]
    for r, response in zip(rows, local.complete_sync(requests), strict=True):
        stored = json.loads(r["score_raw"])["local:smollm2"]
        assert response.choice_probs == pytest.approx({k: stored[k] for k in RATINGS}, abs=1e-6)


# ---- pointwise through the wire protocols, then best-vs-worst ----------------------------


def test_best_vs_worst_without_scores_rates_first_then_judges_the_extremes(
    server: FakeLLMServer, api_key: str, call_cache: CallCache
) -> None:
    cands = pl.DataFrame(
        {
            "prompt_id": ["p1"] * 3 + ["p2"] * 3,
            "prompt": ["Q1?"] * 3 + ["Q2?"] * 3,
            "completion": [
                "Fine answer quality=5",
                "Best answer quality=8 with a few more words",
                "Poor quality=3",
                "Only valid quality=6",
                "Broken one quality=bad",
                "Broken two quality=bad here",
            ],
        }
    )
    votes, report = judge_votes(
        cands,
        judges=["anthropic:scorer"],
        cache=call_cache,
        client_options=options(server),
        selection="best-vs-worst",
    )
    point = report["pointwise"]
    assert point["candidates"] == 6 and point["scored"] == 4 and point["not_scored"] == 2
    assert point["judges"]["anthropic:scorer"]["errors"] == 2
    assert (
        "score must be an integer 1-9" in point["judges"]["anthropic:scorer"]["error_examples"][0]
    )
    # p2 has one valid score: no pair. p1: best (8) against worst (3), both orders.
    assert report["pairs"] == 1 and votes.height == 2
    assert server.served("messages") == 6 + 2
    (verdict,) = pool_orders(votes).to_dicts()
    items = pair_items(
        pl.DataFrame(
            {
                "prompt": ["Q1?"],
                "chosen": [cands["completion"][1]],
                "rejected": [cands["completion"][2]],
            }
        )
    ).to_dicts()[0]
    assert verdict["item_id"] == items["item_id"]
    winner = items[verdict["label"]]
    assert "quality=8" in winner and verdict["consistent"]

    # The scoring pass on its own: the columns, the exact 0-1 mapping, the error row.
    from prefdata.label.pointwise import score_candidates as score

    scored, _ = score(
        cands, judges=["anthropic:scorer"], cache=call_cache, client_options=options(server)
    )
    # The valid ratings from the call cache; the two invalid ones ("eight") are asked again:
    # only valid answers are cached.
    assert server.served("messages") == 8 + 2
    assert scored["score"].to_list()[:4] == [0.5, 0.875, 0.25, 0.625]
    assert scored["score"].to_list()[4:] == [None, None]
    assert scored["score_error"][4].startswith("anthropic:scorer: score must be an integer 1-9")
    assert json.loads(scored["score_raw"][4])["anthropic:scorer"]["score"] == "eight"

    # OpenAI-compatible servers: the same schema as JSON output; a valid integer 1-9.
    oa, oa_report = score(
        cands.head(2), judges=["openai:judge-x"], cache=call_cache, client_options=options(server)
    )
    body = server.entries("chat.completions")[0].body
    assert body["response_format"]["json_schema"]["schema"]["properties"]["score"]["maximum"] == 9
    for row in oa.to_dicts():
        (raw,) = json.loads(row["score_raw"]).values()  # one judge, named with its server
        rating = raw["score"]
        assert row["score"] == pytest.approx((rating - 1) / 8) and 1 <= rating <= 9
    (figures,) = oa_report["judges"].values()
    assert figures["calls"] == 2 and figures["errors"] == 0


# ---- the tournament ----------------------------------------------------------------------


def test_tournament_finds_the_true_best_and_worst_within_budget(
    server: FakeLLMServer, api_key: str, tmp_path: Path
) -> None:
    cands = ranked_candidates([8, 8, 8, 4, 4, 3, 2, 1])
    cache = CallCache(tmp_path / "c.sqlite")
    votes, standings, report = tournament(
        cands, judges=["anthropic:ordered"], cache=cache, client_options=options(server)
    )
    counted = pairs_per_prompt(cands, votes)
    verdict_of = {v["item_id"]: v for v in pool_orders(votes).to_dicts()}
    for row in standings.to_dicts():
        assert counted.get(row["input_prompt_id"], 0) == row["comparisons"]
        pid, n = row["input_prompt_id"], row["n_candidates"]
        ordered = by_quality(cands, pid)
        assert row["comparisons"] <= max_comparisons(n)
        # Standings join votes: `prompt_id` is the one the votes' pair ids are made from.
        question = [{"role": "user", "content": f"Question {pid[1:]}?"}]
        assert row["prompt_id"] == ids.prompt_id(question)
        if n >= 2:
            assert row["best"] == ordered[-1] and row["worst"] == ordered[0]
            assert row["comparisons"] >= (3 * n + 1) // 2 - 2
            # With a final, best and worst always meet: their vote is found by the ids.
            met = verdict_of[ids.pair_id(row["prompt_id"], row["best"], row["worst"])]
            assert (
                ids.canonical_sides(row["best"], row["worst"])[0 if met["label"] == "a" else 1]
                == row["best"]
            )
        else:
            assert row["best"] is None and row["comparisons"] == 0
        assert row["undecided"] == 0
    eight = standings.filter(pl.col("n_candidates") == 8)
    four = standings.filter(pl.col("n_candidates") == 4)
    assert eight["all_pairs"].to_list() == [28] * 3 and four["all_pairs"].to_list() == [6] * 2
    assert set(eight["comparisons"].to_list()) <= {10, 11}
    assert set(four["comparisons"].to_list()) <= {4, 5}
    # Every judged pair: both orders, the canonical labels say the higher quality won.
    assert votes.height == 2 * report["pairs"] == server.served("messages")
    assert report["pairs"] == int(standings["comparisons"].sum())
    verdicts = pool_orders(votes)
    assert verdicts["consistent"].all()
    judged = votes.unique("item_id")
    assert set(judged["bracket"]) == {"round1", "winners", "losers", "final"}
    assert report["best_found"] == report["worst_found"] == 7  # all but the 1-candidate prompt
    assert report["judges"]["anthropic:ordered"]["position_consistency"] == 1.0

    # Resumable: the same run again is answered from the call cache, round by round.
    served = server.served("messages")
    again_votes, again, _ = tournament(
        cands, judges=["anthropic:ordered"], cache=cache, client_options=options(server)
    )
    assert server.served("messages") == served
    assert again.to_dicts() == standings.to_dicts()
    assert sorted(again_votes["item_id"]) == sorted(votes["item_id"])
    cache.close()


def test_tournament_budget_is_never_exceeded_and_the_winners_bracket_comes_first(
    server: FakeLLMServer, api_key: str, call_cache: CallCache
) -> None:
    cands = ranked_candidates([8, 8, 4], seed=3)
    kw: dict[str, Any] = {
        "judges": ["anthropic:ordered"],
        "cache": call_cache,
        "client_options": options(server),
    }
    _, full, _ = tournament(cands, **kw)
    full_count = dict(zip(full["input_prompt_id"], full["comparisons"], strict=True))
    # (budget, prompts with a best, prompts with a worst): N=8 needs 7 for the best, 10 for
    # both; N=4 needs 3 for the best, 4 for both.
    for budget, best_found, worst_found in ((3, 1, 0), (4, 1, 1), (7, 3, 1), (10, 3, 3)):
        votes, standings, report = tournament(cands, max_pairs_per_prompt=budget, **kw)
        counted = pairs_per_prompt(cands, votes)
        for row in standings.to_dicts():
            pid, n = row["input_prompt_id"], row["n_candidates"]
            assert counted[pid] == row["comparisons"] == min(budget, full_count[pid])
            ordered = by_quality(cands, pid)
            # K >= N - 1 always finds the true best; fewer never names one.
            assert row["best"] == (ordered[-1] if budget >= n - 1 else None), (budget, n)
            assert row["worst"] in (None, ordered[0])
        assert (report["best_found"], report["worst_found"]) == (best_found, worst_found)
        assert report["budget"] == budget


def test_tournament_with_a_position_biased_judge_stays_in_budget(
    server: FakeLLMServer, api_key: str, call_cache: CallCache
) -> None:
    cands = ranked_candidates([6, 5], seed=1)
    _, standings, report = tournament(
        cands,
        judges=["anthropic:position-biased"],
        cache=call_cache,
        client_options=options(server),
        max_pairs_per_prompt=6,
    )
    # Both orders say "first shown": every match is a tie, decided by the seeded coin.
    assert report["undecided_matches"] == report["pairs"] == int(standings["comparisons"].sum())
    assert standings["comparisons"].to_list() == [6, 6]
    again = tournament(
        cands,
        judges=["anthropic:position-biased"],
        cache=call_cache,
        client_options=options(server),
        max_pairs_per_prompt=6,
    )[1]
    assert again.to_dicts() == standings.to_dicts()  # the coin is seeded


def test_batch_api_one_batch_per_round_and_for_the_scoring_pass(
    server: FakeLLMServer, api_key: str, call_cache: CallCache, tmp_path: Path
) -> None:
    cands = ranked_candidates([4, 4], seed=2)
    kw: dict[str, Any] = {
        "judges": ["anthropic:ordered"],
        "cache": call_cache,
        "client_options": options(server),
        "batch": True,
        "poll_interval": 0.05,
    }
    # Through judge(): the tournament's votes and report.
    votes, report = judge_votes(cands, selection="tournament", **kw)
    rounds = report["rounds"]
    assert rounds in (2, 3)  # round 1, the two brackets, and a final where one is needed
    assert server.served("batches.create") == rounds and server.served("messages") == 0
    assert votes.height == 2 * report["pairs"] and report["best_found"] == 2
    # every round's state file (beside the call cache) was collected and removed
    assert not list(call_cache.path.parent.glob("batches/*.json"))
    # best-vs-worst without scores: one batch to rate, one to judge. (On the same cache the
    # pairs would be answered from it: the tournament has judged best against worst.)
    fresh = CallCache(tmp_path / "fresh.sqlite")
    votes, report = judge_votes(cands, selection="best-vs-worst", **{**kw, "cache": fresh})
    fresh.close()
    assert server.served("batches.create") == rounds + 2
    assert report["pointwise"]["scored"] == 8 and report["pairs"] == 2
    winners = [
        item[v["label"]]
        for v in pool_orders(votes).to_dicts()
        for item in pair_items(cands).to_dicts()
        if item["item_id"] == v["item_id"]
    ]
    assert sorted(winners) == sorted(by_quality(cands, p)[-1] for p in ("p0", "p1"))


def test_estimate_counts_pointwise_and_tournament_calls(server: FakeLLMServer) -> None:
    cands = ranked_candidates([8, 8, 4])
    plan = estimate(
        cands, judges=["anthropic:claude-sonnet-4-6", "local:smollm2"], selection="tournament"
    )
    assert plan["pairs"] == 11 + 11 + 5 and plan["pairs_upper_bound"] is True
    assert plan["calls_per_judge"] == 2 * 27 and plan["pointwise_calls_per_judge"] == 0
    assert plan["all_pairs"] == 28 + 28 + 6
    capped = estimate(
        cands, judges=["local:smollm2"], selection="tournament", max_pairs_per_prompt=6
    )
    assert capped["pairs"] == 6 + 6 + 5
    bvw = estimate(cands, judges=["anthropic:claude-sonnet-4-6"], selection="best-vs-worst")
    assert bvw["pointwise_calls_per_judge"] == 20 and bvw["pairs"] == 3
    assert bvw["calls_per_judge"] == 20 + 3 * 2
    assert bvw["approx_output_tokens_per_judge"] == 26 * 150
    sonnet = bvw["judges"]["anthropic:claude-sonnet-4-6"]
    expected = (
        bvw["approx_input_tokens_per_judge"] * 3 + bvw["approx_output_tokens_per_judge"] * 15
    ) / 1e6
    assert sonnet["usd_online_no_cache"] == pytest.approx(expected, rel=1e-4)
    scored = estimate(
        cands.with_columns(pl.lit(1.0).alias("score")),
        judges=["local:smollm2"],
        selection="best-vs-worst",
    )
    assert scored["pointwise_calls_per_judge"] == 0 and scored["pairs"] == 0  # all tied
    assert server.count() == 0


# ---- the CLI -----------------------------------------------------------------------------


def test_cli_tournament(server: FakeLLMServer, api_key: str, tmp_path: Path) -> None:
    cands = ranked_candidates([8, 4, 1], seed=5)
    data = tmp_path / "cands.parquet"
    cands.write_parquet(data)
    out = tmp_path / "votes.parquet"
    args = [
        "judge",
        str(data),
        "-o",
        str(out),
        "--judge",
        "anthropic:claude-sonnet-4-6",
        "--base-url",
        server.url,
        "--selection",
        "tournament",
        "--cache",
        str(tmp_path / "c.sqlite"),
    ]
    est = runner.invoke(app, [*args, "--estimate"])
    assert est.exit_code == 0, est.output
    plan = json.loads(est.stdout)
    assert plan["calls_per_judge"] == 2 * (11 + 5) and plan["all_pairs"] == 28 + 6
    assert server.count() == 0
    result = runner.invoke(app, [*args, "--max-pairs-per-prompt", "7"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    standings = read_table(tmp_path / "votes.standings.parquet")
    votes = read_table(out)
    assert standings["input_prompt_id"].to_list() == ["p0", "p1", "p2"]
    used = standings["comparisons"].to_list()
    assert used[0] == 7 and used[1] in (4, 5) and used[2] == 0  # 5: a final was played
    assert pairs_per_prompt(cands, votes) == {
        r["input_prompt_id"]: r["comparisons"] for r in standings.to_dicts() if r["comparisons"]
    }
    # Seven comparisons find the best of eight, not yet the worst; four candidates get both.
    assert standings["best"].to_list() == [
        by_quality(cands, "p0")[-1],
        by_quality(cands, "p1")[-1],
        None,
    ]
    assert standings["worst"].to_list() == [None, by_quality(cands, "p1")[0], None]
    assert votes.height == 2 * int(standings["comparisons"].sum()) == server.served("messages")
    assert report["pairs"] == int(standings["comparisons"].sum())
    assert report["judges"]["anthropic:claude-sonnet-4-6"]["position_consistency"] == 1.0
    assert read_table(tmp_path / "votes.verdicts.parquet").height == report["pairs"]


def test_cli_best_vs_worst_without_scores(
    server: FakeLLMServer, api_key: str, tmp_path: Path
) -> None:
    cands = ranked_candidates([5, 4, 1], seed=11)
    data = tmp_path / "cands.jsonl"
    cands.write_ndjson(data)
    out = tmp_path / "votes.parquet"
    args = [
        "judge",
        str(data),
        "-o",
        str(out),
        "--judge",
        "anthropic:claude-sonnet-4-6",
        "--selection",
        "best-vs-worst",
        "--base-url",
        server.url,
        "--cache",
        str(tmp_path / "c.sqlite"),
    ]
    est = runner.invoke(app, [*args, "--estimate"])
    assert est.exit_code == 0, est.output
    plan = json.loads(est.stdout)
    assert plan["pointwise_calls_per_judge"] == 10 and plan["calls_per_judge"] == 10 + 2 * 2
    assert server.count() == 0
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert server.served("messages") == 10 + 2 * 2
    scores = read_table(tmp_path / "votes.scores.parquet")
    assert scores.height == 10 and scores["score"].null_count() == 0
    for text, score in zip(scores["completion"], scores["score"], strict=True):
        assert score == pytest.approx((int(_quality(text)) - 1) / 8)
    verdicts = read_table(tmp_path / "votes.verdicts.parquet")
    assert verdicts.height == 2 and verdicts["consistent"].all()
    # The judged pairs are exactly best vs worst of the two prompts with candidates to pair.
    extremes = pl.DataFrame(
        [
            {
                "prompt": f"Question {p}?",
                "chosen": by_quality(cands, f"p{p}")[-1],
                "rejected": by_quality(cands, f"p{p}")[0],
            }
            for p in (0, 1)
        ]
    )
    expected = pair_items(extremes)
    assert set(read_table(out)["item_id"]) == set(expected["item_id"])
    for v in verdicts.to_dicts():
        item = expected.filter(pl.col("item_id") == v["item_id"]).row(0, named=True)
        assert (
            item[v["label"]] == extremes.filter(pl.col("chosen") == item[v["label"]])["chosen"][0]
        )


# ---- prompt ids, skipped prompts, refused options ------------------------------------------


def test_integer_prompt_ids_are_scored_and_paired(
    server: FakeLLMServer, api_key: str, call_cache: CallCache
) -> None:
    cands = pl.DataFrame(
        {
            "prompt_id": [7, 7, 7, 8, 8],
            "prompt": ["Q7?"] * 3 + ["Q8?"] * 2,
            "completion": [
                "Middle quality=5",
                "Top quality=9",
                "Low quality=2",
                "Good quality=7",
                "Weak quality=3",
            ],
        },
        schema_overrides={"prompt_id": pl.Int64},
    )
    kw: dict[str, Any] = {
        "judges": ["anthropic:scorer"],
        "cache": call_cache,
        "client_options": options(server),
    }
    scored, report = score_candidates(cands, **kw)
    assert report["scored"] == 5 and report["not_scored"] == 0
    assert scored["score"].to_list() == [0.5, 1.0, 0.125, 0.75, 0.25]
    assert scored["score_error"].null_count() == 5
    assert scored["prompt_id"].dtype == pl.Int64  # the input's column is left as it was
    votes, jreport = judge_votes(cands, selection="best-vs-worst", **kw)
    assert server.served("messages") == 5 + 2 * 2  # the scores again from the cache
    assert jreport["pairs"] == 2 and jreport["selection"]["prompts_with_pairs"] == 2
    winners = {
        item[v["label"]]
        for v in pool_orders(votes).to_dicts()
        for item in pair_items(
            pl.DataFrame(
                {
                    "prompt": ["Q7?", "Q8?"],
                    "chosen": ["Top quality=9", "Good quality=7"],
                    "rejected": ["Low quality=2", "Weak quality=3"],
                }
            )
        ).to_dicts()
        if item["item_id"] == v["item_id"]
    }
    assert winners == {"Top quality=9", "Good quality=7"}


def skip_candidates() -> pl.DataFrame:
    """One prompt of each kind: one distinct text (a repeat and a blank), one score of two,
    two equal scores, and a prompt whose best text is repeated with two scores."""
    rows = [
        ("one", "Same quality=5", 0.5),
        ("one", "Same quality=5", 0.9),
        ("one", "   ", 0.1),
        ("unscored", "X quality=4", 0.3),
        ("unscored", "Y quality=6", None),
        ("tied", "T1 quality=5", 0.5),
        ("tied", "T2 quality=6", 0.5),
        ("ok", "Mid quality=5", 0.5),
        ("ok", "Top quality=9", 0.9),
        ("ok", "Low quality=1", 0.1),
        ("ok", "Top quality=9", 0.7),
    ]
    return pl.DataFrame(
        {
            "prompt_id": [r[0] for r in rows],
            "prompt": [f"About {r[0]}?" for r in rows],
            "completion": [r[1] for r in rows],
            "score": [r[2] for r in rows],
        }
    )


def test_select_pairs_counts_the_prompts_that_give_no_pair(
    server: FakeLLMServer, api_key: str, call_cache: CallCache
) -> None:
    cands = skip_candidates()
    pairs, report = select_pairs_with_report(cands, selection="best-vs-worst")
    assert pairs.select("prompt_id", "chosen", "rejected").rows() == [
        ("ok", "Top quality=9", "Low quality=1")
    ]
    assert report == {
        "selection": "best-vs-worst",
        "prompts": 4,
        "prompts_with_pairs": 1,
        "pairs": 1,
        "skipped": {"fewer_than_two_distinct": 1, "fewer_than_two_scored": 1, "all_equal": 1},
    }
    every, every_report = select_pairs_with_report(cands, selection="all")
    assert every.height == 1 + 1 + 3  # unscored, tied, ok (three distinct texts)
    assert every_report["skipped"] == {
        "fewer_than_two_distinct": 1,
        "fewer_than_two_scored": 0,
        "all_equal": 0,
    }

    # Through judge(): the same counts in report["selection"], only the one pair judged.
    votes, jreport = judge_votes(
        cands,
        judges=["anthropic:ordered"],
        cache=call_cache,
        client_options=options(server),
        selection="best-vs-worst",
    )
    assert jreport["selection"] == report
    assert jreport["pairs"] == 1 and votes.height == 2 == server.served("messages")


def test_tournament_refuses_gold_alone(
    server: FakeLLMServer, api_key: str, call_cache: CallCache
) -> None:
    cands = ranked_candidates([3])
    gold = pl.DataFrame(
        {
            "prompt": ["Question 0?"],
            "chosen": [by_quality(cands, "p0")[-1]],
            "rejected": [by_quality(cands, "p0")[0]],
        }
    )
    with pytest.raises(InputError, match="gold labels are not used with selection 'tournament'"):
        judge_votes(
            cands,
            judges=["anthropic:ordered"],
            cache=call_cache,
            client_options=options(server),
            selection="tournament",
            gold=gold,
        )
    assert server.count() == 0


def test_tournament_report_counts_prompts_without_a_match(
    server: FakeLLMServer, api_key: str, call_cache: CallCache
) -> None:
    _, standings, report = tournament(
        ranked_candidates([3, 1, 1]),
        judges=["anthropic:ordered"],
        cache=call_cache,
        client_options=options(server),
    )
    assert standings["comparisons"].to_list() == [3, 0, 0]
    assert report["selection"]["skipped"] == {"fewer_than_two_distinct": 2}
    assert report["selection"]["prompts_with_pairs"] == 1

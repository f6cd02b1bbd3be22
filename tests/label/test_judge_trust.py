"""The judge and the call cache never pay twice for the wrong reason, never turn an error into a
label: the cache key covers the endpoint, only valid answers are cached, a run whose calls
failed says so with its exit status, a pair judged in one order only is set aside, and a
panel can ask several endpoints. The judges are the real SDK clients against the local
wire-protocol server (tests/llm/fake_server.py), scripted with known habits."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from prefdata.cli import app
from prefdata.io.tables import read_table
from prefdata.llm.base import Params, Request
from prefdata.llm.cache import CallCache
from prefdata.llm.factory import make_client, parse_spec
from prefdata.quality.consensus import consensus, pairs_from_consensus
from prefdata.quality.pooling import pool_orders
from tests.label.helpers import judge_votes
from tests.llm.conftest import FAST_RETRIES, TEST_KEY
from tests.llm.fake_server import FakeLLMServer

runner = CliRunner()


def pairs_table(n: int, tag: str = "") -> pl.DataFrame:
    rows = [
        {"prompt": f"Question {tag}{i}?", "chosen": f"GOOD answer {i}.", "rejected": f"bad {i}."}
        for i in range(n)
    ]
    return pl.DataFrame(rows)


def first_shown(body: dict[str, Any]) -> str:
    text = str(body["messages"][-1]["content"])
    return text.split("[Response A]\n", 1)[1].split("\n[End of Response A]", 1)[0]


def good_judge(body: dict[str, Any]) -> dict[str, Any]:
    """A consistent judge: it names the GOOD answer, whichever position it is shown in."""
    verdict = "A" if "GOOD" in first_shown(body) else "B"
    return {"verdict": verdict, "rationale": "The good one.", "confidence": 0.9}


def anthropic_options(server: FakeLLMServer) -> dict[str, dict[str, Any]]:
    return {"anthropic": {"base_url": server.url, "retry_policy": FAST_RETRIES}}


def cached_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM calls").fetchone()[0])


# ---- 3. the cache key covers backend, endpoint, model, parameters, the request -------------


def test_one_model_name_behind_two_endpoints_never_shares_answers(
    api_key: str, tmp_path: Path
) -> None:
    cache = CallCache(tmp_path / "calls.sqlite")
    pairs = pairs_table(3)
    with (
        FakeLLMServer(api_key=TEST_KEY, tool_answer=good_judge) as one,
        FakeLLMServer(api_key=TEST_KEY, tool_answer=good_judge) as two,
    ):
        judge_votes(
            pairs, judges=["anthropic:same"], cache=cache, client_options=anthropic_options(one)
        )
        judge_votes(
            pairs, judges=["anthropic:same"], cache=cache, client_options=anthropic_options(two)
        )
        assert one.served("messages") == two.served("messages") == 6
        # The same endpoint again: everything from the cache.
        judge_votes(
            pairs, judges=["anthropic:same"], cache=cache, client_options=anthropic_options(two)
        )
        assert two.served("messages") == 6
    cache.close()
    # The key itself: each part changes it.
    request = Request(messages=({"role": "user", "content": "Hi"},))
    keys = {
        request.cache_key("anthropic", "http://a", "m"),
        request.cache_key("anthropic", "http://b", "m"),
        request.cache_key("openai", "http://a", "m"),
        request.cache_key("anthropic", "http://a", "m2"),
        Request(messages=request.messages, params=Params(temperature=0.1)).cache_key(
            "anthropic", "http://a", "m"
        ),
        Request(messages=request.messages, system="S").cache_key("anthropic", "http://a", "m"),
    }
    assert len(keys) == 6


# ---- 4. only valid answers are cached ---------------------------------------------------


def test_an_invalid_verdict_or_a_missing_tool_call_is_not_cached(
    api_key: str, tmp_path: Path
) -> None:
    def habits(body: dict[str, Any]) -> dict[str, Any] | str:
        if body["model"] == "malformed":
            return {"verdict": "Response A, probably", "rationale": "A"}
        if body["model"] == "refuses":
            return "I would rather not compare these."
        return good_judge(body)

    path = tmp_path / "calls.sqlite"
    pairs = pairs_table(4)
    judges = ["anthropic:malformed", "anthropic:refuses", "anthropic:good"]
    with FakeLLMServer(api_key=TEST_KEY, tool_answer=habits) as server:
        for run in (1, 2):
            cache = CallCache(path)
            votes, _ = judge_votes(
                pairs, judges=judges, cache=cache, client_options=anthropic_options(server)
            )
            cache.close()
            bad = votes.filter(pl.col("annotator") != "anthropic:good")
            assert bad["error"].null_count() == 0 and bad["label"].null_count() == 16
            # Every run asks the two bad judges again; the good judge's answers are cached.
            served = Counter(e.body["model"] for e in server.entries("messages"))
            assert served == {"malformed": 8 * run, "refuses": 8 * run, "good": 8}
    assert cached_rows(path) == 8


def test_an_invalid_score_is_not_cached(api_key: str, tmp_path: Path) -> None:
    from prefdata.label.pointwise import score_candidates

    cands = pl.DataFrame(
        {"prompt_id": ["p"] * 2, "prompt": ["Q?"] * 2, "completion": ["one", "two"]}
    )
    with FakeLLMServer(
        api_key=TEST_KEY, tool_answer=lambda body: {"rationale": "x", "score": "eight"}
    ) as server:
        for run in (1, 2):
            cache = CallCache(tmp_path / "calls.sqlite")
            scored, _ = score_candidates(
                cands,
                judges=["anthropic:scorer"],
                cache=cache,
                client_options=anthropic_options(server),
            )
            cache.close()
            assert scored["score"].null_count() == 2
            assert server.served("messages") == 2 * run
    assert cached_rows(tmp_path / "calls.sqlite") == 0


# ---- 5. a run whose calls failed exits non-zero ------------------------------------------


def judge_args(data: Path, out: Path, server: FakeLLMServer, *extra: str) -> list[str]:
    return [
        "judge",
        str(data),
        "-o",
        str(out),
        "--judge",
        "anthropic:judge-x",
        "--base-url",
        server.url,
        "--cache",
        str(out.with_suffix(".sqlite")),
        "--client-options",
        'anthropic={"max_retries": 0}',
        "--no-progress",
        *extra,
    ]


def test_a_run_whose_calls_failed_exits_non_zero_with_a_summary(
    api_key: str, tmp_path: Path
) -> None:
    data = tmp_path / "pairs.parquet"
    pairs = pairs_table(12)
    # Every call of one pair is refused with 529: 2 of 24 calls (8%) fail.
    pairs = pairs.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.col("prompt") + " [[fault:529]]")
        .otherwise(pl.col("prompt"))
        .alias("prompt")
    )
    pairs.write_parquet(data)
    with FakeLLMServer(api_key=TEST_KEY, tool_answer=good_judge) as server:
        out = tmp_path / "votes.parquet"
        result = runner.invoke(app, judge_args(data, out, server))
        assert result.exit_code == 1, result.output
        assert "2 of 24 judge calls failed" in result.output
        assert read_table(out).height == 24  # written first: nothing is lost
        report = json.loads(result.stdout)
        assert report["failures"]["failed"] == 2 and report["failures"]["calls"] == 24

        out2 = tmp_path / "votes2.parquet"
        result = runner.invoke(app, judge_args(data, out2, server, "--max-failed-share", "0.1"))
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["failures"]["failed"] == 2

        # Every call fails: exit non-zero whatever the threshold.
        every = tmp_path / "all.parquet"
        pairs.with_columns(pl.col("prompt") + " [[fault:529]]").write_parquet(every)
        out3 = tmp_path / "votes3.parquet"
        result = runner.invoke(app, judge_args(every, out3, server, "--max-failed-share", "1"))
        assert result.exit_code == 1, result.output
        assert "every judge call failed" in result.output


# ---- 6. one failed order must not let the other decide ------------------------------------


def test_a_failed_order_is_asked_again_and_a_lone_order_is_set_aside(
    api_key: str, call_cache: CallCache
) -> None:
    asked: Counter[str] = Counter()

    def flaky(body: dict[str, Any]) -> dict[str, Any] | str:
        """Pair 0 refuses in order ba once (then answers); pair 1 refuses in ba always."""
        key = json.dumps(body["messages"])
        asked[key] += 1
        first = first_shown(body)
        if "bad 0." in first and asked[key] == 1:
            return "Not now."
        if "bad 1." in first:
            return "Never in this order."
        return good_judge(body)

    pairs = pairs_table(3)
    with FakeLLMServer(api_key=TEST_KEY, tool_answer=flaky) as server:
        votes, _ = judge_votes(
            pairs,
            judges=["anthropic:j"],
            cache=call_cache,
            client_options=anthropic_options(server),
        )
        # 6 calls, then pair 0's and pair 1's failed orders once more each.
        assert server.served("messages") == 8
    assert votes.height == 6 and votes["error"].null_count() == 5
    verdicts = pool_orders(votes)
    lone = verdicts.filter(pl.col("one_order_only"))
    assert lone.height == 1 and lone["n_orders"].to_list() == [1]
    # Its one vote said 0.9; the missing order counts as no information: 0.7, not 0.9.
    assert lone["confidence"][0] == pytest.approx(0.7)
    assert verdicts.filter(~pl.col("one_order_only"))["n_orders"].to_list() == [2, 2]

    # Consensus sets the pair aside with reason one_order_only, whatever the method.
    from prefdata.io.importers.common import pairs_table as as_pairs

    table = as_pairs(
        [
            {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
            for r in pairs.to_dicts()
        ],
        source="test",
    )
    for method in ("majority", "dawid-skene", "mean"):
        posteriors, _ = consensus(votes, method=method, labels=["a", "b", "tie"])
        kept, aside, pair_report = pairs_from_consensus(table, posteriors, method=method)
        assert kept.height == 2, method
        assert aside["reason"].to_list() == ["one_order_only"], method
        assert pair_report["set_aside_one_order_only"] == 1
    # Kept on request, with the lowered confidence.
    posteriors, _ = consensus(votes, method="mean", one_order="keep")
    kept, aside, _ = pairs_from_consensus(table, posteriors, method="mean")
    assert kept.height == 3 and aside.height == 0


# ---- 7. a panel of judges behind their own endpoints --------------------------------------


def test_each_judge_has_its_own_endpoint_in_the_cli_and_in_pipeline_files(
    api_key: str, tmp_path: Path
) -> None:
    assert parse_spec("openai:m@http://h:8000/v1") == ("openai", "m", "http://h:8000/v1")
    assert parse_spec("anthropic:claude-3@20240620") == ("anthropic", "claude-3@20240620", None)
    data = tmp_path / "pairs.parquet"
    pairs_table(3).write_parquet(data)
    with (
        FakeLLMServer(api_key=TEST_KEY) as one,
        FakeLLMServer(api_key=TEST_KEY) as two,
    ):
        specs = [f"openai:m@{one.url}/v1", f"openai:m@{two.url}/v1"]
        out = tmp_path / "votes.parquet"
        args = ["judge", str(data), "-o", str(out), "--cache", str(tmp_path / "c.sqlite")]
        result = runner.invoke(app, [*args, "--judge", specs[0], "--judge", specs[1]])
        assert result.exit_code == 0, result.output
        assert one.served("chat.completions") == two.served("chat.completions") == 6
        votes = read_table(out)
        assert sorted(votes["annotator"].unique()) == sorted(specs)

        from prefdata.pipeline import load_pipeline, run_pipeline

        pipeline = tmp_path / "p.yaml"
        stage = {"kind": "judge", "inputs": {"pairs": str(data)}, "judges": specs}
        pipeline.write_text(yaml.safe_dump({"stages": [stage]}))
        run_pipeline(load_pipeline(pipeline), tmp_path / "run", progress=False)
        assert one.served("chat.completions") == two.served("chat.completions") == 12
        piped = read_table(tmp_path / "run" / "judge" / "annotations.parquet")
        assert sorted(piped["annotator"].unique()) == sorted(specs)
    client = make_client("openai", "m", base_url="http://h:1/v1")
    assert client.endpoint == "http://h:1/v1"


def test_judge_eval_reports_the_pooled_panel_and_the_bias_figures(
    api_key: str, tmp_path: Path
) -> None:
    # Two scripted judges' votes: one always right, one always picks the first shown.
    pairs = pairs_table(6)

    def habits(body: dict[str, Any]) -> dict[str, Any]:
        if body["model"] == "first":
            return {"verdict": "A", "rationale": "first", "confidence": 0.6}
        return good_judge(body)

    with FakeLLMServer(api_key=TEST_KEY, tool_answer=habits) as server:
        cache = CallCache(tmp_path / "c.sqlite")
        votes, _ = judge_votes(
            pairs,
            judges=["anthropic:good", "anthropic:first"],
            cache=cache,
            client_options=anthropic_options(server),
        )
        cache.close()
    votes_path = tmp_path / "votes.parquet"
    votes.write_parquet(votes_path)
    gold = tmp_path / "gold.parquet"
    pairs.write_parquet(gold)
    out = tmp_path / "eval.parquet"
    result = runner.invoke(
        app,
        ["judge-eval", str(votes_path), "--gold", str(gold), "--pairs", str(gold), "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    good, first = report["judges"]["anthropic:good"], report["judges"]["anthropic:first"]
    assert good["accuracy_with_ties"] == 1.0 and good["position_consistency"] == 1.0
    assert first["position_consistency"] == 0.0 and first["p_first_wins"] == 1.0
    # GOOD answers are the longer side of every pair: the good judge always picks the longer.
    assert good["p_longer_wins"] == 1.0 and first["p_longer_wins"] == 0.5
    # The panel, pooled by mean probability: the good judge's 0.9 against the other's 0.5
    # (its two orders cancel) keeps every pair right.
    assert report["panel"]["accuracy_with_ties"] == 1.0
    table = read_table(out)
    assert set(table["judge"]) == {"anthropic:good", "anthropic:first", "panel"}


# ---- 8. judge-eval on votes without annotator_kind -------------------------------------


def test_judge_eval_reads_consensus_output_without_annotator_kind(tmp_path: Path) -> None:
    pairs = pairs_table(4)
    gold = tmp_path / "gold.parquet"
    pairs.write_parquet(gold)
    from prefdata.quality.judge_eval import gold_from_pairs

    truth = gold_from_pairs(pairs)
    # What `prefdata consensus --method mean -o m.parquet` writes: posteriors, no annotator.
    posteriors = truth.select(
        "item_id", "label", pl.lit(0.8).alias("confidence"), pl.lit(0.8).alias("p_a")
    )
    path = tmp_path / "m.parquet"
    posteriors.write_parquet(path)
    result = runner.invoke(app, ["judge-eval", str(path), "--gold", str(gold)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (name,) = report["judges"]
    assert report["judges"][name]["accuracy_with_ties"] == 1.0
    # A kind outside the allowed ones is one clear line, exit 2.
    posteriors.with_columns(pl.lit("robot").alias("annotator_kind")).write_parquet(path)
    result = runner.invoke(app, ["judge-eval", str(path), "--gold", str(gold)])
    assert result.exit_code == 2
    assert "human, llm, rule, implicit" in result.output

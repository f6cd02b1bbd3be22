"""The pairwise judge against the wire-protocol test server scripted as judges with known
habits: the bias and consistency figures must come out exactly as scripted."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata import ids
from prefdata.label.estimate import estimate
from prefdata.label.judge import judge
from prefdata.label.selection import pair_items
from prefdata.llm.cache import CallCache
from prefdata.llm.prices import load_prices
from prefdata.quality.judge_eval import calibration, gold_from_pairs
from prefdata.quality.pooling import panel, pool_orders
from tests.label.helpers import judge_votes
from tests.llm.conftest import FAST_RETRIES
from tests.llm.fake_server import FakeLLMServer

_SHOWN = re.compile(
    r"\[Response A\]\n(.*?)\n\[End of Response A\].*?\[Response B\]\n(.*?)\n"
    r"\[End of Response B\]",
    re.DOTALL,
)
HABITS = ("always-first", "always-longer", "consistent", "malformed", "refusal")
PRICES = {h: {"input": 3.0, "output": 15.0} for h in HABITS}


def scripted(body: dict[str, Any]) -> dict[str, Any] | str | None:
    """Each model name is a habit; the answer reads the two shown responses."""
    text = str(body["messages"][-1]["content"])
    m = _SHOWN.search(text)
    assert m, "the judge prompt must show Response A and Response B"
    first, second = m.group(1), m.group(2)
    habit = body["model"]
    if habit == "always-first":
        return {"verdict": "A", "rationale": "The first one.", "confidence": 0.9}
    if habit == "always-longer":
        return {"verdict": "A" if len(first) > len(second) else "B", "rationale": "Longer."}
    if habit == "consistent":
        # The rationale always names A, whatever the verdict: the "A" in reply trap.
        verdict = "A" if "GOOD" in first else "B"
        return {
            "verdict": verdict,
            "rationale": "Answer A was read first; see verdict.",
            "confidence": 0.8,
        }
    if habit == "malformed":
        return {"verdict": "Response A, probably", "rationale": "A"}
    if habit == "refusal":
        return "I can't help with comparing these two answers (A and B)."
    return None


def make_pairs(n: int = 12) -> pl.DataFrame:
    """n pairs; chosen contains GOOD. The good side is the longer one in 2 of every 3."""
    rows = []
    for i in range(n):
        good = f"GOOD answer {i}" + (" with many more useful words" if i % 3 else "")
        bad = f"bad reply {i}" + ("" if i % 3 else " that rambles on and on and on for ages")
        rows.append({"prompt": f"Question {i}?", "chosen": good, "rejected": bad})
    return pl.DataFrame(rows)


@pytest.fixture
def server(fake_server: FakeLLMServer) -> FakeLLMServer:
    fake_server.tool_answer = scripted
    return fake_server


def options(server: FakeLLMServer) -> dict[str, dict[str, Any]]:
    return {
        "anthropic": {"base_url": server.url, "prices": PRICES, "retry_policy": FAST_RETRIES},
        "openai": {"base_url": server.url + "/v1", "retry_policy": FAST_RETRIES},
    }


def run(server: FakeLLMServer, cache: CallCache, pairs: pl.DataFrame, **kw: Any) -> Any:
    return judge_votes(
        pairs,
        judges=[f"anthropic:{h}" for h in kw.pop("habits", HABITS)],
        cache=cache,
        client_options=options(server),
        **kw,
    )


def test_scripted_habits_give_the_scripted_figures(
    server: FakeLLMServer, api_key: str, call_cache: CallCache
) -> None:
    pairs = make_pairs(12)
    votes, report = run(server, call_cache, pairs)
    assert votes.height == 12 * 2 * len(HABITS)
    assert server.served("messages") == 12 * 2 * len(HABITS)
    j = report["judges"]
    first = j["anthropic:always-first"]
    assert first["position_consistency"] == 0.0 and first["p_first_wins"] == 1.0
    assert first["inconsistent_pairs"] == 12
    longer = j["anthropic:always-longer"]
    assert longer["p_longer_wins"] == 1.0 and longer["position_consistency"] == 1.0
    assert longer["p_first_wins"] == 0.5  # the longer side is shown first in one order of two
    good = j["anthropic:consistent"]
    assert good["position_consistency"] == 1.0 and good["p_first_wins"] == 0.5
    assert good["p_longer_wins"] == pytest.approx(8 / 12)  # GOOD is longer in 8 of 12 pairs
    for bad in ("malformed", "refusal"):
        assert j[f"anthropic:{bad}"]["errors"] == 24
        rows = votes.filter(pl.col("annotator") == f"anthropic:{bad}")
        assert rows["label"].null_count() == 24 and rows["error"].null_count() == 0
    # A winner named without a stated confidence pools to an unknown confidence, not 1.0.
    longer_verdicts = pool_orders(votes).filter(pl.col("annotator") == "anthropic:always-longer")
    assert longer_verdicts.height == 12 and longer_verdicts["confidence"].null_count() == 12
    assert longer_verdicts["consistent"].all()
    assert "verdict must be one of" in j["anthropic:malformed"]["error_examples"][0]
    assert "did not call the tool" in j["anthropic:refusal"]["error_examples"][0]
    # Every vote records its order, template hash and token counts; cost from the price table.
    ok = votes.filter(pl.col("error").is_null())
    assert set(ok["order"].to_list()) == {"ab", "ba"}
    assert ok["template_version"].n_unique() == 1 and ok["input_tokens"].min() > 0
    prices = load_prices(PRICES)
    row = ok.row(0, named=True)
    assert row["cost_usd"] == pytest.approx(
        prices.cost(
            row["annotator"].split(":")[1],
            input_tokens=row["input_tokens"] - row["cache_read_tokens"] - row["cache_write_tokens"],
            output_tokens=row["output_tokens"],
            cache_read_tokens=row["cache_read_tokens"],
            cache_write_tokens=row["cache_write_tokens"],
        )
    )
    # The rubric is the cached system prefix: written once per judge, read by later calls.
    assert ok["cache_read_tokens"].sum() > 0


def test_labels_are_canonical_sides_and_the_letter_trap_does_not_apply(
    server: FakeLLMServer, api_key: str, call_cache: CallCache
) -> None:
    pairs = make_pairs(12)
    votes, _ = run(server, call_cache, pairs, habits=["consistent"])
    gold = gold_from_pairs(pairs)
    truth = dict(zip(gold["item_id"], gold["label"], strict=True))
    # Every raw reply contains the letter A; a reader testing `"A" in reply` would say the
    # first-shown response won every time. The labels follow the verdict field instead.
    naive = [
        (row["order"][0] if "A" in row["raw"] else row["order"][1]) for row in votes.to_dicts()
    ]
    naive_first_wins = (
        sum(lab == row["order"][0] for lab, row in zip(naive, votes.to_dicts(), strict=True))
        / votes.height
    )
    assert naive_first_wins == 1.0
    real_first_wins = sum(row["label"] == row["order"][0] for row in votes.to_dicts())
    assert real_first_wins / votes.height == 0.5
    assert [truth[i] for i in votes["item_id"]] == votes["label"].to_list()
    # a / b are canonical content-hash sides, not chosen / rejected: both occur.
    assert set(votes["label"].to_list()) == {"a", "b"}
    for row in pairs.iter_rows(named=True):
        pid = ids.pair_id(
            ids.prompt_id([{"role": "user", "content": row["prompt"]}]),
            row["chosen"],
            row["rejected"],
        )
        a, _ = ids.canonical_sides(row["chosen"], row["rejected"])
        assert truth[pid] == ("a" if a == row["chosen"] else "b")
    cal = calibration(votes, gold)
    assert cal["judges"]["anthropic:consistent"]["accuracy_with_ties"] == 1.0
    assert cal["judges"]["anthropic:consistent"]["kappa"] == pytest.approx(1.0)


def test_inconsistent_pairs_become_low_confidence_ties(
    server: FakeLLMServer, api_key: str, call_cache: CallCache
) -> None:
    votes, _ = run(server, call_cache, make_pairs(6), habits=["always-first", "consistent"])
    verdicts = pool_orders(votes)
    first = verdicts.filter(pl.col("annotator") == "anthropic:always-first")
    assert first["label"].to_list() == ["tie"] * 6
    assert first["confidence"].to_list() == [0.5] * 6
    assert first["consistent"].to_list() == [False] * 6
    good = verdicts.filter(pl.col("annotator") == "anthropic:consistent")
    assert good["consistent"].all() and good["confidence"].to_list() == [0.8] * 6
    # The panel: majority of {tie, winner} has no strict plurality -> tie; the mean of p_a
    # (0.5 and 0.8 / 0.2) keeps the consistent judge's direction.
    pooled, report = panel(votes, method="mean")
    assert pooled.height == 6
    assert sorted(set(pooled["confidence"].round(6).to_list())) == [0.65]
    majority, _ = panel(votes, method="majority")
    assert majority["label"].to_list() == ["tie"] * 6
    pair = report["kappas"]["anthropic:always-first | anthropic:consistent"]
    assert pair["items"] == 6 and pair["agreement"] == 0.0


def test_rerun_is_answered_from_the_cache(
    server: FakeLLMServer, api_key: str, tmp_path: Path
) -> None:
    pairs = make_pairs(4)
    cache = CallCache(tmp_path / "c.sqlite")
    first, _ = run(server, cache, pairs, habits=["consistent"])
    served = server.served("messages")
    again, _ = run(server, cache, pairs, habits=["consistent"])
    assert server.served("messages") == served == 8
    assert again["label"].to_list() == first["label"].to_list()
    cache.close()


def test_one_order_and_the_batch_api(
    server: FakeLLMServer, api_key: str, call_cache: CallCache, tmp_path: Path
) -> None:
    pairs = make_pairs(5)
    votes, report = run(
        server,
        call_cache,
        pairs,
        habits=["consistent"],
        batch=True,
        poll_interval=0.05,
        orders="ba",
    )
    assert server.served("messages") == 0 and server.served("batches.create") == 1
    assert votes["order"].to_list() == ["ba"] * 5
    assert report["judges"]["anthropic:consistent"]["pairs_both_orders"] == 0
    gold = gold_from_pairs(pairs)
    assert sorted(votes["label"].to_list()) == sorted(gold["label"].to_list())
    # batch price: half of the online price of the same tokens
    row = votes.row(0, named=True)
    online = load_prices(PRICES).cost(
        "consistent",
        input_tokens=row["input_tokens"] - row["cache_read_tokens"] - row["cache_write_tokens"],
        output_tokens=row["output_tokens"],
        cache_read_tokens=row["cache_read_tokens"],
        cache_write_tokens=row["cache_write_tokens"],
    )
    assert row["cost_usd"] == pytest.approx(online / 2)


def test_min_human_agreement_stops_a_bad_judge_after_the_gold_pairs(
    server: FakeLLMServer, api_key: str, call_cache: CallCache
) -> None:
    pairs = make_pairs(10)
    gold = pairs.head(4)  # a pairs table is gold too: chosen is the human label
    votes, report = run(
        server,
        call_cache,
        pairs,
        habits=["always-first", "consistent"],
        gold=gold,
        min_human_agreement=0.7,
    )
    counts = dict(votes.group_by("annotator").len().iter_rows())
    assert counts == {"anthropic:always-first": 8, "anthropic:consistent": 20}
    assert "stopped" in report["judges"]["anthropic:always-first"]
    assert report["calibration"]["anthropic:consistent"]["accuracy_without_ties"] == 1.0


def test_openai_json_output_and_prose_replies(
    server: FakeLLMServer, api_key: str, call_cache: CallCache
) -> None:
    pairs = make_pairs(3).with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.col("prompt") + " [[fault:notjson]]")
        .otherwise(pl.col("prompt"))
        .alias("prompt")
    )
    votes = judge(
        pairs, judges=["openai:judge-x"], cache=call_cache, client_options=options(server)
    ).tables["annotations"]
    assert votes.height == 6
    bad = votes.filter(pl.col("error").is_not_null())
    # The prose reply ("the winner is (a)") is an error row, never read for a letter.
    assert bad.height == 2 and bad["label"].null_count() == 2
    assert "winner is (a)" in bad["raw"][0]
    assert set(votes.filter(pl.col("error").is_null())["label"]) <= {"a", "b", "tie"}
    body = server.entries("chat.completions")[0].body
    assert body["response_format"]["type"] == "json_schema"


def test_estimate_counts_calls_and_prices_before_spending(
    server: FakeLLMServer, api_key: str
) -> None:
    pairs = make_pairs(10)
    plan = estimate(pairs, judges=["anthropic:claude-sonnet-4-6", "local:smollm2"])
    assert plan["pairs"] == 10 and plan["calls_per_judge"] == 20
    sonnet = plan["judges"]["anthropic:claude-sonnet-4-6"]
    assert sonnet["usd_batch"] == pytest.approx(sonnet["usd_online_no_cache"] / 2, rel=1e-4)
    # Sonnet list price: $3 / $15 per million input / output tokens.
    expected = (
        plan["approx_input_tokens_per_judge"] * 3 + plan["approx_output_tokens_per_judge"] * 15
    ) / 1e6
    assert sonnet["usd_online_no_cache"] == pytest.approx(expected, rel=1e-4)
    assert plan["approx_output_tokens_per_judge"] == 20 * 150
    # The built-in rubric is far below the 1,024-token minimum: caching changes nothing.
    assert sonnet["prompt_caching_applies"] is False
    assert sonnet["usd_batch_cached"] == sonnet["usd_batch"]
    assert plan["judges"]["local:smollm2"]["usd"] == 0.0
    assert server.count() == 0


def test_pair_selection_from_candidates() -> None:
    cands = pl.DataFrame(
        {
            "prompt_id": ["p1"] * 4 + ["p2"] * 3,
            "prompt": ["Q1"] * 4 + ["Q2"] * 3,
            "completion": ["w", "x", "y", "z", "u", "v", "v"],
            "score": [1.0, 3.0, 2.0, 0.5, 1.0, 1.0, 1.0],
        }
    )
    every = pair_items(cands)
    assert every.height == 6 + 1  # C(4,2) + C(2,2): duplicate "v" counts once
    capped = pair_items(cands, max_pairs_per_prompt=2, seed=1)
    assert capped.height == 3
    assert pair_items(cands, max_pairs_per_prompt=2, seed=1)["item_id"].to_list() == (
        capped["item_id"].to_list()
    )
    bvw = pair_items(cands, selection="best-vs-worst")
    assert bvw.height == 1  # p2's scores are all equal: no pair
    assert set(bvw.row(0, named=True)[s] for s in ("a", "b")) == {"x", "z"}


def test_rubric_files(tmp_path: Path) -> None:
    from prefdata.errors import InputError
    from prefdata.label.requests import build_request
    from prefdata.label.rubric import BUILTIN_RUBRICS, load_rubric
    from prefdata.llm.factory import capabilities

    versions = {load_rubric(n).version for n in BUILTIN_RUBRICS}
    assert len(versions) == len(BUILTIN_RUBRICS)
    own = tmp_path / "mine.txt"
    own.write_text("### system\nBe strict.\n### user\n{conversation}\n1) {first}\n2) {second}\n")
    rubric = load_rubric(own)
    item = {
        "item_id": "x",
        "prompt": [{"role": "user", "content": "Q"}],
        "a": "AA",
        "b": "BB",
        "reference": "42",
    }
    req = build_request(load_rubric("math"), item, "ba", capabilities=capabilities("anthropic"))
    assert "[Reference answer]\n42" in req.messages[0]["content"]
    assert req.messages[0]["content"].index("BB") < req.messages[0]["content"].index("AA")
    local = capabilities("local")
    assert build_request(rubric, item, "ab", capabilities=local).choices == ("A", "B")
    bad = tmp_path / "bad.txt"
    bad.write_text("### user\n{conversation} {first} {second} {oops}\n")
    with pytest.raises(InputError, match="oops"):
        load_rubric(bad)

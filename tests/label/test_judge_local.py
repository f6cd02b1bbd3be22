"""The local log-probability judge on the embedded model (SmolLM2-135M): no text parsing,
p(A) + p(B) = 1 per vote, and the order mapping onto canonical sides."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from prefdata.label.judge import judge
from prefdata.label.requests import build_request
from prefdata.label.rubric import load_rubric
from prefdata.label.verdicts import read_vote
from prefdata.llm.base import Response
from prefdata.llm.cache import CallCache
from prefdata.llm.local import LocalClient
from prefdata.quality.pooling import pool_orders

PAIRS = pl.DataFrame(
    {
        "prompt": ["What is 2 + 2?", "Name a colour.", "Say hello in French."],
        "chosen": ["2 + 2 = 4.", "Blue.", "Bonjour !"],
        "rejected": ["It is 5.", "I do not know any colours.", "Hola."],
    }
)


@pytest.fixture(scope="module")
def client() -> LocalClient:
    return LocalClient("smollm2", batch_size=6)


def test_probabilities_sum_to_one_and_orders_map_onto_sides(
    client: LocalClient, tmp_path: Path
) -> None:
    cache = CallCache(tmp_path / "c.sqlite")
    result = judge(PAIRS, judges=[client], cache=cache)
    votes, report = result.tables["annotations"], result.report
    cache.close()
    assert votes.height == 6 and votes["error"].null_count() == 6
    for row in votes.to_dicts():
        raw = json.loads(row["raw"])
        assert raw["A"] + raw["B"] == pytest.approx(1.0, abs=1e-9)
        assert 0 < raw["mass"] <= 1
        # p_a is P(A) when a was shown first, P(B) when b was.
        assert row["p_a"] == pytest.approx(raw["A"] if row["order"] == "ab" else raw["B"])
        assert row["label"] == ("a" if row["p_a"] > 0.5 else "b")
        assert row["confidence"] == pytest.approx(max(row["p_a"], 1 - row["p_a"]))
        assert row["input_tokens"] > 0 and row["cost_usd"] == 0.0
    verdicts = pool_orders(votes)
    for item, group in votes.group_by("item_id"):
        mean = group["p_a"].mean()
        pooled = verdicts.filter(pl.col("item_id") == item[0])
        assert pooled["p_a"][0] == pytest.approx(mean)
    stats = report["judges"]["local:smollm2"]
    assert stats["pairs_both_orders"] == 3 and stats["errors"] == 0


def test_swapping_the_order_swaps_the_roles(client: LocalClient) -> None:
    rubric = load_rubric("helpfulness")
    prompt = [{"role": "user", "content": "What is 2 + 2?"}]
    x, y = "2 + 2 = 4.", "It is 5."
    # The same text shown in the same places, once as (a=x, b=y) in order ab and once as
    # (a=y, b=x) in order ba: one identical prompt, so P(A) is one number, and the two votes'
    # p_a must be p and 1 - p.
    one = build_request(
        rubric,
        {"item_id": "i", "prompt": prompt, "a": x, "b": y},
        "ab",
        capabilities=client.capabilities,
    )
    two = build_request(
        rubric,
        {"item_id": "j", "prompt": prompt, "a": y, "b": x},
        "ba",
        capabilities=client.capabilities,
    )
    assert one.messages == two.messages
    r1, r2 = client.complete_sync([one, two])
    assert r1.choice_probs == pytest.approx(r2.choice_probs)
    v1 = read_vote(r1, "ab", "local:smollm2", "i", rubric, "now")
    v2 = read_vote(r2, "ba", "local:smollm2", "j", rubric, "now")
    assert v1["p_a"] + v2["p_a"] == pytest.approx(1.0)
    assert {v1["label"], v2["label"]} == {"a", "b"}
    # Unit check of the mapping itself.
    fake = Response(choice_probs={"A": 0.8, "B": 0.2}, choice_mass=0.5)
    assert read_vote(fake, "ab", "j", "i", rubric, "now")["p_a"] == pytest.approx(0.8)
    assert read_vote(fake, "ba", "j", "i", rubric, "now")["p_a"] == pytest.approx(0.2)

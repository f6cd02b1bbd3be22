from __future__ import annotations

import os
import subprocess
import sys

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from prefdata.io.convert import pairs_to_kto, rankings_to_pairs, ratings_to_pairs, thumbs_to_kto
from prefdata.io.importers.common import pairs_table
from prefdata.schema import validate

texts = st.text(alphabet="abc xyz", min_size=1, max_size=6).filter(lambda s: s.strip() != "")


@st.composite
def pair_records(draw: st.DrawFn) -> list[dict[str, object]]:
    n = draw(st.integers(1, 12))
    out = []
    seen: set[tuple[str, frozenset[str]]] = set()
    for _ in range(n):
        chosen = draw(texts)
        rejected = draw(texts.filter(lambda t, c=chosen: t != c))
        prompt = draw(texts)
        # distinct pairs: a repeated pair (either order) is one pair_id, which the contract
        # refuses as a duplicate before any conversion
        key = (prompt, frozenset((chosen, rejected)))
        if key in seen:
            continue
        seen.add(key)
        out.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": chosen,
                "rejected": rejected,
                "confidence": draw(st.none() | st.floats(0, 1)),
            }
        )
    return out


@settings(max_examples=60, deadline=None)
@given(pair_records())
def test_n_pairs_give_2n_kto_rows(records: list[dict[str, object]]) -> None:
    pairs = pairs_table(records, source="t")
    _converted = pairs_to_kto(pairs)
    kto, report = _converted.main, _converted.report
    assert kto.height == 2 * pairs.height
    assert kto["label"].to_list() == [True, False] * pairs.height
    assert kto.filter(pl.col("label"))["completion"].to_list() == pairs["chosen"].to_list()
    assert kto.filter(~pl.col("label"))["completion"].to_list() == pairs["rejected"].to_list()
    assert report["desirable_ratio"] == 1.0 and report["within_trl_advice"]
    validate(kto, "kto")


@st.composite
def rated_tables(draw: st.DrawFn) -> pl.DataFrame:
    rows = []
    for p in range(draw(st.integers(1, 5))):
        for _ in range(draw(st.integers(1, 5))):
            rows.append(
                {
                    "prompt": f"prompt {p}",
                    # a small alphabet makes repeated texts likely: they must never pair up
                    "completion": draw(st.sampled_from(["x", "y", "z", "w"])),
                    "score": draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)),
                }
            )
    return pl.DataFrame(rows)


@settings(max_examples=80, deadline=None)
@given(rated_tables(), st.sampled_from(["all", "best-vs-worst"]), st.sampled_from([0.0, 0.5]))
def test_ratings_never_give_chosen_equal_rejected(
    rated: pl.DataFrame, mode: str, margin: float
) -> None:
    _converted = ratings_to_pairs(rated, mode=mode, min_margin=margin)  # type: ignore[arg-type]
    pairs, report = _converted.main, _converted.report
    assert (pairs["chosen"] != pairs["rejected"]).all()
    assert (pairs["margin"] > margin).all()
    assert pairs["confidence"].is_between(0, 1).all()
    validate(pairs, "pairs")
    if mode == "best-vs-worst":
        assert pairs.height <= report["prompts"]


def test_all_tied_prompt_gives_no_pair() -> None:
    rated = pl.DataFrame(
        {
            "prompt": ["p"] * 3 + ["q"] * 2,
            "completion": ["a", "b", "c", "d", "e"],
            "score": [4, 4, 4, 5, 1],
        }
    )
    _converted = ratings_to_pairs(rated)
    pairs, report = _converted.main, _converted.report
    assert report["prompts_all_tied"] == 1
    assert pairs["chosen"].to_list() == ["d"] and pairs["rejected"].to_list() == ["e"]


def test_rating_confidence_is_the_rater_auc() -> None:
    rated = pl.DataFrame(
        {"prompt": ["p", "p"], "completion": ["a", "b"], "score": [[5, 3, 4], [4, 4, 2]]}
    )
    _converted = ratings_to_pairs(rated)
    pairs, _ = _converted.main, _converted.report
    # a's ratings vs b's: 5>4,5>4,5>2, 3<4,3<4,3>2, 4=4,4=4,4>2 -> (5 + 2*0.5) / 9
    assert abs(pairs["confidence"][0] - 6 / 9) < 1e-12
    assert abs(pairs["agreement"][0] - 2 / 3) < 1e-12


def test_rankings_all_vs_best_vs_worst() -> None:
    ranked = pl.DataFrame(
        {"prompt": ["p"] * 4, "completion": ["a", "b", "c", "d"], "rank": [0, 1, 2, 2]}
    )
    _converted = rankings_to_pairs(ranked)
    every, _ = _converted.main, _converted.report
    assert every.height == 5  # 6 combinations minus the equal-rank c/d
    _converted = rankings_to_pairs(ranked, mode="best-vs-worst")
    best, _ = _converted.main, _converted.report
    assert best["chosen"].to_list() == ["a"] and best["rejected"][0] in {"c", "d"}


def test_thumbs_confidence_from_beta_posterior() -> None:
    thumbs = pl.DataFrame(
        {
            "prompt": ["p"] * 4,
            "completion": ["a", "b", "c", "d"],
            "up": [3, 0, 2, 0],
            "down": [0, 1, 2, 0],
        }
    )
    _converted = thumbs_to_kto(thumbs)
    kto, tied, report = _converted.tables["kto"], _converted.tables["tied"], _converted.report
    assert kto["completion"].to_list() == ["a", "b"]
    assert kto["label"].to_list() == [True, False]
    # Beta(4, 1): P(p > 1/2) = 1 - 0.5^4; Beta(1, 2): P(p < 1/2) = 1 - 0.5^2
    assert abs(kto["confidence"][0] - (1 - 0.5**4)) < 1e-9
    assert abs(kto["confidence"][1] - 0.75) < 1e-9
    assert tied["completion"].to_list() == ["c", "d"] and report["dropped_tied_votes"] == 2


ID_SCRIPT = """
from prefdata.io.importers.common import pairs_table
p = pairs_table([{"prompt": [{"role": "user", "content": "q"}], "chosen": "x", "rejected": "y"}],
                source="t")
print(p["pair_id"][0], p["prompt_id"][0])
"""


def test_ids_are_stable_across_processes_and_sides() -> None:
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run(
            [sys.executable, "-c", ID_SCRIPT], capture_output=True, text=True, env=env, check=True
        )
        outs.add(res.stdout.strip())
    assert len(outs) == 1
    swapped = pairs_table(
        [{"prompt": [{"role": "user", "content": "q"}], "chosen": "y", "rejected": "x"}], source="t"
    )
    assert f"{swapped['pair_id'][0]} {swapped['prompt_id'][0]}" == outs.pop()

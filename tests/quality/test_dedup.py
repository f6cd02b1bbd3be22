"""MinHash LSH dedup against exact Jaccard by brute force (plain-Python shingle sets) on real
HH-RLHF prompts plus synthetic near-duplicates with known edits."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from prefdata.errors import ContractError
from prefdata.io.importers.common import pairs_table
from prefdata.io.importers.hh_rlhf import import_hh_rlhf
from prefdata.quality.dedup import dedup, split_overlap
from prefdata.quality.minhash import jaccard, lsh_params, shingles, similar_pairs
from prefdata.schema import validate


def _shingle_set(text: str, k: int = 3) -> frozenset[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    if not words:
        return frozenset()
    if len(words) < k:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i : i + k]) for i in range(len(words) - k + 1))


def _brute(texts: list[str], threshold: float) -> dict[tuple[int, int], float]:
    sets = [_shingle_set(t) for t in texts]
    out = {}
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            a, b = sets[i], sets[j]
            if a and b and (a & b):
                jac = len(a & b) / len(a | b)
                if jac >= threshold:
                    out[(i, j)] = jac
    return out


def _prompt_text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages)


@pytest.fixture(scope="module")
def hh(shared_data: Path) -> pl.DataFrame:
    return import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]


def _edit(text: str, rng: np.random.Generator, n_edits: int) -> str:
    """Known edits: replace, delete or insert whole words."""
    words = text.split()
    for e in range(n_edits):
        k = int(rng.integers(0, len(words)))
        kind = e % 3
        if kind == 0:
            words[k] = f"edited{e}"
        elif kind == 1 and len(words) > 5:
            del words[k]
        else:
            words.insert(k, f"inserted{e}")
    return " ".join(words)


def _texts_with_edits(hh: pl.DataFrame) -> list[str]:
    real = [_prompt_text(p) for p in hh["prompt"].head(400).to_list()]
    rng = np.random.default_rng(7)
    long = [t for t in real if len(t.split()) >= 25][:100]
    edited = [_edit(t, rng, int(rng.integers(1, 4))) for t in long]
    return real + edited


def test_shingles_match_python_sets(hh: pl.DataFrame) -> None:
    texts = _texts_with_edits(hh)
    sh = shingles(texts)
    assert sh.lengths.tolist() == [len(_shingle_set(t)) for t in texts]
    sets = [_shingle_set(t) for t in texts]
    rng = np.random.default_rng(0)
    i = rng.integers(0, len(texts), 300)
    j = rng.integers(0, len(texts), 300)
    want = [
        len(sets[a] & sets[b]) / len(sets[a] | sets[b]) if sets[a] | sets[b] else 1.0
        for a, b in zip(i, j, strict=True)
    ]
    np.testing.assert_allclose(jaccard(sh, i, j), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_lsh_recall_against_brute_force(hh: pl.DataFrame, threshold: float) -> None:
    texts = _texts_with_edits(hh)
    truth = _brute(texts, threshold)
    found = similar_pairs(texts, threshold=threshold)
    got = {(i, j): s for i, j, s in found.iter_rows()}
    # 100 edited copies, most above the threshold, plus the real near-duplicates
    assert len(truth) >= (60 if threshold == 0.8 else 100)
    recall = len(set(got) & set(truth)) / len(truth)
    assert recall >= 0.9
    assert set(got) <= set(truth)  # candidates are verified exactly: no false positive
    for key, value in got.items():
        assert value == pytest.approx(truth[key], abs=1e-12)


def test_known_edit_gives_the_expected_jaccard() -> None:
    words = [f"w{i}" for i in range(40)]
    edited = words.copy()
    edited[20] = "changed"
    # 38 3-word shingles each; one replaced word changes the 3 that cover it: J = 35 / 41
    found = similar_pairs([" ".join(words), " ".join(edited), "unrelated text"], threshold=0.8)
    assert found.rows() == [(0, 1, 35 / 41)]


def test_lsh_params_meet_the_recall_target() -> None:
    for threshold, num_perm in [(0.8, 64), (0.7, 128), (0.5, 64)]:
        bands, rows = lsh_params(threshold, num_perm)
        assert bands * rows <= num_perm
        assert 1 - (1 - threshold**rows) ** bands >= 0.95
        more = rows + 1
        assert 1 - (1 - threshold**more) ** (num_perm // more) < 0.95
    assert lsh_params(0.8, 64) == (10, 6)


def _table(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pairs_table([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows], source="t")


def test_dedup_stage_flags_later_copies_and_swapped_labels() -> None:
    base = "the quick brown fox jumps over the lazy dog near the quiet river bank today"
    other = "a completely different question about cooking pasta with tomato sauce at home"
    answer = "one two three four five six seven eight nine ten eleven twelve thirteen"
    pairs = _table(
        [
            (base, answer, "bad answer here"),  # 0
            (base.upper(), answer + "  ", "BAD answer here"),  # 1 same after normalising
            (base, "Bad answer here", answer.upper()),  # 2 a normalised copy, labels swapped
            (base + " please", answer + " fourteen", "bad answer here"),  # 3 near copy of 0
            (other, "sure", "no"),  # 4 unrelated
            (other, "maybe", "no"),  # 5 same prompt, other responses
        ]
    )
    issues, report = dedup(pairs)
    validate(issues, "issues")
    ids = pairs["pair_id"].to_list()
    rows = {(ids.index(r["item_id"]), r["issue"]): r for r in issues.iter_rows(named=True)}
    assert rows[(1, "duplicate_pair")]["reason"] == f"same prompt and responses as pair {ids[0]}"
    # identical text would share row 0's pair_id (the contract forbids that); this copy
    # differs in case only, with chosen and rejected swapped
    assert rows[(2, "duplicate_pair")]["reason"].endswith(ids[0])
    assert {k for k in rows if k[1] == "conflicting_duplicate"} == {
        (0, "conflicting_duplicate"),
        (2, "conflicting_duplicate"),
    }
    near = rows[(3, "near_duplicate_pair")]
    # pair similarity: Jaccard of the union of the prompt's, chosen's and rejected's sets
    sets = [
        _shingle_set(base) | _shingle_set(answer) | _shingle_set("bad answer here"),
        _shingle_set(base + " please")
        | _shingle_set(answer + " fourteen")
        | _shingle_set("bad answer here"),
    ]
    assert near["score"] == pytest.approx(1 - len(sets[0] & sets[1]) / len(sets[0] | sets[1]))
    assert near["score"] == pytest.approx(1 - 25 / 27)
    assert near["reason"].endswith(ids[0])
    assert not rows[(5, "duplicate_prompt")]["is_issue"]
    assert rows[(3, "near_duplicate_prompt")]["reason"].endswith(ids[0])
    assert report["distinct_prompts"] == 3
    assert (4, "duplicate_pair") not in rows and (0, "duplicate_pair") not in rows

    strict, _ = dedup(pairs, repeated_prompts="issue")
    assert strict.filter(pl.col("issue") == "duplicate_prompt")["is_issue"].all()
    off, report_off = dedup(pairs, repeated_prompts="off")
    assert not off["issue"].str.contains("prompt").any()
    assert report_off["duplicate_prompt"] == 0

    with pytest.raises(ContractError, match="appears more than once"):
        dedup(pl.concat([pairs, pairs.head(1)]))


def test_dedup_on_real_prompts_matches_brute_force(hh: pl.DataFrame) -> None:
    sub = hh.head(600)
    issues, report = dedup(sub)
    norm = [" ".join(_prompt_text(p).lower().split()) for p in sub["prompt"].to_list()]
    first: dict[str, int] = {}
    exact_later = set()
    for i, t in enumerate(norm):
        if t in first:
            exact_later.add(i)
        first.setdefault(t, i)
    heads = sorted(first.values())
    truth = _brute([norm[h] for h in heads], 0.8)
    near_later = {heads[j] for (_, j) in truth}
    ids = sub["pair_id"].to_list()
    got_exact = {
        ids.index(x)
        for x in issues.filter(pl.col("issue") == "duplicate_prompt")["item_id"].to_list()
    }
    got_near = {
        ids.index(x)
        for x in issues.filter(pl.col("issue") == "near_duplicate_prompt")["item_id"].to_list()
    }
    assert got_exact == exact_later
    assert got_near == near_later
    assert report["distinct_prompts"] == len(heads)


def test_split_overlap_finds_copied_and_edited_prompts(hh: pl.DataFrame) -> None:
    train, test = hh.head(400), hh.slice(400, 300)
    rng = np.random.default_rng(3)
    donors = [p for p in train["prompt"].to_list() if len(_prompt_text(p).split()) >= 40][:10]
    injected = []
    for k, msgs in enumerate(donors):
        text = _prompt_text(msgs)
        prompt = text.upper() if k < 5 else _edit(text, rng, 1)
        injected.append({"prompt": prompt, "chosen": f"c{k}", "rejected": f"r{k}"})
    test = pl.concat([test, pairs_table(injected, source="t")])
    issues, report = split_overlap(train, test)
    validate(issues, "issues")

    tr_norm = [" ".join(_prompt_text(p).lower().split()) for p in train["prompt"].to_list()]
    tr_sets = [_shingle_set(t) for t in tr_norm]
    want: dict[str, float] = {}
    for pid, msgs in zip(test["pair_id"].to_list(), test["prompt"].to_list(), strict=True):
        t = " ".join(_prompt_text(msgs).lower().split())
        if t in tr_norm:
            want[pid] = 0.0
            continue
        s = _shingle_set(t)
        best = max((len(s & o) / len(s | o) for o in tr_sets if s and o), default=0.0)
        if best >= 0.8:
            want[pid] = 1 - best
    got = dict(zip(issues["item_id"].to_list(), issues["score"].to_list(), strict=True))
    assert set(got) == set(want)
    for pid, score in want.items():
        assert got[pid] == pytest.approx(score, abs=1e-12)
    assert report["overlap_exact"] >= 5 and report["overlap_near"] >= 4
    assert report["overlap_share"] == pytest.approx(len(want) / test.height)
    assert math.isclose(report["test_pairs"], 310)


def test_a_huge_bucket_pairs_with_its_first_member_only() -> None:
    texts = ["the same words in every row of this table"] * 100 + ["something else entirely"]
    found = similar_pairs(texts, max_bucket=64)
    assert found.height == 99  # linear, not 100 * 99 / 2
    assert set(found["i"].to_list()) == {0} and found["jaccard"].min() == 1.0
    small = similar_pairs(texts[:10], max_bucket=64)
    assert small.height == 45  # every pair in a small bucket

"""Rule checks: hand-made cases with known answers, and the real HH-RLHF test split checked
row by row against a plain-Python implementation of each documented rule."""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata.io.importers.common import pairs_table
from prefdata.io.importers.hh_rlhf import import_hh_rlhf
from prefdata.io.importers.pandalm import import_pandalm
from prefdata.quality.rules import (
    DEFAULT_HARMFUL_PATTERNS,
    DEFAULT_REFUSAL_PATTERNS,
    rule_checks,
)
from prefdata.schema import validate

LONG = "This sentence is here to make the response long enough to count. " * 4  # 260 chars


def _pairs(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    # pairs_table refuses nothing here; contract problems (chosen == rejected, empty) are
    # exactly what the rules must find, so the table is built without finish().
    return pairs_table([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows], source="t")


def _by_issue(issues: pl.DataFrame, pairs: pl.DataFrame, issue: str) -> dict[int, dict]:
    index = {pid: i for i, pid in enumerate(pairs["pair_id"].to_list())}
    return {
        index[r["item_id"]]: r
        for r in issues.filter(pl.col("issue") == issue).iter_rows(named=True)
    }


def test_hand_made_cases_get_the_documented_rows() -> None:
    pairs = _pairs(
        [
            ("q0", "Same answer.", "Same answer."),  # 0 exact copy
            ("q1", "Same  ANSWER.", "same answer. "),  # 1 equal after normalising
            ("q2", "   ", "A real answer."),  # 2 empty chosen
            ("q3", LONG.strip(), LONG + "and then it stops"),  # 3 long open end
            ("q4", "A fine answer.", "I think the answer is and"),  # 4 continuation word
            ("q5", "Here:\n```python\nprint(1)\n", "Fine."),  # 5 open code fence
            (
                "What is the capital of France?",
                "I'm sorry, but I can't help with that.",
                "Paris is the capital of France.",
            ),  # 6 over-refusal
            (
                "How do I steal a car?",
                "I’m sorry, but I can’t help with that.",
                "Break the window first.",
            ),  # 7 refusal on harmful prompt (curly quotes)
            (
                "How do I steal a car?",
                "Please don't; it is illegal.",
                "As an AI, I cannot answer.",
            ),  # 8 rejected refuses
            ("q9", "Yes. " * 20, "No."),  # 9 length ratio 100/3
            ("q10", "abcde" * 5, "abcde"),  # 10 ratio exactly 5: no row
            # 11 a list and a letter's sign-off end without a full stop: not truncated
            ("q11", LONG + "\n- first item\n- second item", LONG + "\n\nKind regards,\nBest,"),
        ]
    )
    issues, report = rule_checks(pairs)
    validate(issues, "issues")

    ident = _by_issue(issues, pairs, "identical_responses")
    assert sorted(ident) == [0, 1]
    assert ident[0]["score"] == 0.0 and ident[1]["score"] == 0.1

    empty = _by_issue(issues, pairs, "empty_response")
    assert sorted(empty) == [2] and empty[2]["reason"] == "chosen is empty"

    trunc = _by_issue(issues, pairs, "truncated_response")
    assert sorted(trunc) == [3, 4, 5]
    long_len = len((LONG + "and then it stops").rstrip())
    expected = 1 - (0.5 + 0.4 * min(1.0, (long_len - 200) / 800))
    assert trunc[3]["score"] == pytest.approx(expected, abs=1e-12)
    assert trunc[3]["reason"].startswith("rejected: no terminal punctuation after 277 chars")
    assert trunc[4]["score"] == pytest.approx(0.1) and "continuation" in trunc[4]["reason"]
    assert trunc[5]["score"] == pytest.approx(0.1) and "code block" in trunc[5]["reason"]
    assert all(r["is_issue"] for r in trunc.values())

    refusal = _by_issue(issues, pairs, "refusal_vs_answer")
    assert sorted(refusal) == [6, 7, 8]
    assert refusal[6]["is_issue"] and refusal[6]["score"] == 0.25
    assert not refusal[7]["is_issue"] and "looks harmful" in refusal[7]["reason"]
    assert not refusal[8]["is_issue"] and refusal[8]["reason"].startswith("rejected refuses")

    ratio = _by_issue(issues, pairs, "length_ratio")
    assert sorted(ratio) == [9]
    r = len("Yes. " * 20) / 3
    assert ratio[9]["score"] == pytest.approx(max(0.0, 1 - math.log(r) / (2 * math.log(5))))
    assert report["length_ratio"] == 1 and report["identical_responses"] == 2


def test_token_limit_and_options() -> None:
    text = "word " * 100  # 499 chars after strip, about 125 tokens
    pairs = _pairs([("q", text.strip(), "Short and complete.")])
    plain, _ = rule_checks(pairs, checks=["truncated_response"])
    limited, _ = rule_checks(pairs, checks=["truncated_response"], token_limit=128)
    assert plain["score"][0] == pytest.approx(1 - (0.5 + 0.4 * 299 / 800))
    assert limited["score"][0] == 0.0 and "128-token limit" in limited["reason"][0]
    none, report = rule_checks(pairs, checks=["length_ratio"], max_length_ratio=50)
    assert none.height == 0 and report == {"pairs": 1, "length_ratio_rows": 0, "length_ratio": 0}
    with pytest.raises(ValueError, match="unknown check"):
        rule_checks(pairs, checks=["nope"])


# ---- plain-Python reference of each documented rule, for the real-data comparison ----

_TERMINAL = set(".!?…。！？\"'”’»)]}*`>~")
_CONT = re.compile(
    r"(?:[,:;(/&]|\s-|\b(?:and|or|but|the|a|an|of|because|than|my|your|their|our|its|which"
    r"|whose|whether|although))$"
)
_REFUSAL = re.compile("|".join(f"(?:{p})" for p in DEFAULT_REFUSAL_PATTERNS), re.IGNORECASE)
_HARMFUL = re.compile("|".join(f"(?:{p})" for p in DEFAULT_HARMFUL_PATTERNS), re.IGNORECASE)


def _ref_truncation(text: str) -> float:
    t = text.rstrip()
    n = len(t)
    if not n:
        return 0.0
    open_end = not (t[-1] in _TERMINAL or unicodedata.category(t[-1]) == "So")
    last = t.split("\n")[-1]
    words = last.split()
    item = r"\s*(?:[-*•+]|\d{1,3}[.)]|[^\s:]+(?:\s+[^\s:]+){0,3}:)\s+\S"
    list_end = bool(re.match(item, last)) and len(words) <= 12
    sign_off = "\n" in t and 1 <= len(words) <= 3 and last.endswith(",")
    ev = 0.0
    if open_end and n >= 200 and not list_end and not sign_off:
        ev = 0.5 + 0.4 * min(1.0, (n - 200) / 800)
    if _CONT.search(t.lower()) and not sign_off:
        ev = max(ev, 0.9)
    if t.count("```") % 2:
        ev = max(ev, 0.9)
    return ev


def _check_against_reference(pairs: pl.DataFrame) -> dict[str, Any]:
    """Every row rule_checks writes, and only those, with the reference's score and flag."""
    issues, report = rule_checks(pairs)
    got = {(r["item_id"], r["issue"]): r for r in issues.iter_rows(named=True)}
    assert len(got) == issues.height  # one row per pair and check

    want: dict[tuple[str, str], tuple[float, bool]] = {}
    for row in pairs.iter_rows(named=True):
        pid, c, r = row["pair_id"], row["chosen"], row["rejected"]
        ev = max(_ref_truncation(c), _ref_truncation(r))
        if ev > 0:
            want[(pid, "truncated_response")] = (1 - ev, 1 - ev <= 0.5)
        ref_c = bool(_REFUSAL.search(c[:300].replace("’", "'")))
        ref_r = bool(_REFUSAL.search(r[:300].replace("’", "'")))
        if ref_c != ref_r:
            users = "\n".join(m["content"] for m in row["prompt"] if m["role"] == "user")
            over = ref_c and not _HARMFUL.search(users)
            want[(pid, "refusal_vs_answer")] = (0.25 if over else 0.75, over)
        ratio = max(len(c), len(r)) / min(len(c), len(r))
        if ratio > 5:
            want[(pid, "length_ratio")] = (max(0.0, 1 - math.log(ratio) / (2 * math.log(5))), True)
        if c == r or " ".join(c.lower().split()) == " ".join(r.lower().split()):
            want[(pid, "identical_responses")] = (0.0, True)

    assert set(got) == set(want)
    for key, (score, is_issue) in want.items():
        assert got[key]["score"] == pytest.approx(score, abs=1e-12), key
        assert got[key]["is_issue"] == is_issue, key
    return report


def test_real_hh_rlhf_matches_a_python_reference(shared_data: Path) -> None:
    pairs = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    assert pairs.height == 2303
    report = _check_against_reference(pairs)
    # The figures on this split (HH-RLHF responses are often cut mid-sentence).
    assert report["truncated_response_rows"] == 190
    assert report["refusal_vs_answer_rows"] == 78 and report["refusal_vs_answer"] == 37
    assert report["length_ratio"] == 405
    assert report["identical_responses"] == 0 and report["empty_response"] == 0


def test_real_pandalm_matches_a_python_reference(shared_data: Path) -> None:
    """Instruction data: lists, letters, model outputs cut while repeating themselves."""
    pairs = import_pandalm(shared_data / "pandalm_testset" / "testset-v1.json").tables["pairs"]
    assert pairs.height == 760
    report = _check_against_reference(pairs)
    assert report["truncated_response_rows"] == 53 and report["length_ratio"] == 100

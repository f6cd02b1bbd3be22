"""The verifiable-answer signal on real GSM8K solutions, checked against the data set's own
grading (`is_correct`, made by GSM8K's authors, not by our answer checker)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from prefdata.errors import ContractError
from prefdata.io.importers.common import pairs_table, user
from prefdata.io.importers.math import import_gsm8k, import_gsm8k_solutions
from prefdata.quality.verifiable import answer_checks, verifiable_issues
from prefdata.schema import validate

N_QUESTIONS = 60


@pytest.fixture(scope="module")
def gsm8k(shared_data: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict[tuple[str, str], bool]]:
    path = shared_data / "gsm8k" / "example_model_solutions.jsonl"
    pairs = import_gsm8k_solutions(path).tables["pairs"]
    first = pairs["prompt_id"].unique(maintain_order=True).head(N_QUESTIONS)
    pairs = pairs.filter(pl.col("prompt_id").is_in(first.implode()))
    prompts = import_gsm8k(shared_data / "gsm8k" / "test.jsonl").tables["prompts"]
    # The independent reference: GSM8K's own is_correct for each (question, solution).
    graded: dict[tuple[str, str], bool] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            obj = json.loads(line)
            for value in obj.values():
                if isinstance(value, dict) and "is_correct" in value:
                    graded[(obj["question"], value["solution"])] = value["is_correct"]
    return pairs, prompts, graded


def _flip(pairs: pl.DataFrame, rate: float, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    flip = np.zeros(pairs.height, dtype=bool)
    flip[rng.choice(pairs.height, round(rate * pairs.height), replace=False)] = True
    m = pl.Series(flip)
    return (
        pairs.with_columns(
            chosen=pl.when(m).then(pl.col("rejected")).otherwise(pl.col("chosen")),
            rejected=pl.when(m).then(pl.col("chosen")).otherwise(pl.col("rejected")),
        ),
        flip,
    )


def test_verdicts_match_gsm8k_grading(
    gsm8k: tuple[pl.DataFrame, pl.DataFrame, dict[tuple[str, str], bool]],
) -> None:
    pairs, prompts, graded = gsm8k
    flipped, flip = _flip(pairs, 0.25, seed=3)
    checks = answer_checks(flipped, prompts)
    assert checks.height == flipped.height
    assert checks["pair_id"].to_list() == flipped["pair_id"].to_list()
    question = [m[0]["content"] for m in flipped["prompt"].to_list()]
    expected = [
        int(graded[(q, c)]) - int(graded[(q, r)])
        for q, c, r in zip(question, flipped["chosen"], flipped["rejected"], strict=True)
    ]
    assert checks["verdict"].to_list() == expected
    # every pair is correct vs incorrect, so the verdict is exactly the flip
    np.testing.assert_array_equal(checks["verdict"].to_numpy(), np.where(flip, -1, 1))
    assert checks["chosen_correct"].to_list() == [e > 0 for e in expected]

    issues, report = verifiable_issues(flipped, prompts)
    validate(issues, "issues")
    flagged = set(issues.filter("is_issue")["item_id"])
    assert flagged == set(flipped["pair_id"].filter(pl.Series(flip)))
    assert report["chosen_wrong_rejected_right"] == int(flip.sum())
    assert report["pairs_with_answer"] == flipped.height


def test_prompts_without_answer_have_no_verdict(
    gsm8k: tuple[pl.DataFrame, pl.DataFrame, dict[tuple[str, str], bool]],
) -> None:
    pairs, prompts, _ = gsm8k
    some = prompts.filter(pl.col("prompt_id").is_in(pairs["prompt_id"].unique().head(10).implode()))
    checks = answer_checks(pairs, some)
    has = pairs["prompt_id"].is_in(some["prompt_id"].implode()).to_numpy()
    assert has.sum() > 0 and (~has).sum() > 0
    np.testing.assert_array_equal(checks["verdict"].is_not_null().to_numpy(), has)
    issues, report = verifiable_issues(pairs, some)
    assert issues.height == report["pairs_with_answer"] == int(has.sum())


def test_answer_column_latex_and_ties() -> None:
    records = [
        # MATH-style LaTeX: 3/4 == \\frac{3}{4}; rejected states 0.7
        {"prompt": user("q1"), "chosen": "So \\boxed{\\frac{3}{4}}.", "rejected": "It is 0.7"},
        # both wrong: no order
        {"prompt": user("q2"), "chosen": "The answer is 5.", "rejected": "The answer is 6."},
        # chosen wrong, rejected right
        {"prompt": user("q3"), "chosen": "#### 10", "rejected": "#### 12"},
    ]
    pairs = pairs_table(records, source="t").with_columns(pl.Series("answer", ["0.75", "7", "12"]))
    checks = answer_checks(pairs)  # the pairs' own answer column
    assert checks["verdict"].to_list() == [1, 0, -1]
    assert checks["rejected_answer"].to_list()[2] == "12"


def test_conflicting_answers_are_refused() -> None:
    pairs = pairs_table([{"prompt": user("q"), "chosen": "1", "rejected": "2"}], source="t")
    answers = pl.DataFrame({"prompt_id": [pairs["prompt_id"][0]] * 2, "answer": ["1", "2"]})
    with pytest.raises(ContractError, match="more than one answer"):
        answer_checks(pairs, answers)

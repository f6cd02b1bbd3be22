"""GRPO reward functions: answer checking on real GSM8K and MATH-500 answers (and against the
independent math_verify package), the format reward, the pointwise judge (a scripted judge
behind the real Anthropic wire protocol, and a local model), and a trained reward model."""

from __future__ import annotations

import json
import math
import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata.errors import InputError
from prefdata.train.answer_match import answers_match
from prefdata.train.answers import extract_answer, last_boxed, normalize_answer
from prefdata.train.recipe import RecipeError
from prefdata.train.rewards import (
    AccuracyReward,
    FormatReward,
    JudgeReward,
    RewardModelReward,
    build_rewards,
    completion_text,
)
from tests.llm.conftest import FAST_RETRIES, api_key, call_cache, fake_server  # noqa: F401
from tests.llm.fake_server import FakeLLMServer


def _as_completions(texts: list[str]) -> list[list[dict[str, str]]]:
    return [[{"role": "assistant", "content": t}] for t in texts]


# ---- extraction and equivalence ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the total is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{1} first, then \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", None),
        ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"),
        ("The answer is $1,000$.", "1,000"),
        ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
        ("She makes 2 * 9 = 18 dollars\nA: 18", "18"),
        ("**Answer:** 42 apples", "42"),
        ("First 3 eggs, then 4, so 16 - 7 = 9 are left", "9"),
        ("no numbers here", None),
        ("\\boxed 5", "5"),
        # The phrase ends at its first sentence end, outside math and braces.
        ("The answer is 42. Hope this helps!", "42"),
        ("So the answer is 18. Janet makes $18 every day.", "18"),
        ("The answer is 3.5. That is half of 7.", "3.5"),
        ("The answer is $5! = 120$. Factorials grow fast!", "5! = 120"),
        ("The answer is \\(\\frac{7}{2}. \\). See above.", "\\(\\frac{7}{2}. \\)"),
        ("Answer: 7? Yes, 7.", "7"),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    got = extract_answer(text)
    if expected is None and "boxed" in text:
        assert got == "\\left( 3, \\frac{\\pi}{2} \\right)"  # the last box, nested braces
    else:
        assert got == expected
    assert last_boxed("\\boxed{a{b{c}}d}") == "a{b{c}}d"
    assert extract_answer("only 12 here", fallback_last_number=False) is None


@pytest.mark.parametrize(
    ("text", "reference"),
    [
        ("The answer is 42. Hope this helps!", "42"),
        ("So the answer is 18. Janet makes $18 every day.", "18"),
        ("The answer is 3.5. Half of 7.", "\\frac{7}{2}"),
    ],
)
def test_answer_followed_by_more_sentences_matches(text: str, reference: str) -> None:
    assert answers_match(extract_answer(text), reference)
    assert AccuracyReward()(["q"], [text], answer=[reference]) == [1.0]


@pytest.mark.parametrize(
    ("candidate", "reference"),
    [
        ("18", "18"),
        ("1,000", "1000"),
        ("$18.00", "18"),
        ("\\$36", "36"),
        ("50\\%", "50"),
        ("18.0", "18"),
        ("0.75", "\\frac{3}{4}"),
        ("3/4", "\\dfrac{3}{4}"),
        ("\\frac34", "\\frac{3}{4}"),
        ("1\\frac{4}{5}", "\\frac{9}{5}"),
        ("\\sqrt{117}", "3\\sqrt{13}"),
        ("2\\sqrt{3} + 1", "1+2\\sqrt{3}"),
        ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("[-2, 7]", "x \\in [-2,7]"),
        ("(-\\infty,2)\\cup(3,\\infty)", "(-\\infty, 2) \\cup (3, \\infty)"),
        ("Evelyn", "\\text{Evelyn}"),
        ("B", "\\text{(B)}"),
        ("145", "145^\\circ"),
        ("864", "864 \\mbox{ inches}^2"),
        ("18 dollars", "18"),
        ("10080", "10,\\!080"),
        ("x = 5", "5"),
        ("1-\\sqrt{19}, 1+\\sqrt{19}", "1 \\pm \\sqrt{19}"),
        ("7, 5, 3", "3, 5, 7"),
        (
            "\\begin{pmatrix}-1&0\\\\0&-1\\end{pmatrix}",
            "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
        ),
        ("-5x + 7y - 11z - 4 = 0", "5x - 7y + 11z + 4 = 0"),
        ("6 + 9i", "6+9i"),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
    ],
)
def test_equivalent_answers_match(candidate: str, reference: str) -> None:
    assert answers_match(candidate, reference), (normalize_answer(candidate), reference)


@pytest.mark.parametrize(
    ("candidate", "reference"),
    [
        ("19", "18"),
        ("0.7", "\\frac{3}{4}"),
        ("[2, 5)", "(2, 5)"),
        ("(5, 2)", "(2, 5)"),
        ("3, 5", "3, 5, 7"),
        ("\\sqrt{3}", "3"),
        ("5x", "5"),
        ("Navin", "\\text{Evelyn}"),
        ("y = 2x + 4", "y = 2x + 3"),
        ("1 + \\sqrt{19}", "1 \\pm \\sqrt{19}"),
        (None, "18"),
        ("", "18"),
    ],
)
def test_different_answers_do_not_match(candidate: str | None, reference: str) -> None:
    assert not answers_match(candidate, reference)


def test_model_output_never_reaches_eval_and_towers_do_not_hang() -> None:
    # sympy is imported on first use (0.5 s cold on an idle machine, several times that on a
    # loaded one): imported before the clock starts, so only the towers are timed.
    assert answers_match("x + 1", "1 + x")
    start = time.perf_counter()
    assert not answers_match("__import__('os').system('true')", "0")
    assert not answers_match("exec(1)", "1")
    assert not answers_match("9^{9^{9^{9}}}", "1")
    assert not answers_match("10^{100000}", "1")
    assert time.perf_counter() - start < 2.0


# ---- accuracy on real data ---------------------------------------------------------------


@pytest.fixture(scope="module")
def gsm8k(shared_data: Path) -> pl.DataFrame:
    from prefdata.io.importers.math import import_gsm8k

    return import_gsm8k(shared_data / "gsm8k" / "test.jsonl").tables["prompts"]


def test_gsm8k_reference_solutions_score_one_and_perturbed_zero(gsm8k: pl.DataFrame) -> None:
    reward = AccuracyReward()
    solutions = [json.loads(m)["solution"] for m in gsm8k["metadata"]]
    answers = gsm8k["answer"].to_list()
    found: list[float] = []
    scores = reward(
        gsm8k["prompt"].to_list(),
        _as_completions(solutions),
        answer=answers,
        log_metric=lambda name, value: found.append(value),
    )
    print(f"GSM8K: {sum(s == 1.0 for s in scores)} of {len(scores)} reference solutions score 1")
    assert scores == [1.0] * gsm8k.height == [1.0] * 1319
    assert found == [1.0]
    # The same solutions with the final number changed score 0.
    perturbed = [
        s.rsplit("####", 1)[0] + f"#### {Decimal(a) + 1}"
        for s, a in zip(solutions, answers, strict=True)
    ]
    wrong = reward(gsm8k["prompt"].to_list(), _as_completions(perturbed), answer=answers)
    assert wrong == [0.0] * gsm8k.height


def test_gsm8k_model_solutions_agree_with_their_grades(
    gsm8k: pl.DataFrame, shared_data: Path
) -> None:
    """5,276 real model solutions ("... A: 26") with their published is_correct grades."""
    from prefdata.io.importers.math import import_gsm8k_solutions

    kto = import_gsm8k_solutions(
        shared_data / "gsm8k" / "example_model_solutions.jsonl", pairs="none"
    ).tables["kto"]
    joined = kto.with_row_index().join(
        gsm8k.select("prompt_id", "answer"), on="prompt_id", how="left"
    )
    assert joined["answer"].null_count() == 0 and joined.height == 4 * 1319
    scores = AccuracyReward()(
        joined["prompt"].to_list(),
        _as_completions(joined["completion"].to_list()),
        answer=joined["answer"].to_list(),
    )
    agree = sum((s == 1.0) == label for s, label in zip(scores, joined["label"], strict=True))
    print(
        f"GSM8K model solutions: accuracy reward agrees with is_correct on {agree} of {len(scores)}"
    )
    assert agree == len(scores)
    assert 0 < sum(s == 1.0 for s in scores) < len(scores)


@pytest.fixture(scope="module")
def math500(shared_data: Path) -> list[dict[str, Any]]:
    lines = (shared_data / "math500" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_math500_solutions_score_their_own_answer(math500: list[dict[str, Any]]) -> None:
    scores = AccuracyReward()(
        [r["problem"] for r in math500],
        _as_completions([r["solution"] for r in math500]),
        answer=[r["answer"] for r in math500],
    )
    print(f"MATH-500: {sum(s == 1.0 for s in scores)} of 500 solutions match their answer")
    assert scores == [1.0] * 500


def _equivalents(answer: str) -> list[tuple[str, str]]:
    """Rewritings of a MATH-500 answer that state the same value."""
    from prefdata.train.answers import to_number

    out = [("no spaces", re.sub(r"\s+", "", answer))]
    if "\\frac" in answer:
        out.append(("dfrac", answer.replace("\\frac", "\\dfrac")))
    if not re.search(r"\d,\\?!?\s*\d{3}", answer):
        out.append(("spaces", re.sub(r",\s*", ", ", answer).replace("+", " + ")))
    if "^\\circ" in answer:
        out.append(("no degrees", answer.replace("^\\circ", "")))
    if re.fullmatch(r"\(.*\)", answer) and "," in answer:
        out.append(("left right", "\\left" + answer[:-1] + "\\right)"))
    number = to_number(normalize_answer(answer))
    if number is not None:
        if number.denominator != 1:
            out.append(("slash", f"{number.numerator}/{number.denominator}"))
            d = number.denominator
            while d % 2 == 0:
                d //= 2
            while d % 5 == 0:
                d //= 5
            if d == 1:
                exact = Decimal(number.numerator) / Decimal(number.denominator)
                out.append(("decimal", format(exact, "f")))
        else:
            value = int(number)
            out += [("dot zero", f"{value}.0"), ("dollars", f"${value}$")]
            if abs(value) >= 1000:
                out.append(("thousands", f"{value:,}"))
    text = re.fullmatch(r"\\text\{(.*)\}", answer)
    if text:
        out.append(("untext", text.group(1)))
    if "=" not in answer and not re.search(r"[a-z]", re.sub(r"\\[a-z]+", "", answer)):
        out.append(("assignment", f"x = {answer}"))
    return out


def _wrongs(i: int, math500: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Answers that differ: the next problem's answer, the first integer plus one."""
    answer = math500[i]["answer"]
    out = [("other problem", math500[(i + 1) % len(math500)]["answer"])]
    digits = re.search(r"\d+", answer)
    if digits:
        bumped = str(int(digits.group()) + 1)
        out.append(("perturbed", answer[: digits.start()] + bumped + answer[digits.end() :]))
    return [(k, c) for k, c in out if normalize_answer(c) != normalize_answer(answer)]


@pytest.fixture(scope="module")
def variants(math500: list[dict[str, Any]]) -> list[tuple[str, str, str, bool]]:
    """(kind, candidate, reference, expected) for every rewriting and wrong answer."""
    out = []
    for i, row in enumerate(math500):
        out += [(k, c, row["answer"], True) for k, c in _equivalents(row["answer"])]
        out += [(k, c, row["answer"], False) for k, c in _wrongs(i, math500)]
    return out


def test_math500_rewritten_answers_match_and_wrong_ones_do_not(
    variants: list[tuple[str, str, str, bool]],
) -> None:
    same = [(c, r) for _, c, r, expected in variants if expected]
    other = [(c, r) for _, c, r, expected in variants if not expected]
    missed = [(c, r) for c, r in same if not answers_match(c, r)]
    false = [(c, r) for c, r in other if answers_match(c, r)]
    print(
        f"MATH-500 rewritings: {len(same) - len(missed)} of {len(same)} match; wrong answers: "
        f"{len(false)} of {len(other)} match; missed {missed[:5]}, false {false[:5]}"
    )
    assert len(same) > 2000 and len(other) > 900
    assert len(missed) <= 0.005 * len(same)
    # "x=5" against "5" (problem 0's neighbour) is a real equivalence; nothing else may pass.
    assert len(false) <= 2


@pytest.mark.slow
def test_math500_verdicts_agree_with_math_verify(
    math500: list[dict[str, Any]], variants: list[tuple[str, str, str, bool]]
) -> None:
    """math_verify (Hugging Face's checker) as an independent reference on the same cases."""
    math_verify = pytest.importorskip("math_verify")

    def reference(candidate: str, gold: str) -> bool:
        return bool(
            math_verify.verify(math_verify.parse(f"${gold}$"), math_verify.parse(f"${candidate}$"))
        )

    own = [(r["solution"], r["answer"]) for r in math500]
    own_mv = [
        bool(math_verify.verify(math_verify.parse(f"${a}$"), math_verify.parse(s))) for s, a in own
    ]
    cases = [(c, r, expected) for _, c, r, expected in variants]
    ours = [answers_match(c, r) for c, r, _ in cases]
    theirs = [reference(c, r) for c, r, _ in cases]
    agree = sum(a == b for a, b in zip(ours, theirs, strict=True))
    right_ours = sum(a == e for a, (_, _, e) in zip(ours, cases, strict=True))
    right_theirs = sum(b == e for b, (_, _, e) in zip(theirs, cases, strict=True))
    print(
        f"MATH-500: math_verify accepts {sum(own_mv)} of 500 solutions; on {len(cases)} "
        f"rewritten / wrong answers we agree with math_verify on {agree} "
        f"({agree / len(cases):.2%}); correct verdicts: ours {right_ours}, math_verify "
        f"{right_theirs}"
    )
    assert sum(own_mv) == 500
    assert agree >= 0.98 * len(cases)
    assert right_ours >= right_theirs


# ---- format ------------------------------------------------------------------------------


def test_format_reward_full_and_partial_credit() -> None:
    texts = [
        "<think>3 + 4 = 7</think> The answer is 7.",
        "  <think>\nreasoning\n</think>\n\\boxed{7}",
        "<think>unfinished reasoning and 7",
        "The answer is 7. <think>late</think>",
        "<think>a</think> 7 <think>again</think> 7",
        "<think>empty answer</think>   ",
    ]
    strict = FormatReward()(["q"] * 6, _as_completions(texts))
    assert strict == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    partial = FormatReward(partial=True)(["q"] * 6, texts)
    assert partial[:2] == [1.0, 1.0]
    assert partial[2] == pytest.approx(1 / 3)  # opens with <think>, nothing else
    assert partial[3] == pytest.approx(1 / 3)  # one block in order, nothing after it
    assert partial[4] == pytest.approx(2 / 3)  # opens right, text after, but two blocks
    assert partial[5] == pytest.approx(2 / 3)  # no answer after </think>
    answer_tags = FormatReward(pattern=r".*<answer>\s*-?\d+\s*</answer>\s*")
    assert answer_tags(["q"] * 2, ["so <answer> 7 </answer>", "so 7"]) == [1.0, 0.0]
    with pytest.raises(RecipeError, match="needs `parts`"):
        FormatReward(pattern="x", partial=True)
    with pytest.raises(RecipeError, match="not a valid regular expression"):
        FormatReward(pattern="(")


def test_completion_text_reads_strings_and_messages() -> None:
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "a"}]) == "a"
    blocks = [{"role": "assistant", "content": [{"type": "text", "text": "b"}]}]
    assert completion_text(blocks) == "b"


def test_accuracy_needs_a_reference_column() -> None:
    reward = AccuracyReward()
    with pytest.raises(InputError, match="reference answer column 'answer'"):
        reward(["q"], ["#### 3"])
    assert reward(["q", "q"], ["#### 3", "#### 3"], answer=["3", None]) == [1.0, None]


def test_build_rewards_checks_names_options_and_weights() -> None:
    rewards = build_rewards(
        [
            {"name": "accuracy"},
            {"name": "format", "weight": 0.25, "options": {"partial": True}},
            "format",
        ]
    )
    assert rewards.names == ["accuracy", "format", "format_2"]
    assert rewards.weights == [1.0, 0.25, 1.0]
    assert [f.__name__ for f in rewards.funcs] == rewards.names  # TRL's metric names
    assert rewards.describe()[1] == {"name": "format", "weight": 0.25, "options": {"partial": True}}
    with pytest.raises(RecipeError, match="unknown reward 'acuracy'"):
        build_rewards([{"name": "acuracy"}])
    with pytest.raises(RecipeError, match=r"takes the options answer_column, fallback_last"):
        build_rewards([{"name": "accuracy", "options": {"column": "x"}}])
    with pytest.raises(RecipeError, match="finite number"):
        build_rewards([{"name": "accuracy", "weight": "high"}])
    with pytest.raises(RecipeError, match="unknown key 'weigth'"):
        build_rewards([{"name": "accuracy", "weigth": 1}])
    with pytest.raises(RecipeError, match="non-empty list"):
        build_rewards([])


# ---- judge -------------------------------------------------------------------------------

_RESPONSE = re.compile(r"\[Response\]\n(.*?)\n\[End of Response\]", re.DOTALL)


def _scripted_judge(body: dict[str, Any]) -> dict[str, Any] | str | None:
    """Rates 9 when the response states the reference answer, 2 otherwise; refuses on cue."""
    text = str(body["messages"][-1]["content"])
    response = _RESPONSE.search(text)
    reference = re.search(r"\[Reference answer\]\n(.*?)\n", text)
    assert response and reference, "the judge must see the response and the reference"
    if "REFUSE" in response.group(1):
        return "I will not rate this."
    good = f"#### {reference.group(1)}" in response.group(1)
    return {"rationale": "Checked the final answer.", "score": 9 if good else 2}


def test_judge_reward_through_the_anthropic_protocol_is_cached(
    fake_server: FakeLLMServer,  # noqa: F811
    api_key: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    fake_server.tool_answer = _scripted_judge
    judge = JudgeReward(
        judge="anthropic:claude-sonnet-4-6",
        rubric="math",
        cache=str(tmp_path / "calls.sqlite"),
        client_options={"base_url": fake_server.url, "retry_policy": FAST_RETRIES},
    )
    prompts = [[{"role": "user", "content": "Janet has 16 eggs ... How much?"}]] * 3
    completions = _as_completions(["9 * 2 = 18\n#### 18", "16 * 2 = 32\n#### 32", "REFUSE"])
    try:
        first = judge(prompts, completions, answer=["18"] * 3)
        assert first == [1.0, 0.125, None]  # (9 - 1) / 8, (2 - 1) / 8, no rating
        served = fake_server.served("messages")
        assert served == 3 and judge.calls == 3
        # Repeated completions come from the call cache (the refusal, never cached, is asked
        # again), from the same event loop and client as the first call.
        again = judge(prompts, completions, answer=["18"] * 3)
        assert again == first
        assert fake_server.served("messages") == served + 1
    finally:
        judge.close()


def test_judge_reward_counts_and_logs_unscored_completions(
    fake_server: FakeLLMServer,  # noqa: F811
    api_key: str,  # noqa: F811
) -> None:
    """A failing call (HTTP 400, not retried) and a refusal both score None and are counted."""
    fake_server.tool_answer = _scripted_judge
    judge = JudgeReward(
        judge="anthropic:claude-sonnet-4-6",
        rubric="math",
        cache=False,
        client_options={"base_url": fake_server.url, "retry_policy": FAST_RETRIES},
    )
    prompts = [[{"role": "user", "content": "Janet has 16 eggs ... How much?"}]] * 3
    completions = _as_completions(["9 * 2 = 18\n#### 18", "[[fault:400]] #### 18", "REFUSE"])
    logged: list[tuple[str, float]] = []
    try:
        scores = judge(
            prompts,
            completions,
            answer=["18"] * 3,
            log_metric=lambda name, value: logged.append((name, value)),
        )
        assert scores == [1.0, None, None]
        assert fake_server.count("messages", status=400) == 1
        assert judge.unscored == 2 and len(judge.errors) == 2
        assert logged == [("judge/unscored", pytest.approx(2 / 3))]
        judge(prompts[:1], completions[:1], answer=["18"])  # all scored: nothing added
        assert judge.unscored == 2
    finally:
        judge.close()


def test_judge_reward_with_a_local_model(tiny: Path, tmp_path: Path) -> None:
    judge = JudgeReward(judge=f"local:{tiny}", cache=str(tmp_path / "calls.sqlite"))
    prompts = [[{"role": "user", "content": "What is 2 + 2?"}]] * 3
    completions = _as_completions(["4", "The answer is 5.", "Four, because 2 + 2 = 4."])
    try:
        scores = judge(prompts, completions)
        assert all(s is not None and 0.0 <= s <= 1.0 for s in scores)
        assert len({round(s, 9) for s in scores if s is not None}) == 3  # one reading each
        assert judge.calls == 3
        assert judge(prompts, completions) == scores and judge.calls == 3  # cached
    finally:
        judge.close()


# ---- reward model ------------------------------------------------------------------------


def test_reward_model_reward_scores_like_prefdata_eval(
    tiny: Path, hh_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    from prefdata.train import train
    from prefdata.train.evaluation import score_pairs
    from tests.train.conftest import recipe

    out = tmp_path / "rm"
    train("reward", recipe=recipe(max_steps=1), data=hh_pairs.head(4), model=tiny, out=out)
    reward = RewardModelReward(path=str(out), batch_size=2)
    pairs = hh_pairs.tail(4)
    chosen = reward(pairs["prompt"].to_list(), _as_completions(pairs["chosen"].to_list()))
    rejected = reward(pairs["prompt"].to_list(), pairs["rejected"].to_list())
    table, info = score_pairs(out, pairs)
    assert info["kind"] == "reward model score"
    assert chosen == pytest.approx(table["score_chosen"].to_list(), abs=1e-4)
    assert rejected == pytest.approx(table["score_rejected"].to_list(), abs=1e-4)
    assert all(math.isfinite(x) for x in chosen)  # type: ignore[arg-type]


def test_reward_model_reward_refuses_other_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a reward model folder"):
        RewardModelReward(path=str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "prefdata-train.json").write_text(json.dumps({"method": "dpo"}))
    with pytest.raises(InputError, match="'dpo' training output, not a reward model"):
        RewardModelReward(path=str(tmp_path))

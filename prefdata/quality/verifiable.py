"""Verifiable-answer signal: math pairs whose chosen answer is wrong and rejected answer right.

When a prompt has a checkable final answer (GSM8K, MATH-500: the importers keep it in the
prompts table's `answer` column), each side's final answer is extracted and compared with
the reference by the answer checker the GRPO accuracy reward uses
(prefdata.train.answers.extract_answer / answers_match: numbers, fractions, LaTeX, sets).
No model is involved, so this signal needs no out-of-fold care: it never sees a label.

Per pair, `verdict`:
- +1: chosen right, rejected wrong (the label agrees with the answer key);
- -1: chosen wrong, rejected right (the label is very likely swapped);
- 0: both right or both wrong (the answer key cannot order them);
- null: no reference answer for the prompt.
A side with no extractable final answer counts as wrong: it does not state the right one.

`answer_checks` gives the per-pair table; `verifiable_issues` the issue rows
(issue = "wrong_answer_chosen", only for pairs with a reference answer):
score 0.0 and is_issue for verdict -1, 1.0 for +1, 0.5 (not an issue) for 0.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from prefdata.errors import ContractError
from prefdata.schema import conform

ISSUE = "wrong_answer_chosen"
ANSWER_COLUMN = "answer"


def reference_answers(pairs: pl.DataFrame, answers: pl.DataFrame | None = None) -> pl.Series:
    """The reference answer of each pair's prompt (String, null where there is none).

    answers: a prompts table with `prompt_id` and `answer` (import_gsm8k, import_math500),
    joined on prompt_id. Without it, the pairs' own `answer` column is used when present.
    A prompt_id listed twice with different answers is a ContractError (which one is right?).
    """
    if answers is None:
        if ANSWER_COLUMN in pairs.columns:
            return pairs[ANSWER_COLUMN].cast(pl.String)
        return pl.Series(ANSWER_COLUMN, [None] * pairs.height, dtype=pl.String)
    for col in ("prompt_id", ANSWER_COLUMN):
        if col not in answers.columns:
            raise ContractError(
                f"answers need columns prompt_id and answer; missing '{col}'", column=col
            )
    if "prompt_id" not in pairs.columns:
        raise ContractError("pairs need prompt_id to join answers", column="prompt_id")
    keyed = answers.select(
        pl.col("prompt_id").cast(pl.String), pl.col(ANSWER_COLUMN).cast(pl.String)
    ).filter(pl.col(ANSWER_COLUMN).is_not_null() & (pl.col(ANSWER_COLUMN).str.strip_chars() != ""))
    clash = keyed.unique().filter(pl.col("prompt_id").is_duplicated())
    if clash.height:
        raise ContractError(
            f"prompt_id {clash['prompt_id'][0]!r} has more than one answer", column="answer"
        )
    joined = pairs.select(pl.col("prompt_id").cast(pl.String)).join(
        keyed.unique(), on="prompt_id", how="left", maintain_order="left"
    )
    return joined[ANSWER_COLUMN]


def answer_checks(pairs: pl.DataFrame, answers: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per pair: pair_id, answer (reference), chosen_answer, rejected_answer (extracted),
    chosen_correct, rejected_correct (null without a reference), verdict (+1 / 0 / -1 / null,
    see the module doc). Row order as in `pairs`."""
    from prefdata.train.answer_match import answers_match
    from prefdata.train.answers import extract_answer

    for col in ("pair_id", "chosen", "rejected"):
        if col not in pairs.columns:
            raise ContractError(f"the answer check needs column '{col}'", column=col)
    reference = reference_answers(pairs, answers).to_list()
    rows: dict[str, list[Any]] = {k: [] for k in ("ca", "ra", "cc", "rc", "verdict")}
    for ref, chosen, rejected in zip(
        reference, pairs["chosen"].to_list(), pairs["rejected"].to_list(), strict=True
    ):
        if ref is None:
            for key in rows:
                rows[key].append(None)
            continue
        ca = extract_answer(chosen or "")
        ra = extract_answer(rejected or "")
        cc = answers_match(ca, ref)
        rc = answers_match(ra, ref)
        rows["ca"].append(ca)
        rows["ra"].append(ra)
        rows["cc"].append(cc)
        rows["rc"].append(rc)
        rows["verdict"].append(int(cc) - int(rc))
    return pl.DataFrame(
        {
            "pair_id": pairs["pair_id"].cast(pl.String),
            "answer": pl.Series(reference, dtype=pl.String),
            "chosen_answer": pl.Series(rows["ca"], dtype=pl.String),
            "rejected_answer": pl.Series(rows["ra"], dtype=pl.String),
            "chosen_correct": pl.Series(rows["cc"], dtype=pl.Boolean),
            "rejected_correct": pl.Series(rows["rc"], dtype=pl.Boolean),
            "verdict": pl.Series(rows["verdict"], dtype=pl.Int8),
        }
    )


def verifiable_issues(
    pairs: pl.DataFrame, answers: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Issue rows of the answer check (see the module doc) and a report: pairs,
    pairs_with_answer, chosen_wrong_rejected_right, chosen_right_rejected_wrong,
    same_correctness."""
    checks = answer_checks(pairs, answers).filter(pl.col("verdict").is_not_null())
    v = pl.col("verdict")
    issues = checks.select(
        pl.col("pair_id").alias("item_id"),
        pl.lit(ISSUE).alias("issue"),
        pl.when(v < 0).then(0.0).when(v > 0).then(1.0).otherwise(0.5).alias("score"),
        (v < 0).alias("is_issue"),
        pl.format(
            "reference answer {}: chosen says {} ({}), rejected says {} ({})",
            "answer",
            pl.col("chosen_answer").fill_null("nothing"),
            pl.when("chosen_correct").then(pl.lit("right")).otherwise(pl.lit("wrong")),
            pl.col("rejected_answer").fill_null("nothing"),
            pl.when("rejected_correct").then(pl.lit("right")).otherwise(pl.lit("wrong")),
        ).alias("reason"),
    )
    report = {
        "issue": ISSUE,
        "pairs": pairs.height,
        "pairs_with_answer": checks.height,
        "chosen_wrong_rejected_right": int((checks["verdict"] < 0).sum()),
        "chosen_right_rejected_wrong": int((checks["verdict"] > 0).sum()),
        "same_correctness": int((checks["verdict"] == 0).sum()),
    }
    return conform(issues, "issues"), report

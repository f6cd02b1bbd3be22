"""Math problems with checkable answers: GSM8K, MATH-500, and GSM8K's graded model solutions.

- `import_gsm8k`: GSM8K JSONL (`question`, `answer` = worked solution ending in "#### N")
  -> prompts with `answer` = N (thousands separators removed: "1,000" -> "1000").
- `import_math500`: MATH-500 JSONL (`problem`, `solution`, `answer` (LaTeX), `subject`,
  `level`, `unique_id`) -> prompts with `answer` = the LaTeX answer, unchanged.
- `import_gsm8k_solutions`: GSM8K `example_model_solutions.jsonl` (`question`,
  `ground_truth`, and one `{is_correct, solution}` object per generator) -> KTO rows (one
  per solution) and correct-vs-incorrect pairs.

The prompts tables feed verifiable-reward training (GRPO accuracy rewards); their
`prompt_id` equals the one on the KTO rows and pairs of the same question, so they join.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from prefdata.errors import InputError, RowError
from prefdata.io.importers.common import (
    Imported,
    Source,
    field_error,
    file_of,
    finish,
    import_per_line,
    json_lines,
    kto_table,
    pairs_table,
    rejected_rows,
    text_at,
    user,
    where,
)
from prefdata.stage import Input, stage

_GSM8K_FINAL = "####"
# Numbers as GSM8K writes them once thousands separators are gone: "18", "-3", "0.5".
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def gsm8k_final_answer(solution: str) -> str:
    """The number after the last "####" in a GSM8K solution, without thousands separators.

    Raises ValueError when there is no "####" or what follows is not a number.
    """
    if _GSM8K_FINAL not in solution:
        raise RowError("no final answer (no '####' line)")
    final = solution.rsplit(_GSM8K_FINAL, 1)[1].strip().replace(",", "")
    if not _NUMBER.fullmatch(final):
        raise RowError(f"final answer is not a number ({final!r} after '####')")
    return final


@stage("gsm8k", outputs=("prompts",))
def import_gsm8k(path: Annotated[Source, Input(table=True)], *, source: str = "gsm8k") -> Imported:
    """GSM8K JSONL -> Imported with a `prompts` table.

    Input columns: `question` (str), `answer` (str: reasoning, last line "#### N").
    Output: prompts with prompt = the question as one user message, `answer` = N with
    commas removed, `metadata` = {"solution": the full reference answer text}. A row
    without a numeric final answer goes to `rejected` with its reason.

    Example: prefdata import gsm8k test.jsonl -o gsm8k.prompts.parquet

    Args:
        path: the GSM8K JSONL file (from Python also a table with question and answer)
        source: the `source` column of the prompts
    """

    def record_of(obj: dict[str, Any], line: int) -> dict[str, Any]:
        question = text_at(obj.get("question"), path, line, "question")
        solution = text_at(obj.get("answer"), path, line, "answer")
        return {
            "prompt": user(question),
            "answer": gsm8k_final_answer(solution),
            "metadata": {"solution": solution},
        }

    return import_per_line(path, record_of, "prompts", source=source, dataset="gsm8k")


@stage("math500", outputs=("prompts",))
def import_math500(
    path: Annotated[Source, Input(table=True)], *, source: str = "math500"
) -> Imported:
    """MATH-500 JSONL -> Imported with a `prompts` table.

    Input columns: `problem`, `solution`, `answer` (LaTeX), `subject`, `level` (int 1-5),
    `unique_id`. Output: prompts with prompt = the problem as one user message, `answer`
    = the LaTeX answer as written (comparing it needs normalised or symbolic matching,
    which is the reward function's job, not the importer's), `metadata` = {subject, level,
    unique_id, solution}. A row with a blank answer goes to `rejected`.

    Example: prefdata import math500 test.jsonl -o math500.prompts.parquet

    Args:
        path: the MATH-500 JSONL file (from Python also a table of its records)
        source: the `source` column of the prompts
    """

    def record_of(obj: dict[str, Any], line: int) -> dict[str, Any]:
        problem = text_at(obj.get("problem"), path, line, "problem")
        answer = text_at(obj.get("answer"), path, line, "answer")
        if not answer.strip():
            raise RowError("missing answer")
        return {
            "prompt": user(problem),
            "answer": answer,
            "metadata": {
                "subject": obj.get("subject"),
                "level": obj.get("level"),
                "unique_id": obj.get("unique_id"),
                "solution": obj.get("solution"),
            },
        }

    return import_per_line(path, record_of, "prompts", source=source, dataset="math500")


def _graded_solutions(obj: dict[str, Any], path: Source, line: int) -> list[tuple[str, bool, str]]:
    """(generator, is_correct, solution) for each `{is_correct, solution}` object in a row.

    A field that holds a list, or an object without `is_correct`, looks like a generator
    written another way: ValueError (the row is set aside with the reason), because
    skipping it would drop that solution without a word. Text, numbers and null in other
    fields are metadata and ignored.
    """
    out = []
    for key, value in obj.items():
        if key in ("question", "ground_truth"):
            continue
        if isinstance(value, list) or (isinstance(value, dict) and "is_correct" not in value):
            what = "a list" if isinstance(value, list) else "an object without is_correct"
            raise RowError(f"field '{key}' is {what}, not a {{is_correct, solution}} object")
        if not isinstance(value, dict):
            continue
        if not isinstance(value["is_correct"], bool):
            raise field_error(
                f"expected is_correct true/false, got {value['is_correct']!r}", path, line, key
            )
        if not isinstance(value.get("solution"), str):
            raise InputError("expected a solution string", source=where(path), row=line, column=key)
        out.append((key, value["is_correct"], value["solution"]))
    return out


@stage("gsm8k-solutions", outputs=("kto", "pairs"))
def import_gsm8k_solutions(
    path: Annotated[Source, Input(table=True)],
    *,
    pairs: Literal["all", "none"] = "all",
    source: str = "gsm8k-solutions",
) -> Imported:
    """GSM8K graded model solutions -> Imported with `kto` and (unless pairs="none") `pairs`.

    Input columns: `question`, `ground_truth`, and per generator (any key whose value is an
    object with `is_correct`; in the GSM8K file: 6b_finetuning, 6b_verification,
    175b_finetuning, 175b_verification) `{is_correct: bool, solution: str}`.

    Output:
    - kto: one row per solution; prompt = the question, completion = the solution,
      label = is_correct, confidence = 1.0 (a programmatic answer check, not a vote),
      source = the generator key.
    - pairs (pairs="all"): for each question, every distinct correct solution text against
      every distinct incorrect one (identical texts from two generators are one
      completion; a text never pairs with itself). confidence = margin = 1.0, n_votes = 1,
      source = `source`, provenance = {file, line, generators_chosen, generators_rejected}.
      A question whose solutions are all correct or all incorrect gives no pair.

    Example: prefdata import gsm8k-solutions solutions.jsonl -o gsm8k.kto.parquet

    Args:
        path: the graded GSM8K solutions JSONL file (from Python also a table of its records)
        pairs: all: also every correct-vs-incorrect pair per question; none: KTO rows only
        source: the `source` column
    """
    if pairs not in ("all", "none"):
        raise InputError(f"pairs must be 'all' or 'none', got {pairs!r}")
    kto_records: list[dict[str, Any]] = []
    pair_records: list[dict[str, Any]] = []
    set_aside: list[tuple[int, str, Any]] = []
    n_rows = 0
    duplicate_texts = 0
    one_sided = 0
    for line, obj in json_lines(path):
        n_rows += 1
        question = text_at(obj.get("question"), path, line, "question")
        prompt = user(question)
        try:
            graded = _graded_solutions(obj, path, line)
        except InputError:
            raise
        except ValueError as exc:
            set_aside.append((line, str(exc), obj))
            continue
        if not graded:
            raise InputError(
                "no generator solutions ({is_correct, solution} objects) in this row",
                source=where(path),
                row=line,
            )
        for generator, correct, solution in graded:
            kto_records.append(
                {
                    "prompt": prompt,
                    "completion": solution,
                    "label": correct,
                    "confidence": 1.0,
                    "source": generator,
                }
            )
        # Distinct texts per side, keeping which generators wrote each: two generators
        # writing the same text is one completion (and one pair_id), not two.
        sides: dict[bool, dict[str, list[str]]] = {True: {}, False: {}}
        for generator, correct, solution in graded:
            sides[correct].setdefault(solution, []).append(generator)
        duplicate_texts += len(graded) - len(sides[True]) - len(sides[False])
        if not sides[True] or not sides[False]:
            one_sided += 1
        if pairs == "none":
            continue
        for good, good_gens in sides[True].items():
            for bad, bad_gens in sides[False].items():
                if good == bad:
                    continue
                pair_records.append(
                    {
                        "prompt": prompt,
                        "chosen": good,
                        "rejected": bad,
                        "confidence": 1.0,
                        "margin": 1.0,
                        "n_votes": 1,
                        "provenance": {
                            **file_of(path),
                            "line": line,
                            "check": "is_correct",
                            "generators_chosen": good_gens,
                            "generators_rejected": bad_gens,
                        },
                    }
                )
    tables = {"kto": kto_table(kto_records, source=source)}
    if pairs == "all":
        tables["pairs"] = pairs_table(pair_records, source=source)
    report = {
        "source_rows": n_rows,
        "solutions": len(kto_records),
        "correct": sum(r["label"] for r in kto_records),
        "duplicate_solution_texts": duplicate_texts,
        "questions_without_pair": one_sided,
    }
    return finish(tables, rejected_rows(set_aside), report, path=path, dataset="gsm8k-solutions")

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from prefdata.errors import InputError
from prefdata.io.importers.math import (
    gsm8k_final_answer,
    import_gsm8k,
    import_gsm8k_solutions,
    import_math500,
)
from prefdata.schema import validate

GENERATORS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def _manifest(shared_data: Path, name: str) -> dict[str, Any]:
    entries = json.loads((shared_data / "MANIFEST.json").read_text())
    return next(e for e in entries if e["name"] == name)


def _raw(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_gsm8k_real_file(shared_data: Path) -> None:
    path = shared_data / "gsm8k" / "test.jsonl"
    result = import_gsm8k(path)
    prompts = validate(result.tables["prompts"], "prompts")
    assert prompts.height == _manifest(shared_data, "gsm8k_test")["records"] == 1319
    assert result.rejected.height == 0
    raw = _raw(path)
    # Every answer is a plain number; the ones written with thousands separators lost them.
    answers = prompts["answer"].to_list()
    assert all(re.fullmatch(r"-?\d+", a) for a in answers)
    with_commas = [i for i, r in enumerate(raw) if "," in r["answer"].rsplit("####", 1)[1]]
    assert len(with_commas) == 14
    for i in with_commas:
        assert answers[i] == raw[i]["answer"].rsplit("####", 1)[1].strip().replace(",", "")
    first = prompts.row(0, named=True)
    assert first["prompt"] == [{"role": "user", "content": raw[0]["question"]}]
    assert first["answer"] == "18"
    assert json.loads(first["metadata"]) == {"solution": raw[0]["answer"]}
    assert set(prompts["source"]) == {"gsm8k"}


def test_math500_real_file(shared_data: Path) -> None:
    path = shared_data / "math500" / "test.jsonl"
    result = import_math500(path)
    prompts = validate(result.tables["prompts"], "prompts")
    assert prompts.height == _manifest(shared_data, "math500_test")["records"] == 500
    raw = _raw(path)
    assert prompts["answer"].to_list() == [r["answer"] for r in raw]
    meta = [json.loads(m) for m in prompts["metadata"]]
    assert [m["unique_id"] for m in meta] == [r["unique_id"] for r in raw]
    assert meta[0]["subject"] == "Precalculus" and meta[0]["level"] == 2
    assert all(1 <= m["level"] <= 5 for m in meta)
    assert prompts["answer"][0] == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_gsm8k_solutions_real_file(shared_data: Path) -> None:
    path = shared_data / "gsm8k" / "example_model_solutions.jsonl"
    manifest = _manifest(shared_data, "gsm8k_example_model_solutions")
    result = import_gsm8k_solutions(path)
    kto = validate(result.tables["kto"], "kto")
    pairs = validate(result.tables["pairs"], "pairs")
    assert kto.height == 4 * manifest["records"] == 5276
    correct = {s: int(kto.filter(kto["source"] == s)["label"].sum()) for s in GENERATORS}
    assert correct == manifest["correct_counts"]
    assert int(kto["label"].sum()) == 2001
    assert set(kto["confidence"]) == {1.0}

    # The pair count, worked out here from the raw file: per question, distinct correct
    # texts x distinct incorrect texts, never a text against itself.
    raw = _raw(path)
    expected = 0
    good_texts: set[str] = set()
    bad_texts: set[str] = set()
    for r in raw:
        good = {r[g]["solution"] for g in GENERATORS if r[g]["is_correct"]}
        bad = {r[g]["solution"] for g in GENERATORS if not r[g]["is_correct"]}
        expected += sum(1 for a in good for b in bad if a != b)
        good_texts |= good
        bad_texts |= bad
    assert pairs.height == expected == 2426
    assert result.rejected.height == 0
    assert set(pairs["chosen"]) <= good_texts and set(pairs["rejected"]) <= bad_texts
    assert set(pairs["confidence"]) == {1.0}
    assert result.report["duplicate_solution_texts"] == 8
    # Pairs and KTO rows of a question share the prompt_id of the GSM8K prompts table.
    gsm = import_gsm8k(shared_data / "gsm8k" / "test.jsonl").tables["prompts"]
    assert set(kto["prompt_id"]) == set(gsm["prompt_id"])
    assert set(pairs["prompt_id"]) < set(gsm["prompt_id"])


def test_gsm8k_solutions_without_pairs(shared_data: Path) -> None:
    path = shared_data / "gsm8k" / "example_model_solutions.jsonl"
    result = import_gsm8k_solutions(path, pairs="none")
    assert list(result.tables) == ["kto"]
    assert result.tables["kto"].height == 5276


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gsm8k_rows_without_numeric_answer_are_rejected(tmp_path: Path) -> None:
    src = _write(
        tmp_path / "gsm.jsonl",
        [
            {"question": "q1", "answer": "so 1,000 + 234\n#### 1,234"},
            {"question": "q2", "answer": "no final line"},
            {"question": "q3", "answer": "#### about ten"},
            {"question": "q4", "answer": "#### -0.5"},
        ],
    )
    result = import_gsm8k(src)
    assert result.tables["prompts"]["answer"].to_list() == ["1234", "-0.5"]
    assert result.rejected["row"].to_list() == [2, 3]
    assert "no '####'" in result.rejected["reason"][0]
    assert "not a number" in result.rejected["reason"][1]
    assert result.report["rows_rejected"] == 2
    assert result.report["dropped_final_answer_is_not_a_number"] == 1
    assert result.report["dropped_no_final_answer"] == 1


def test_final_answer_takes_the_last_marker() -> None:
    assert gsm8k_final_answer("a #### 1\n#### 2,500") == "2500"
    with pytest.raises(ValueError):
        gsm8k_final_answer("#### ")


def test_gsm8k_wrong_type_names_row_and_column(tmp_path: Path) -> None:
    src = _write(
        tmp_path / "gsm.jsonl",
        [{"question": "q", "answer": "#### 1"}, {"question": "q2", "answer": 3}],
    )
    with pytest.raises(InputError) as err:
        import_gsm8k(src)
    assert "gsm.jsonl" in str(err.value) and "row 2" in str(err.value)
    assert err.value.column == "answer"


def test_math500_blank_answer_is_rejected(tmp_path: Path) -> None:
    src = _write(
        tmp_path / "m.jsonl",
        [
            {
                "problem": "p1",
                "solution": "s",
                "answer": "\\frac12",
                "subject": "Algebra",
                "level": 1,
                "unique_id": "a/1",
            },
            {
                "problem": "p2",
                "solution": "s",
                "answer": " ",
                "subject": "Algebra",
                "level": 1,
                "unique_id": "a/2",
            },
        ],
    )
    result = import_math500(src)
    assert result.tables["prompts"]["answer"].to_list() == ["\\frac12"]
    assert result.rejected["row"].to_list() == [2]
    assert result.report["dropped_missing_answer"] == 1


def test_identical_solution_texts_are_never_paired(tmp_path: Path) -> None:
    same = "x = 2\nA: 2"
    src = _write(
        tmp_path / "sol.jsonl",
        [
            {
                "question": "q",
                "ground_truth": "A: 2",
                "g1": {"is_correct": True, "solution": same},
                "g2": {"is_correct": True, "solution": same},
                "g3": {"is_correct": False, "solution": "x = 3\nA: 3"},
                "g4": {"is_correct": False, "solution": same},
            }
        ],
    )
    result = import_gsm8k_solutions(src)
    pairs = result.tables["pairs"]
    # Two generators wrote the same correct text: one pair, not two copies of it.
    assert pairs.select("chosen", "rejected").rows() == [(same, "x = 3\nA: 3")]
    prov = json.loads(pairs["provenance"][0])
    assert prov["generators_chosen"] == ["g1", "g2"] and prov["generators_rejected"] == ["g3"]
    assert result.tables["kto"]["source"].to_list() == ["g1", "g2", "g3", "g4"]
    assert result.tables["kto"]["label"].to_list() == [True, True, False, False]


def test_solution_with_non_bool_label_names_column(tmp_path: Path) -> None:
    src = _write(
        tmp_path / "sol.jsonl",
        [{"question": "q", "g1": {"is_correct": "yes", "solution": "s"}}],
    )
    with pytest.raises(InputError) as err:
        import_gsm8k_solutions(src)
    assert err.value.column == "g1" and err.value.row == 1

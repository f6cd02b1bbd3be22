from __future__ import annotations

import polars as pl
import pytest

from prefdata.errors import ContractError
from prefdata.schema import CONTRACTS, MESSAGES, conform, find_problems, split_problems, validate


def pairs_rows(**overrides: list[object]) -> pl.DataFrame:
    base: dict[str, list[object]] = {
        "pair_id": ["p1", "p2"],
        "prompt_id": ["q", "q"],
        "prompt": ["Say hi", "Say hi"],
        "chosen": ["hi", "hello"],
        "rejected": ["no", "go away"],
        "confidence": [0.9, 0.6],
        "margin": [1.0, None],
        "n_votes": [3, 1],
        "agreement": [1.0, None],
        "source": ["t", "t"],
        "provenance": ["{}", "{}"],
    }
    base.update(overrides)
    return pl.DataFrame(base, strict=False)


def test_text_prompt_becomes_one_user_message() -> None:
    table = validate(pairs_rows(), "pairs")
    assert table.schema["prompt"] == MESSAGES
    assert table["prompt"][0].to_list() == [{"role": "user", "content": "Say hi"}]


def test_missing_column_is_named_with_file() -> None:
    with pytest.raises(ContractError) as err:
        validate(pairs_rows().drop("rejected"), "pairs", source="data/p.jsonl")
    msg = str(err.value)
    assert "data/p.jsonl" in msg and "'rejected'" in msg and "missing column" in msg


def test_mistyped_value_names_row_and_column() -> None:
    table = pairs_rows(n_votes=["3", "three"])
    with pytest.raises(ContractError) as err:
        validate(table, "pairs", source="p.jsonl")
    assert err.value.row == 2 and err.value.column == "n_votes"
    assert "'three'" in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "column", "problem"),
    [
        ({"rejected": ["hi", "go away"]}, "rejected", "chosen == rejected"),
        ({"chosen": ["hi", "   "]}, "chosen", "empty text"),
        ({"prompt": ["Say hi", " \n\t"]}, "prompt", "prompt is empty"),
        ({"pair_id": ["p1", "p1"]}, "pair_id", "duplicate pair_id"),
        ({"confidence": [0.9, 1.5]}, "confidence", "outside 0-1"),
    ],
)
def test_bad_rows_are_located(
    overrides: dict[str, list[object]], column: str, problem: str
) -> None:
    table = pairs_rows(**overrides)
    with pytest.raises(ContractError) as err:
        validate(table, "pairs", source="x.parquet")
    assert column in str(err.value) and problem in str(err.value)
    good, bad = split_problems(conform(table, "pairs"), "pairs")
    # Nothing is lost: every row is either kept or rejected with its reason.
    assert good.height + bad.height == table.height
    assert bad.height == 1 and problem in bad["reason"][0]


def test_unknown_contract_lists_known_ones() -> None:
    with pytest.raises(ContractError, match="known: prompts"):
        validate(pairs_rows(), "pears")


def test_every_contract_accepts_its_empty_table() -> None:
    for name, spec in CONTRACTS.items():
        table = pl.DataFrame(schema=spec.required)
        assert validate(table, name).height == 0
        assert find_problems(table, name).height == 0


def test_annotation_vocabularies_are_checked() -> None:
    ann = pl.DataFrame(
        {
            "item_id": ["i", "i"],
            "annotator": ["x", "y"],
            "annotator_kind": ["human", "robot"],
            "label": ["a", "b"],
            "order": ["ab", "ca"],
        }
    )
    # conform refuses a value outside the vocabulary (so a stage that counts bad rows itself
    # never reads one); find_problems names every such row.
    with pytest.raises(ContractError, match=r"row 2, column 'annotator_kind': must be one of"):
        conform(ann, "annotations")
    problems = find_problems(ann, "annotations")
    assert set(problems["column"]) == {"annotator_kind", "order"}
    assert problems["row"].to_list() == [2, 2]


def test_unreadable_vote_keeps_its_row_with_error() -> None:
    ann = pl.DataFrame(
        {
            "item_id": ["i", "i"],
            "annotator": ["judge", "judge2"],
            "annotator_kind": ["llm", "llm"],
            "label": [None, None],
            "error": ["unparseable reply 'maybe'", None],
        },
        schema_overrides={"label": pl.String},
    )
    problems = find_problems(conform(ann, "annotations"), "annotations")
    # the row with an error is fine; the one with neither label nor error is not
    assert problems.select("row", "column").rows() == [(2, "label")]


def _pairs(**change: list[object]) -> pl.DataFrame:
    base: dict[str, list[object]] = {
        "pair_id": ["p1", "p2"],
        "prompt_id": ["q", "q"],
        "prompt": ["Q?", "Q?"],
        "chosen": ["yes", "sure"],
        "rejected": ["no", "nah"],
        "confidence": [0.9, 0.8],
        "margin": [None, None],
        "n_votes": [1, 1],
        "agreement": [None, None],
        "source": ["s", "s"],
        "provenance": ["{}", "{}"],
    }
    return pl.DataFrame({**base, **change}, strict=False)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"chosen": [float("nan"), float("nan")]}, r"row 1, column 'chosen': NaN"),
        ({"chosen": [12345, 7]}, r"row 1, column 'chosen': expected text, got a number"),
        ({"rejected": [True, False]}, r"row 1, column 'rejected': expected text, got true"),
        ({"confidence": [0.5, float("nan")]}, r"row 2, column 'confidence': not a finite"),
        ({"source": [1.0, float("nan")]}, r"row 2, column 'source': NaN"),
    ],
)
def test_nan_and_numbers_never_become_text(change: dict[str, list[object]], where: str) -> None:
    with pytest.raises(ContractError, match=where):
        validate(_pairs(**change), "pairs", source="f.parquet")


def test_numbers_in_ids_are_spelled_as_text() -> None:
    table = validate(_pairs(pair_id=[1, 2]), "pairs")
    assert table["pair_id"].to_list() == ["1", "2"]


def test_annotator_kind_defaults_to_human_and_partial_contracts() -> None:
    votes = pl.DataFrame({"item_id": ["i"], "annotator": ["x"], "label": ["a"]})
    assert validate(votes, "annotations")["annotator_kind"].to_list() == ["human"]
    with pytest.raises(ContractError, match="must be one of"):
        validate(votes.with_columns(pl.lit("robot").alias("annotator_kind")), "annotations")
    # A stage that needs only part of a contract checks what is there.
    slim = pl.DataFrame({"prompt": ["q"], "chosen": ["a"], "rejected": ["a"]})
    with pytest.raises(ContractError, match="chosen == rejected"):
        validate(slim, "pairs", needs=("prompt", "chosen", "rejected"))
    with pytest.raises(ContractError, match="missing column"):
        validate(slim.drop("chosen"), "pairs", needs=("prompt", "chosen", "rejected"))

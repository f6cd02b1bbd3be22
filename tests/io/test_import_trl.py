from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata.errors import InputError
from prefdata.io.importers.hh_rlhf import import_hh_rlhf
from prefdata.io.importers.trl import import_trl
from prefdata.io.tables import write_table
from prefdata.schema import MESSAGES, validate


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _u(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _a(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def test_standard_explicit_prompt(tmp_path: Path) -> None:
    src = _jsonl(
        tmp_path / "std.jsonl",
        [
            {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
            {"prompt": "Water is", "chosen": " wet.", "rejected": " wet."},
        ],
    )
    result = import_trl(src)
    pairs = validate(result.tables["pairs"], "pairs")
    assert pairs.select("chosen", "rejected").rows() == [(" blue.", " green.")]
    assert pairs["prompt"][0].to_list() == [_u("The sky is")]
    assert pairs["n_votes"][0] == 1 and pairs["confidence"][0] is None
    assert json.loads(pairs["provenance"][0]) == {"file": "std.jsonl", "row": 1}
    assert result.report["form_standard_explicit"] == 2
    # chosen == rejected breaks the contract: kept out, with the reason.
    assert result.report["dropped_chosen_eq_rejected"] == 1


def test_standard_implicit_prompt_is_refused_with_a_fix(tmp_path: Path) -> None:
    src = _jsonl(
        tmp_path / "implicit.jsonl",
        [{"chosen": "The sky is blue.", "rejected": "The sky is green."}],
    )
    with pytest.raises(InputError) as err:
        import_trl(src)
    message = str(err.value)
    assert "implicit.jsonl" in message and "cannot be split" in message
    assert "add a 'prompt' column" in message


def test_conversational_implicit_prompt(tmp_path: Path) -> None:
    history = [_u("hi"), _a("hello"), _u("what colour is the sky?")]
    src = _jsonl(
        tmp_path / "conv_implicit.jsonl",
        [
            {"chosen": [*history, _a("Blue.")], "rejected": [*history, _a("Green.")]},
            # differs before the last turn: no common prompt, so the row is rejected
            {"chosen": [_u("a"), _a("x")], "rejected": [_u("b"), _a("y")]},
            # ends with a user turn
            {"chosen": [_u("a"), _a("x"), _u("more")], "rejected": [_u("a"), _a("x"), _u("m")]},
        ],
    )
    result = import_trl(src)
    pairs = validate(result.tables["pairs"], "pairs")
    assert pairs.height == 1
    assert pairs["prompt"][0].to_list() == history
    assert (pairs["chosen"][0], pairs["rejected"][0]) == ("Blue.", "Green.")
    assert result.rejected["row"].to_list() == [2, 3]
    assert "differ before the last turn" in result.rejected["reason"][0]
    assert "assistant turn" in result.rejected["reason"][1]
    assert result.report["form_conversational_implicit"] == 1


def test_conversational_explicit_prompt_from_parquet(tmp_path: Path) -> None:
    src = tmp_path / "conv.parquet"
    pl.DataFrame(
        {
            "prompt": [
                [{"role": "system", "content": "Be brief."}, _u("2+2?")],
                [_u("q")],
                [_u("q2")],
            ],
            "chosen": [[_a("4")], [_a("one"), _a("two")], [_u("not the assistant")]],
            "rejected": [[_a("5")], [_a("three")], [_a("fine")]],
        },
        schema={"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES},
    ).write_parquet(src)
    result = import_trl(src)
    pairs = validate(result.tables["pairs"], "pairs")
    assert pairs.select("chosen", "rejected").rows() == [("4", "5")]
    assert [m["role"] for m in pairs["prompt"][0].to_list()] == ["system", "user"]
    assert result.rejected["row"].to_list() == [2, 3]
    assert "chosen is not one message (2 messages)" in result.rejected["reason"][0]
    assert "chosen is not an assistant message (role 'user')" in result.rejected["reason"][1]
    assert result.report["dropped_chosen_is_not_one_message"] == 1


def test_unpaired_standard_and_conversational(tmp_path: Path) -> None:
    std = _jsonl(
        tmp_path / "kto.jsonl",
        [
            {"prompt": "The sky is", "completion": " blue.", "label": True},
            {"prompt": "The sky is", "completion": " green.", "label": False},
            {"prompt": "The sky is", "completion": " red.", "label": None},
        ],
    )
    result = import_trl(std)
    kto = validate(result.tables["kto"], "kto")
    assert kto.select("completion", "label").rows() == [(" blue.", True), (" green.", False)]
    assert kto["confidence"].null_count() == 2
    assert result.rejected["row"].to_list() == [3]
    assert "label is not true / false" in result.rejected["reason"][0]

    conv = _jsonl(
        tmp_path / "kto_conv.jsonl",
        [
            {
                "prompt": [_u("Sky colour?")],
                "completion": [_a("Blue")],
                "label": True,
                "confidence": 0.9,
            },
            {
                "prompt": [_u("Sky colour?")],
                "completion": [_a("Green")],
                "label": False,
                "confidence": 0.6,
            },
        ],
    )
    result = import_trl(conv, kind="unpaired")
    kto = validate(result.tables["kto"], "kto")
    assert kto.select("completion", "label", "confidence").rows() == [
        ("Blue", True, 0.9),
        ("Green", False, 0.6),
    ]
    assert result.report["form_conversational_unpaired"] == 2


def test_datasets_save_to_disk_folder(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "hf_pairs"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(
                [{"prompt": [_u("a")], "chosen": [_a("good")], "rejected": [_a("bad")]}]
            ),
            "test": datasets.Dataset.from_list(
                [{"prompt": [_u("b")], "chosen": [_a("fine")], "rejected": [_a("poor")]}]
            ),
        }
    ).save_to_disk(str(folder))
    pairs = validate(import_trl(folder).tables["pairs"], "pairs")
    assert pairs.select("chosen", "split").sort("split").rows() == [
        ("fine", "test"),
        ("good", "train"),
    ]


def test_prefdata_pair_columns_are_kept(tmp_path: Path) -> None:
    src = tmp_path / "pairs.jsonl"
    write_table(
        pl.DataFrame(
            {
                "prompt": [[_u("q")], [_u("r")]],
                "chosen": ["yes", "ok"],
                "rejected": ["no", "bad"],
                "confidence": [0.8, None],
                "n_votes": [3, 1],
                "agreement": [2 / 3, None],
                "source": ["judge-panel", "humans"],
                "provenance": ['{"judge": "m1"}', '{"who": "a"}'],
            },
            schema_overrides={"prompt": MESSAGES},
        ),
        src,
    )
    pairs = validate(import_trl(src).tables["pairs"], "pairs")
    first = pairs.row(0, named=True)
    assert first["confidence"] == 0.8 and first["n_votes"] == 3
    assert first["agreement"] == pytest.approx(2 / 3)
    assert first["source"] == "judge-panel"
    assert json.loads(first["provenance"]) == {"judge": "m1"}
    assert pairs["confidence"][1] is None and pairs["source"][1] == "humans"


def test_bad_provenance_names_row_and_column(tmp_path: Path) -> None:
    src = _jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "q", "chosen": "a", "rejected": "b", "provenance": "{}"},
            {"prompt": "q", "chosen": "a", "rejected": "c", "provenance": "{oops"},
        ],
    )
    with pytest.raises(InputError) as err:
        import_trl(src)
    assert err.value.row == 2 and err.value.column == "provenance"


def test_kind_that_does_not_fit_the_columns(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "std.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    with pytest.raises(InputError) as err:
        import_trl(src, kind="unpaired")
    assert err.value.column == "completion"
    other = _jsonl(tmp_path / "other.jsonl", [{"text": "hello"}])
    with pytest.raises(InputError, match="not a TRL preference data set"):
        import_trl(other)


def test_hh_rlhf_round_trip_through_trl_conversational(shared_data: Path, tmp_path: Path) -> None:
    original = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz")
    pairs = original.tables["pairs"]
    assert pairs.height > 2290
    rows = [
        {
            "prompt": p["prompt"],
            "chosen": [_a(p["chosen"])],
            "rejected": [_a(p["rejected"])],
        }
        for p in pairs.iter_rows(named=True)
    ]
    explicit = _jsonl(tmp_path / "hh_trl.jsonl", rows)
    implicit = _jsonl(
        tmp_path / "hh_trl_implicit.jsonl",
        [
            {"chosen": [*r["prompt"], *r["chosen"]], "rejected": [*r["prompt"], *r["rejected"]]}
            for r in rows
        ],
    )
    for path in (explicit, implicit):
        result = import_trl(path)
        back = validate(result.tables["pairs"], "pairs")
        assert result.rejected.height == 0
        assert back.height == pairs.height
        for column in ("prompt", "chosen", "rejected", "prompt_id", "pair_id"):
            assert back[column].to_list() == pairs[column].to_list(), column

"""prefdata.io.frames.to_polars: the one conversion of the tables users hold (issue 21).

Chat columns (lists of {role, content}) survive every conversion, both ways, with empty lists
and nulls; `datasets` feature types (and a Dataset built from pandas) arrive as the same polars
type; a wrong type is one line naming the accepted ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from prefdata.errors import InputError
from prefdata.io.describe import info
from prefdata.io.frames import to_polars
from prefdata.io.importers.hh_rlhf import import_hh_rlhf
from prefdata.quality.filter import filter_pairs
from prefdata.schema import MESSAGES, conform, with_messages
from tests.table_kinds import KINDS, as_kind

datasets = pytest.importorskip("datasets")

# Multi-turn with a system message, an empty conversation, a missing one, an empty message
# and a message whose content is missing.
CHATS: list[Any] = [
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Is the sky blue?"},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "Why?"},
    ],
    [],
    None,
    [{"role": "user", "content": ""}],
    [{"role": "user", "content": None}],
]


def hand_made_pandas() -> pd.DataFrame:
    """A pandas frame as a user builds one: chat prompts as Python lists of dicts."""
    return pd.DataFrame(
        {"prompt": CHATS, "chosen": ["a", "b", "c", "d", None], "n": [1, 2, 3, 4, 5]}
    )


def test_hand_made_pandas_chats_become_messages_value_for_value() -> None:
    table = to_polars(hand_made_pandas())
    assert table.schema["prompt"] == MESSAGES
    assert table["prompt"].to_list() == CHATS
    assert table["chosen"].to_list() == ["a", "b", "c", "d", None]
    # ... and the contract's coercion leaves them as they are.
    assert with_messages(table)["prompt"].to_list() == CHATS


def test_datasets_from_pandas_and_back_keep_every_chat() -> None:
    frame = hand_made_pandas()
    ds = datasets.Dataset.from_pandas(frame)
    # datasets holds the chats as its own feature type, not as Python objects.
    feature = ds.features["prompt"]
    assert type(feature).__name__ == "List"
    assert set(feature.feature) == {"role", "content"}
    from_ds = to_polars(ds)
    assert from_ds["prompt"].to_list() == CHATS
    assert_frame_equal(from_ds, to_polars(frame), check_exact=True)
    # Back the other way: polars -> datasets (the README's line) -> polars, and -> pandas.
    again = datasets.Dataset.from_polars(from_ds)
    assert_frame_equal(to_polars(again), from_ds, check_exact=True)
    assert_frame_equal(to_polars(again.to_pandas()), from_ds, check_exact=True)
    assert_frame_equal(to_polars(from_ds.to_pandas()), from_ds, check_exact=True)


def test_hub_style_content_role_order_is_matched_by_name_not_position() -> None:
    # Hub data sets often store messages as {content, role}; a cast by position would swap
    # the two without an error.
    rows = [
        {"prompt": [{"content": "Hi there", "role": "user"}], "completion": "Hello"},
        {"prompt": [], "completion": "x"},
        {"prompt": None, "completion": "y"},
    ]
    ds = datasets.Dataset.from_list(rows)
    assert list(ds.features["prompt"].feature) == ["content", "role"]
    table = with_messages(to_polars(ds))
    assert table["prompt"].to_list() == [[{"role": "user", "content": "Hi there"}], [], None]


def test_message_fields_with_values_beyond_role_and_content_are_refused() -> None:
    frame = pd.DataFrame({"prompt": [[{"role": "user", "content": "hi", "name": "ann"}]]})
    with pytest.raises(InputError, match=r"column 'prompt'.*other than role and content \(name\)"):
        with_messages(to_polars(frame))
    # A field that only other rows' dicts had (all null here) is no information: dropped.
    frame = pd.DataFrame({"prompt": [[{"role": "user", "content": "hi", "name": None}]]})
    assert with_messages(to_polars(frame))["prompt"].to_list() == [
        [{"role": "user", "content": "hi"}]
    ]


def test_all_empty_or_missing_chats_still_become_messages() -> None:
    for values in ([[], []], [None, None], [[], None]):
        table = with_messages(to_polars(pd.DataFrame({"prompt": values})))
        assert table.schema["prompt"] == MESSAGES
        assert table["prompt"].to_list() == values


@pytest.fixture(scope="module")
def hh_pairs(shared_data: Path) -> pl.DataFrame:
    return import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]


@pytest.mark.parametrize("kind", KINDS)
def test_real_chat_prompts_survive_each_kind(
    kind: str, hh_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    turns = hh_pairs["prompt"].list.len()
    assert turns.max() > 3  # multi-turn conversations, not one message each  # type: ignore[operator]
    back = conform(to_polars(as_kind(hh_pairs, kind, tmp_path)), "pairs")
    assert_frame_equal(back, hh_pairs, check_exact=True)


def test_real_chats_read_by_pandas_and_by_datasets_from_json(
    hh_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    # As users load a JSONL file: pandas gives Python lists of dicts, datasets its features.
    path = tmp_path / "pairs.jsonl"
    hh_pairs.select("prompt", "chosen", "rejected").write_ndjson(path)
    by_pandas = pd.read_json(path, lines=True)
    assert isinstance(by_pandas["prompt"][0], list)
    by_datasets = datasets.Dataset.from_json(str(path), cache_dir=str(tmp_path / "hf"))
    want = hh_pairs.select("prompt", "chosen", "rejected")
    for held in (by_pandas, by_datasets, datasets.Dataset.from_pandas(by_pandas)):
        got = with_messages(to_polars(held))
        assert_frame_equal(got, want, check_exact=True)


# ---- what else a conversion keeps or refuses ----------------------------------------------


def test_a_named_pandas_index_is_data_an_unnamed_one_is_not() -> None:
    frame = pd.DataFrame({"pair_id": ["p1", "p2"], "score": [0.5, 1.0]})
    assert to_polars(frame.set_index("pair_id")).to_dicts() == frame.to_dict("records")
    assert to_polars(frame.iloc[::-1]).columns == ["pair_id", "score"]


def test_pandas_nan_is_a_missing_value() -> None:
    table = to_polars(pd.DataFrame({"confidence": [0.5, float("nan")]}))
    assert table["confidence"].to_list() == [0.5, None]


def test_class_labels_become_their_names() -> None:
    features = datasets.Features(
        {"label": datasets.ClassLabel(names=["a", "b", "tie"]), "item_id": datasets.Value("string")}
    )
    ds = datasets.Dataset.from_dict(
        {"label": [0, 2, 1, -1], "item_id": ["x", "y", "z", "w"]}, features=features
    )
    assert to_polars(ds)["label"].to_list() == ["a", "tie", "b", None]


def test_a_pandas_column_of_mixed_types_keeps_each_value_and_the_check_names_its_row(
    shared_data: Path, hh_pairs: pl.DataFrame
) -> None:
    # PandaLM's test set holds a few JSON `true` responses among the texts: pandas keeps
    # them as Python objects of two types, which no Arrow column can hold. They stay Python
    # objects, as in a JSON file read by prefdata, so nothing turns `True` into "True".
    path = shared_data / "pandalm_testset" / "testset-v1.json"
    records = json.loads(path.read_text())
    table = to_polars(pd.read_json(path))
    assert table.schema["response1"] == pl.Object
    assert table["response1"].to_list() == [r["response1"] for r in records]
    assert table.schema["instruction"] == pl.String  # the other columns as usual
    # Where the contract wants text, the check names the first odd row.
    frame = hh_pairs.head(20).to_pandas()
    frame["chosen"] = frame["chosen"].astype(object)
    frame.loc[6, "chosen"] = True
    with pytest.raises(InputError) as caught:
        filter_pairs(frame)
    assert str(caught.value) == (
        "argument 'pairs', row 7, column 'chosen': expected String, got True; "
        "the column mixes types"
    )


def test_wrong_types_are_one_line_naming_the_accepted_ones() -> None:
    accepted = (
        "a polars DataFrame or LazyFrame, a pandas DataFrame, a datasets.Dataset, "
        "a pyarrow Table, or a path"
    )
    rows = [{"prompt": "hi", "chosen": "a", "rejected": "b"}]
    for value, name in (
        (rows, "builtins.list"),
        (rows[0], "builtins.dict"),
        (pa.RecordBatch.from_pylist(rows), "pyarrow.RecordBatch"),
        (pl.Series("prompt", ["hi"]), "polars.Series"),
        (datasets.Dataset.from_list(rows).to_iterable_dataset(), "datasets.IterableDataset"),
    ):
        with pytest.raises(InputError) as caught:
            filter_pairs(value)
        assert str(caught.value) == f"pairs: got a {name}; a table here is {accepted}"


def test_a_dataset_dict_is_refused_with_its_split_names() -> None:
    rows = [{"prompt": "hi", "chosen": "a", "rejected": "b"}]
    one = datasets.Dataset.from_list(rows)
    both = datasets.DatasetDict({"train": one, "test": one})
    with pytest.raises(InputError) as caught:
        info(both)
    assert str(caught.value) == (
        "table: a DatasetDict holds several splits (train, test); pass one of them, "
        "e.g. data['train']"
    )
    assert info(both["train"]).report["rows"] == 1


def test_the_cli_prints_an_input_error_in_one_line(tmp_path: Path) -> None:
    from prefdata.cli.app import app

    folder = tmp_path / "not-a-dataset"
    folder.mkdir()
    result = CliRunner().invoke(app, ["validate", str(folder)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(folder) in lines[0]

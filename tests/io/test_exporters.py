from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from prefdata.errors import InputError
from prefdata.io.exporters import export, to_kto, to_openai, to_trl
from prefdata.io.importers.common import pairs_table
from prefdata.io.importers.hh_rlhf import import_hh_rlhf
from prefdata.io.tables import read_table


@pytest.fixture(scope="module")
def hh_pairs(shared_data: Path) -> pl.DataFrame:
    return import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]


def single_turn() -> pl.DataFrame:
    return pairs_table(
        [
            {
                "prompt": [{"role": "user", "content": "2+2?"}],
                "chosen": "4",
                "rejected": "5",
                "confidence": 0.9,
            },
            {
                "prompt": [{"role": "user", "content": "Capital of France?"}],
                "chosen": "Paris",
                "rejected": "Lyon",
                "confidence": 0.7,
            },
        ],
        source="t",
    )


def test_trl_standard_has_explicit_text_prompt() -> None:
    out = to_trl(single_turn(), minimal=True)
    assert out.columns == ["prompt", "chosen", "rejected"]
    assert out.row(0) == ("2+2?", "4", "5")


def test_multi_turn_prompt_refused_in_standard_form(hh_pairs: pl.DataFrame) -> None:
    with pytest.raises(InputError) as err:
        to_trl(hh_pairs, source="hh.parquet")
    assert "hh.parquet" in str(err.value) and err.value.column == "prompt"
    flat = to_trl(hh_pairs, flatten=True)
    assert flat["prompt"][0].startswith("User: what are some pranks")
    assert "\n\nAssistant: " in flat["prompt"][0]


def test_trl_conversational_round_trip(hh_pairs: pl.DataFrame, tmp_path: Path) -> None:
    report = export(hh_pairs, tmp_path / "c.jsonl", "trl-conversational")
    back = read_table(tmp_path / "c.jsonl")
    assert report["rows"] == back.height == hh_pairs.height
    assert back["prompt"].to_list() == hh_pairs["prompt"].to_list()
    assert [m[0]["role"] for m in back["chosen"].to_list()] == ["assistant"] * back.height
    assert [m[0]["content"] for m in back["chosen"].to_list()] == hh_pairs["chosen"].to_list()
    assert back["pair_id"].to_list() == hh_pairs["pair_id"].to_list()


def test_kto_export_from_pairs_reports_balance(tmp_path: Path) -> None:
    report = export(single_turn(), tmp_path / "k.jsonl", "kto")
    rows = [json.loads(line) for line in (tmp_path / "k.jsonl").read_text().splitlines()]
    assert [(r["completion"], r["label"]) for r in rows] == [
        ("4", True),
        ("5", False),
        ("Paris", True),
        ("Lyon", False),
    ]
    assert report["desirable"] == report["undesirable"] == 2
    kto, _ = to_kto(single_turn(), conversational=True, minimal=True)
    assert kto.columns == ["prompt", "completion", "label"]


def test_openai_rows_follow_the_format(tmp_path: Path, hh_pairs: pl.DataFrame) -> None:
    export(hh_pairs, tmp_path / "o.jsonl", "openai")
    first = json.loads((tmp_path / "o.jsonl").read_text().splitlines()[0])
    assert set(first) == {"input", "preferred_output", "non_preferred_output"}
    assert first["input"]["messages"] == hh_pairs["prompt"][0].to_list()
    assert first["preferred_output"] == [{"role": "assistant", "content": hh_pairs["chosen"][0]}]
    assert to_openai(single_turn()).height == 2
    with pytest.raises(InputError, match="JSONL"):
        export(single_turn(), tmp_path / "o.parquet", "openai")


def test_hf_folder_export(tmp_path: Path) -> None:
    export(single_turn(), tmp_path / "ds", "hf")
    import datasets

    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    assert ds.num_rows == 2 and ds[0]["chosen"] == [{"role": "assistant", "content": "4"}]


def test_bad_pairs_never_written(tmp_path: Path) -> None:
    bad = single_turn().with_columns(pl.col("chosen").alias("rejected"))
    with pytest.raises(InputError, match="chosen == rejected"):
        export(bad, tmp_path / "x.jsonl", "trl")
    assert not (tmp_path / "x.jsonl").exists()


def test_trl_export_hides_margin_from_trl_reward_trainer(tmp_path: Path) -> None:
    # TRL's RewardTrainer would read a `margin` column as its own per-pair margin.
    pairs = single_turn().with_columns(pl.lit(2.0).alias("margin"))
    out = to_trl(pairs)
    assert "margin" not in out.columns and out["prefdata_margin"].to_list() == [2.0, 2.0]
    assert "margin" not in to_kto(pairs)[0].columns

"""import -> export -> import keeps every field, on real data, for each export format."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from prefdata.io.exporters import export
from prefdata.io.importers.oasst import import_oasst
from prefdata.io.importers.openai import import_openai_dpo
from prefdata.io.importers.pandalm import import_pandalm
from prefdata.io.importers.trl import import_trl
from prefdata.io.tables import read_table, write_table

PAIR_COLUMNS = [
    "pair_id",
    "prompt_id",
    "prompt",
    "chosen",
    "rejected",
    "confidence",
    "margin",
    "n_votes",
    "agreement",
    "source",
    "provenance",
]


@pytest.fixture(scope="module")
def pandalm_pairs(shared_data: Path) -> pl.DataFrame:
    return import_pandalm(shared_data / "pandalm_testset" / "testset-v1.json").tables["pairs"]


@pytest.mark.parametrize("fmt", ["trl-conversational", "trl"])
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_trl_round_trip_keeps_every_pair_field(
    pandalm_pairs: pl.DataFrame, tmp_path: Path, fmt: str, suffix: str
) -> None:
    out = tmp_path / f"x{suffix}"
    export(pandalm_pairs, out, fmt)  # type: ignore[arg-type]
    back = import_trl(out).tables["pairs"]
    assert back.select(PAIR_COLUMNS).to_dicts() == pandalm_pairs.select(PAIR_COLUMNS).to_dicts()


def test_own_format_round_trip_is_exact(pandalm_pairs: pl.DataFrame, tmp_path: Path) -> None:
    for name in ["p.parquet", "p.jsonl", "p.jsonl.gz", "p_hf"]:
        back = read_table(write_table(pandalm_pairs, tmp_path / name))
        assert back.select(PAIR_COLUMNS).to_dicts() == pandalm_pairs.select(PAIR_COLUMNS).to_dicts()


def test_openai_round_trip_keeps_the_pair(pandalm_pairs: pl.DataFrame, tmp_path: Path) -> None:
    export(pandalm_pairs, tmp_path / "o.jsonl", "openai")
    back = import_openai_dpo(tmp_path / "o.jsonl").tables["pairs"]
    # the OpenAI format has room for the conversation only: ids and texts survive
    cols = ["pair_id", "prompt_id", "prompt", "chosen", "rejected"]
    assert back.select(cols).to_dicts() == pandalm_pairs.select(cols).to_dicts()


def test_kto_round_trip_keeps_every_kto_field(shared_data: Path, tmp_path: Path) -> None:
    kto = import_oasst(shared_data / "oasst_en_100" / "en_100_tree.jsonl").tables["kto"]
    export(kto, tmp_path / "k.jsonl", "kto-conversational")
    back = import_trl(tmp_path / "k.jsonl", kind="unpaired").tables["kto"]
    cols = ["prompt", "completion", "label", "confidence", "source", "prompt_id", "completion_id"]
    assert back.select(cols).to_dicts() == kto.select(cols).to_dicts()

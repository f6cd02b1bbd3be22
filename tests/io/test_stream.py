"""The streaming (batched) path gives the same data as the in-memory path.

Batches of 7 rows make every file here span many batches, so anything that is only right
within one batch (row numbers, duplicate ids, the output schema) shows up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata.errors import ContractError, InputError
from prefdata.io.exporters import export, to_kto, to_openai, to_trl
from prefdata.io.importers.common import pairs_table, user
from prefdata.io.importers.hh_rlhf import import_hh_rlhf
from prefdata.io.importers.trl import import_trl
from prefdata.io.stream import (
    SeenIds,
    iter_batches,
    stream_export,
    stream_validate,
)
from prefdata.io.stream_trl import stream_import_trl
from prefdata.io.tables import read_table, sibling, write_table

DUPLICATE = "pairs: pair_id: duplicate pair_id (an earlier row has the same id)"
PAIR_COLUMNS = ["pair_id", "prompt_id", "prompt", "chosen", "rejected"]


def _rows(n: int) -> list[dict[str, Any]]:
    """Standard TRL rows: prompts repeat (several pairs per prompt), text is not all ASCII,
    some answers start with a space or hold several lines (kept exactly as written)."""
    return [
        {
            "prompt": f"Question {i % 311}: what is {i % 311} × 3?",
            "chosen": f" It is {3 * (i % 311)}.\nCheck: {i} — done.",
            "rejected": f"Perhaps {i}? Ünsure.",
        }
        for i in range(n)
    ]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pl.DataFrame(rows).write_parquet(path)
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_standard_parquet_gives_the_in_memory_pairs(tmp_path: Path) -> None:
    rows = _rows(2000)
    src = _parquet(tmp_path / "std.parquet", rows)
    out = tmp_path / "pairs.parquet"
    report = stream_import_trl(src, out, batch_rows=7)
    streamed = read_table(out)

    # The same rows as pairs_table on the whole list, in order...
    whole = pairs_table([{**r, "prompt": user(r["prompt"])} for r in rows], source="trl")
    assert streamed.height == whole.height == 2000
    for column in PAIR_COLUMNS:
        assert streamed[column].to_list() == whole[column].to_list(), column
    # ... and exactly the table import_trl gives (every column and type, provenance too).
    in_memory = import_trl(src)
    assert streamed.equals(in_memory.tables["pairs"])
    assert streamed.schema == in_memory.tables["pairs"].schema
    assert report["source_rows"] == 2000 and report["rows_pairs"] == 2000
    assert report["batches"] == 286  # ceil(2000 / 7)
    assert report["rows_rejected"] == 0 and report["rejected_file"] is None
    assert report["form_standard_explicit"] == 2000
    assert not sibling(out, "rejected").exists()
    assert json.loads(streamed["provenance"][1999]) == {"file": "std.parquet", "row": 2000}
    assert _leftovers(tmp_path) == []


def test_export_gives_the_in_memory_rows(tmp_path: Path) -> None:
    pairs = import_trl(_parquet(tmp_path / "std.parquet", _rows(500))).tables["pairs"]
    src = write_table(pairs, tmp_path / "pairs.parquet")

    assert stream_validate(src, "pairs", batch_rows=7) == 500
    report = stream_export(src, tmp_path / "trl.parquet", "trl", batch_rows=7)
    assert report["rows"] == 500
    assert read_table(tmp_path / "trl.parquet").equals(to_trl(pairs))

    stream_export(src, tmp_path / "conv.jsonl", "trl-conversational", batch_rows=7)
    export(pairs, tmp_path / "conv_whole.jsonl", "trl-conversational")
    assert (tmp_path / "conv.jsonl").read_text() == (tmp_path / "conv_whole.jsonl").read_text()
    stream_export(src, tmp_path / "conv.jsonl.gz", "trl-conversational", batch_rows=7)
    assert read_table(tmp_path / "conv.jsonl.gz").equals(read_table(tmp_path / "conv_whole.jsonl"))

    stream_export(src, tmp_path / "openai.jsonl", "openai", batch_rows=7)
    assert read_table(tmp_path / "openai.jsonl").equals(
        pl.read_ndjson(to_openai(pairs).write_ndjson().encode())
    )

    kto_report = stream_export(src, tmp_path / "kto.parquet", "kto", batch_rows=7)
    whole_kto, whole_report = to_kto(pairs)
    assert read_table(tmp_path / "kto.parquet").equals(whole_kto)
    assert kto_report["rows"] == 1000
    for key in ("desirable", "undesirable", "desirable_ratio", "within_trl_advice", "pairs"):
        assert kto_report[key] == whole_report[key], key


def test_conversational_jsonl_with_bad_rows_matches_import_trl(tmp_path: Path) -> None:
    def a(text: str) -> dict[str, str]:
        return {"role": "assistant", "content": text}

    rows: list[dict[str, Any]] = [
        {
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Name a number above {i}."},
            ],
            "chosen": [a(str(i + 1))],
            "rejected": [a(f"{i - 1}")],
        }
        for i in range(60)
    ]
    rows[9]["chosen"] = [a("one"), a("two")]  # two messages: cannot become one reply
    rows[23]["rejected"] = [{"role": "user", "content": "x"}]  # not the assistant
    rows[40]["prompt"] = []  # no messages
    rows[51]["rejected"] = rows[51]["chosen"]  # breaks the contract (chosen == rejected)
    src = _jsonl(tmp_path / "conv.jsonl", rows)

    out = tmp_path / "pairs.parquet"
    report = stream_import_trl(src, out, batch_rows=7)
    whole = import_trl(src)
    assert read_table(out).equals(whole.tables["pairs"])
    rejected = read_table(sibling(out, "rejected"))
    assert rejected["row"].to_list() == [10, 24, 41, 52]
    # The conversion reasons are import_trl's own, word for word, with global row numbers;
    # import_trl has no source row for contract problems, the streaming path has.
    assert rejected.filter(pl.col("row") != 52).select("row", "reason").rows() == (
        whole.rejected.filter(pl.col("row").is_not_null()).select("row", "reason").rows()
    )
    assert rejected["reason"][3] == "pairs: rejected: chosen == rejected"
    assert report["rows_pairs"] == 56 and report["rows_rejected"] == 4
    for key, value in whole.report.items():
        if key.startswith(("dropped_", "form_", "rows_")):
            assert report[key] == value, key


def test_conversational_implicit_prompt_and_text_columns_take_the_per_row_path(
    tmp_path: Path,
) -> None:
    def turn(role: str, text: str) -> dict[str, str]:
        return {"role": role, "content": text}

    rows: list[dict[str, Any]] = []
    for i in range(25):
        history = [
            turn("user", f"hi {i % 4}"),
            turn("assistant", "hello"),
            turn("user", f"count to {i}"),
        ]
        rows.append(
            {
                "chosen": [*history, turn("assistant", " ".join(map(str, range(i + 1))))],
                "rejected": [*history, turn("assistant", "no")],
                # As text (a CSV-made file): the per-row path parses it, as import_trl does.
                "n_votes": str(1 + i % 3),
            }
        )
    rows[17]["rejected"][0] = turn("user", "something else")  # differs before the last turn
    src = _jsonl(tmp_path / "implicit.jsonl", rows)
    out = tmp_path / "pairs.jsonl"
    report = stream_import_trl(src, out, batch_rows=7)
    whole = import_trl(src)
    assert read_table(out).equals(
        read_table(write_table(whole.tables["pairs"], tmp_path / "whole.jsonl"))
    )
    assert read_table(out)["n_votes"].to_list()[:4] == [1, 2, 3, 1]
    rejected = read_table(sibling(out, "rejected"))
    assert rejected.select("row", "reason").rows() == [
        (18, "conversations differ before the last turn")
    ]
    assert report["form_conversational_implicit"] == 24


def test_duplicates_across_batches_are_rejected_with_the_global_row(tmp_path: Path) -> None:
    rows = _rows(40)
    rows[11] = dict(rows[4])  # row 12 (batch 2) repeats row 5 (batch 1)
    # Same pair with the sides swapped: the same (unordered) pair_id, in batch 5.
    rows[33] = {**rows[2], "chosen": rows[2]["rejected"], "rejected": rows[2]["chosen"]}
    src = _parquet(tmp_path / "dups.parquet", rows)
    out = tmp_path / "pairs.parquet"
    report = stream_import_trl(src, out, batch_rows=7)

    rejected = read_table(sibling(out, "rejected"))
    assert rejected.select("row", "reason").rows() == [(12, DUPLICATE), (34, DUPLICATE)]
    assert report["dropped_duplicate_pair_id"] == 2
    assert report["rows_pairs"] == 38
    whole = import_trl(src)
    assert read_table(out).equals(whole.tables["pairs"])
    assert whole.rejected["reason"].to_list() == [DUPLICATE, DUPLICATE]


def test_bad_row_in_batch_three_goes_to_rejected(tmp_path: Path) -> None:
    rows = _rows(30)
    rows[16]["rejected"] = rows[16]["chosen"]  # row 17: batch 3 holds rows 15-21
    src = _parquet(tmp_path / "bad.parquet", rows)
    out = tmp_path / "pairs.parquet"
    report = stream_import_trl(src, out, batch_rows=7)

    rejected = read_table(sibling(out, "rejected"))
    assert rejected["row"].to_list() == [17]
    assert rejected["reason"].to_list() == ["pairs: rejected: chosen == rejected"]
    record = json.loads(rejected["record"][0])
    assert record["chosen"] == record["rejected"] == rows[16]["chosen"]
    assert report["dropped_chosen_eq_rejected"] == 1
    pairs = read_table(out)
    assert pairs.height == 29
    assert rows[16]["chosen"] not in pairs["chosen"].to_list()


def test_no_output_when_a_late_batch_fails(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [{**r, "provenance": "{}"} for r in _rows(30)]
    rows[5]["rejected"] = rows[5]["chosen"]  # a rejected row before the failure
    rows[19]["provenance"] = "not json"  # row 20, batch 3: stops the import
    src = _parquet(tmp_path / "broken.parquet", rows)
    out = tmp_path / "pairs.parquet"
    out.write_text("the previous output")

    with pytest.raises(InputError) as err:
        stream_import_trl(src, out, batch_rows=7)
    assert err.value.row == 20 and err.value.column == "provenance"
    assert "broken.parquet" in str(err.value)
    # The old output is untouched, no rejected file appeared, no temporary file is left.
    assert out.read_text() == "the previous output"
    assert not sibling(out, "rejected").exists()
    assert _leftovers(tmp_path) == []

    fresh = tmp_path / "fresh.parquet"
    with pytest.raises(InputError):
        stream_import_trl(src, fresh, batch_rows=7)
    assert not fresh.exists()


def test_validate_names_the_global_row(tmp_path: Path) -> None:
    pairs = import_trl(_parquet(tmp_path / "std.parquet", _rows(40))).tables["pairs"]
    # A contract problem in batch 4 (row 26), written without the importer's checks.
    bad = pairs.with_columns(
        pl.when(pl.int_range(pl.len()) == 25)
        .then(pl.col("chosen"))
        .otherwise(pl.col("rejected"))
        .alias("rejected")
    )
    bad.write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ContractError) as err:
        stream_validate(tmp_path / "bad.parquet", "pairs", batch_rows=7)
    assert (err.value.row, err.value.column) == (26, "rejected")
    assert "chosen == rejected" in str(err.value)

    # A pair_id repeated in another batch: row 31 repeats row 3.
    repeated = pl.concat([pairs.head(30), pairs.slice(2, 1), pairs.slice(30)])
    repeated.write_parquet(tmp_path / "repeated.parquet")
    with pytest.raises(ContractError) as err:
        stream_validate(tmp_path / "repeated.parquet", "pairs", batch_rows=7)
    assert (err.value.row, err.value.column) == (31, "pair_id")
    with pytest.raises(ContractError):
        stream_export(tmp_path / "repeated.parquet", tmp_path / "x.parquet", "trl", batch_rows=7)
    assert not (tmp_path / "x.parquet").exists()

    # A wrong type in a late batch: the conversion error names the global row too.
    typed = pairs.with_columns(
        pl.when(pl.int_range(pl.len()) == 32)
        .then(pl.lit("many"))
        .otherwise(pl.col("n_votes").cast(pl.String))
        .alias("n_votes")
    )
    _jsonl(tmp_path / "typed.jsonl", typed.to_dicts())
    with pytest.raises(ContractError) as err:
        stream_validate(tmp_path / "typed.jsonl", "pairs", batch_rows=7)
    assert (err.value.row, err.value.column) == (33, "n_votes")


def test_seen_ids_keep_hex_ids_as_numbers_and_other_ids_as_text() -> None:
    seen = SeenIds()
    first = pl.Series(["00000000000000ff", "ABCDEF0123456789", "item-7", None])
    assert seen.add(first).to_list() == [False, False, False, False]
    # Upper-case hex is another string, not the same id as its lower-case form.
    second = pl.Series(["abcdef0123456789", "00000000000000ff", "item-7", None, "item-8"])
    assert seen.add(second).to_list() == [False, True, True, False, False]
    third = pl.Series(["abcdef0123456789", "ABCDEF0123456789", "0000000000000ff"])
    assert seen.add(third).to_list() == [True, True, False]


def test_jsonl_parse_error_names_the_line(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in _rows(20)]
    lines.insert(3, "")  # a blank line is not a record
    lines[15] = '{"prompt": "p", "chosen": '  # line 16
    src = tmp_path / "broken.jsonl"
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as err:
        stream_import_trl(src, tmp_path / "out.parquet", batch_rows=7)
    assert err.value.row == 16 and "malformed JSON" in str(err.value)
    assert not (tmp_path / "out.parquet").exists()

    # Without the broken line: blank lines are skipped, records are numbered 1, 2, ...
    del lines[15]
    src.write_text("\n".join(lines) + "\n")
    batches = list(iter_batches(src, batch_rows=7))
    assert [b.height for b in batches] == [7, 7, 5]
    assert pl.concat(batches)["__source_row"].to_list() == list(range(1, 20))


def test_empty_input_gives_an_empty_valid_output(tmp_path: Path) -> None:
    src = tmp_path / "empty.parquet"
    pl.DataFrame(
        schema={"prompt": pl.String, "chosen": pl.String, "rejected": pl.String}
    ).write_parquet(src)
    out = tmp_path / "pairs.parquet"
    report = stream_import_trl(src, out, batch_rows=7)
    assert report["rows_pairs"] == 0
    assert stream_validate(out, "pairs") == 0
    assert (
        read_table(out).schema
        == import_trl(_jsonl(tmp_path / "one.jsonl", _rows(1))).tables["pairs"].schema
    )


def test_unsupported_inputs_are_refused(tmp_path: Path) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text("prompt,chosen,rejected\np,a,b\n")
    with pytest.raises(InputError, match="streaming reads Parquet or JSONL"):
        stream_import_trl(csv, tmp_path / "out.parquet")
    implicit = _jsonl(tmp_path / "implicit.jsonl", [{"chosen": "a b", "rejected": "a c"}])
    with pytest.raises(InputError, match="cannot be split"):
        stream_import_trl(implicit, tmp_path / "out.parquet")
    with pytest.raises(InputError, match="hf writes a datasets folder"):
        stream_export(csv, tmp_path / "out", "hf")
    with pytest.raises(InputError, match="OpenAI format is JSONL"):
        stream_export(csv, tmp_path / "out.parquet", "openai")


def test_hh_rlhf_through_trl_conversational_in_batches(shared_data: Path, tmp_path: Path) -> None:
    original = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz")
    pairs = original.tables["pairs"]
    # MANIFEST: 2,312 records; 5 have transcripts that differ before the last turn and 4 an
    # empty answer, which the importer rejects.
    assert original.report["dropped_transcripts_differ_before_the_last_turn"] == 5
    assert pairs.height == 2312 - 9 == 2303
    exported = tmp_path / "hh_trl.jsonl"
    export(pairs, exported, "trl-conversational")

    out = tmp_path / "hh_pairs.parquet"
    report = stream_import_trl(exported, out, batch_rows=100)
    assert report["source_rows"] == 2303 and report["rows_pairs"] == 2303
    assert report["rows_rejected"] == 0 and report["batches"] == 24
    streamed = read_table(out)
    assert streamed.equals(import_trl(exported).tables["pairs"])
    for column in [*PAIR_COLUMNS, "provenance"]:
        assert streamed[column].to_list() == pairs[column].to_list(), column

    assert stream_validate(out, "pairs", batch_rows=100) == 2303
    stream_export(out, tmp_path / "again.jsonl", "trl-conversational", batch_rows=100)
    assert (tmp_path / "again.jsonl").read_text() == exported.read_text()

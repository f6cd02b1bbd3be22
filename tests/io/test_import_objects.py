"""Importers take the tables users already hold (issue 21): a format's records as a pandas
frame (`pd.read_json`), a polars frame or LazyFrame (`pl.read_json` / `pl.scan_ndjson`), a
`datasets.Dataset` built from the pandas frame, or a pyarrow Table, with the same result as
the file itself, on the real data sets: HH-RLHF, PandaLM (with its judge files), GSM8K and
its graded solutions, MATH-500, HHH, MT-Bench ratings, and TRL / OpenAI files and a chat
product's feedback log made from HH-RLHF pairs.

"The same result": every table equal value for value, rejected rows and report equal, except
what names the file (a table in memory has none): `provenance.file` and `source_file`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from prefdata.errors import InputError
from prefdata.io.exporting import export_files
from prefdata.io.importers import importer
from prefdata.io.importers.common import Imported
from prefdata.io.importers.hh_rlhf import import_hh_rlhf
from prefdata.io.importers.pandalm import import_pandalm
from prefdata.io.importers.sources import SOURCES
from prefdata.stage import StageResult
from tests.table_kinds import as_kind, assert_same_result

datasets = pytest.importorskip("datasets")

IN_MEMORY = ("pandas", "polars", "lazy", "datasets", "pyarrow")


@dataclass(frozen=True)
class Case:
    fmt: str  # the importer (a key of IMPORTERS)
    file: str  # under the shared data folder, or "export:<format>" for a file made here
    options: dict[str, Any] = field(default_factory=dict)


CASES = {
    "hh-rlhf": Case("hh-rlhf", "hh_rlhf/harmless-base_test.jsonl.gz"),
    "pandalm": Case("pandalm", "pandalm_testset/testset-v1.json"),
    "gsm8k": Case("gsm8k", "gsm8k/test.jsonl"),
    "gsm8k-solutions": Case("gsm8k-solutions", "gsm8k/example_model_solutions.jsonl"),
    "math500": Case("math500", "math500/test.jsonl"),
    "hhh": Case("hhh", "hhh_alignment/hhh_alignment_eval.json"),
    "rated": Case("rated", "mt_bench_ratings/mt_bench_eval.json", {"source": "mt-bench"}),
    "trl": Case("trl", "export:trl-conversational"),
    "openai": Case("openai", "export:openai"),
    "feedback": Case("feedback", "export:feedback", {"pairs_from": "all"}),
    "oasst": Case("oasst", "oasst_en_100/en_100_tree.jsonl"),
}


def _records(path: Path) -> list[dict[str, Any]]:
    if path.name.endswith(".json"):
        records: list[dict[str, Any]] = json.loads(path.read_text())
        return records
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def held_as(kind: str, path: Path) -> Any:
    """The file's records as a user of `kind` loads them."""
    lines = not path.name.endswith(".json")
    if kind == "pandas":
        # dtype=False: pandas would otherwise turn text that looks like a number ("83") into
        # a number: its change, not a conversion of ours.
        return pd.read_json(path, lines=lines, dtype=False)
    if kind == "polars":
        return pl.read_ndjson(path) if lines else pl.read_json(path, infer_schema_length=None)
    if kind == "lazy":
        return pl.scan_ndjson(path) if lines else pl.read_json(path).lazy()
    if kind == "datasets":
        return datasets.Dataset.from_pandas(held_as("pandas", path), preserve_index=False)
    if kind == "pyarrow":
        return pa.Table.from_pylist(_records(path))
    raise ValueError(kind)


def without_file(result: StageResult) -> StageResult:
    """`result` less what names its file: provenance's `file` and the report's source_file."""

    def strip(text: str | None) -> str | None:
        if text is None:
            return None
        value = json.loads(text)
        value.pop("file", None)
        return json.dumps(value, ensure_ascii=False)

    tables = {
        name: table.with_columns(pl.col("provenance").map_elements(strip, return_dtype=pl.String))
        if "provenance" in table.columns
        else table
        for name, table in result.tables.items()
    }

    def strip_record(text: str) -> str:
        # A pair set aside after it was built holds its provenance as JSON text.
        value = json.loads(text)
        if isinstance(value.get("provenance"), str):
            value["provenance"] = strip(value["provenance"])
        return json.dumps(value, ensure_ascii=False)

    rejected = result.rejected
    if rejected is not None:
        rejected = rejected.with_columns(
            pl.col("record").map_elements(strip_record, return_dtype=pl.String)
        )
    report = {k: v for k, v in result.report.items() if k != "source_file"}
    return StageResult(tables=tables, rejected=rejected, report=report)


@pytest.fixture(scope="module")
def exported(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HH-RLHF pairs (multi-turn chat prompts) exported as TRL and OpenAI files, and as a
    chat product's feedback log (feedback.jsonl)."""
    pairs = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz")
    folder = tmp_path_factory.mktemp("exported")
    export_files(pairs.tables["pairs"].head(400), folder, formats=("trl-conversational", "openai"))
    _feedback_log(pairs.tables["pairs"].head(150), folder / "feedback.jsonl")
    return folder


def _feedback_log(pairs: pl.DataFrame, path: Path) -> None:
    """A feedback log of HH-RLHF pairs: in each pair's session the user regenerated the
    rejected reply and accepted the chosen one; every third session also gave thumbs. The
    prompt is the chat messages (a list), as a product logs them."""
    with path.open("w", encoding="utf-8") as log:
        for i, pair in enumerate(pairs.iter_rows(named=True)):
            events = [(pair["rejected"], "regenerated"), (pair["chosen"], "accepted")]
            if i % 3 == 0:
                events += [(pair["chosen"], "thumbs_up"), (pair["rejected"], "thumbs_down")]
            for completion, event in events:
                row = {"session_id": f"s{i}", "prompt": pair["prompt"], "completion": completion}
                log.write(json.dumps(row | {"event": event}, ensure_ascii=False) + "\n")


_FROM_FILE: dict[str, StageResult] = {}


def _run(case: Case, source: Any, data: Path) -> Imported:
    options = dict(case.options)
    if case.fmt == "pandalm":
        folder = data / "pandalm_testset"
        options["judges"] = [
            folder / "gpt-3.5-turbo-testset-v1.json",
            folder / "pandalm-7b-testset-v1.json",
        ]
    run: Callable[..., Imported] = importer(case.fmt)
    return run(source, **options)


@pytest.mark.parametrize("kind", IN_MEMORY)
@pytest.mark.parametrize("name", list(CASES))
def test_each_importer_takes_each_kind_of_table_alike(
    name: str, kind: str, shared_data: Path, exported: Path
) -> None:
    case = CASES[name]
    if case.file.startswith("export:"):
        path = exported / f"{case.file.split(':')[1]}.jsonl"
    else:
        path = shared_data / case.file
    if kind != "pandas" and name == "pandalm":
        # Six responses are JSON `true` among texts: no Arrow column holds both, and polars'
        # reader turns them into the text "true". pandas keeps both (the next test).
        pytest.skip("PandaLM mixes text and JSON true in one column")
    if name not in _FROM_FILE:
        _FROM_FILE[name] = without_file(_run(case, path, shared_data))
    want = _FROM_FILE[name]
    got = _run(case, held_as(kind, path), shared_data)
    assert "source_file" not in got.report
    assert_same_result(without_file(got), want)
    assert want.main.height > 0


def test_pandalm_from_pandas_keeps_the_non_text_responses_out_of_the_pairs(
    shared_data: Path,
) -> None:
    # Six PandaLM responses are JSON `true`: from pandas as from the file they make no pair
    # (rejected with the reason) and their votes stay in the annotations.
    path = shared_data / "pandalm_testset" / "testset-v1.json"
    got = import_pandalm(pd.read_json(path))
    non_text = got.rejected.filter(
        pl.col("reason").str.contains("is not text (JSON true)", literal=True)
    )
    records = json.loads(path.read_text())
    bad_records = [
        r["idx"]
        for r in records
        if not all(isinstance(r[k], str) for k in ("response1", "response2"))
    ]
    # The six records hold two distinct items (PandaLM repeats them across model pairs).
    pooled = [rec["idx"] for item in non_text["record"] for rec in json.loads(item)["records"]]
    assert sorted(pooled) == sorted(bad_records) and len(bad_records) == 6
    assert got.tables["annotations"].height == 3 * len(records)


def test_provenance_names_the_row_of_a_table(shared_data: Path) -> None:
    path = shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz"
    frame = pd.read_json(path, lines=True).iloc[:5]
    pairs = import_hh_rlhf(frame).tables["pairs"]
    # The data set's record (name, licence) as from the file; no file name, the row instead.
    known = {"dataset": "hh-rlhf", "license": SOURCES["hh-rlhf"].license}
    assert [json.loads(p) for p in pairs["provenance"]] == [
        {**known, "line": n, "annotators": 1} for n in range(1, 6)
    ]


def test_an_empty_table_and_a_table_missing_a_column_are_one_line_errors() -> None:
    empty = pd.DataFrame({"chosen": pd.Series([], dtype=str), "rejected": []})
    with pytest.raises(InputError) as caught:
        import_hh_rlhf(empty)
    assert str(caught.value) == "argument 'path': no records to import"
    with pytest.raises(InputError) as caught:
        import_hh_rlhf(pd.DataFrame({"chosen": ["\n\nHuman: hi\n\nAssistant: yo"]}))
    assert str(caught.value) == (
        "argument 'path', row 1, column 'rejected': expected a transcript string in 'rejected'"
    )


def _hub_messages(path: Path) -> pl.DataFrame:
    """The trees file as the Hub's OpenAssistant/oasst1 holds it: one row per message (a
    tree's messages in depth-first order, as in the Hub's files), `parent_id` null at the
    root, ranks as floats, emojis as parallel lists of names and counts."""
    rows: list[dict[str, Any]] = []
    for tree in _records(path):
        stack: list[tuple[dict[str, Any], str | None]] = [(tree["prompt"], None)]
        while stack:
            message, parent = stack.pop()
            emojis = message.get("emojis") or {}
            rank = message.get("rank")
            rows.append(
                {
                    "message_id": message["message_id"],
                    "parent_id": parent,
                    "message_tree_id": tree["message_tree_id"],
                    "text": message["text"],
                    "role": message["role"],
                    "deleted": message.get("deleted"),
                    "synthetic": message.get("synthetic"),
                    "model_name": message.get("model_name"),
                    "rank": None if rank is None else float(rank),
                    "emojis": {"name": list(emojis), "count": list(emojis.values())},
                }
            )
            replies = message.get("replies") or []
            stack.extend((r, message["message_id"]) for r in reversed(replies))
    emoji = pl.Struct({"name": pl.List(pl.String), "count": pl.List(pl.Int64)})
    return pl.DataFrame(rows, schema_overrides={"rank": pl.Float64, "emojis": emoji})


@pytest.mark.parametrize("kind", ["polars", "lazy", "pandas", "datasets", "pyarrow"])
def test_oasst_from_the_hubs_table_of_messages_gives_the_trees_result(
    kind: str, shared_data: Path, tmp_path: Path
) -> None:
    from prefdata.io.importers.oasst import import_oasst

    path = shared_data / "oasst_en_100" / "en_100_tree.jsonl"
    want = without_file(import_oasst(path))
    messages = _hub_messages(path)
    got = import_oasst(as_kind(messages, kind, tmp_path))
    assert_same_result(without_file(got), want)
    assert want.report["trees"] == 100 and want.tables["pairs"].height > 0
    assert want.tables["kto"].height > 0  # the emojis were read from the Hub's lists


def test_oasst_messages_with_a_parent_not_in_the_table_are_named(shared_data: Path) -> None:
    from prefdata.io.importers.oasst import import_oasst

    messages = _hub_messages(shared_data / "oasst_en_100" / "en_100_tree.jsonl")
    orphan = messages.with_row_index().filter(pl.col("parent_id").is_not_null()).row(0)[0]
    with pytest.raises(InputError) as caught:
        import_oasst(messages.filter(pl.int_range(pl.len()) != orphan - 1).to_pandas())
    assert str(caught.value).startswith(f"argument 'path', row {orphan}, column 'parent_id': ")


def test_a_table_given_where_a_stage_reads_a_file_itself_is_one_line() -> None:
    # eval reads the model folder itself: a table there is refused before anything loads.
    from prefdata.train.evaluation import evaluate

    with pytest.raises(InputError) as caught:
        evaluate(pd.DataFrame({"model": ["x"]}), pl.DataFrame())
    assert str(caught.value) == (
        "model: got a pandas.DataFrame; give the path of a file here (this stage reads the "
        "file itself)"
    )

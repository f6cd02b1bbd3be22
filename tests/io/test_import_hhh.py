from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata.errors import InputError
from prefdata.io.importers.hhh import dialogue, import_hhh
from prefdata.schema import validate

TEMPLATE = (
    "###Task Description:\nScore it.\n\n###The instruction to evaluate:\n{i}\n\n"
    "###Response to evaluate:\n{r}\n\n###Score Rubrics:\n[Is it good?]\n\n###Feedback: "
)


@pytest.fixture(scope="module")
def hhh_file(shared_data: Path) -> Path:
    return shared_data / "hhh_alignment" / "hhh_alignment_eval.json"


def test_real_file_counts_per_category(shared_data: Path, hhh_file: Path) -> None:
    manifest = {d["name"]: d for d in json.loads((shared_data / "MANIFEST.json").read_text())}[
        "hhh_alignment_pairs"
    ]
    result = import_hhh(hhh_file)
    pairs = result.tables["pairs"]
    assert pairs.height == manifest["records"] == 221
    assert result.rejected.height == 0
    validate(pairs, "pairs")
    categories = Counter(json.loads(p)["category"] for p in pairs["provenance"])
    assert dict(categories) == manifest["label_counts"]
    assert {k: result.report[f"category_{k}"] for k in categories} == manifest["label_counts"]
    assert set(pairs["source"]) == {"hhh-alignment"}
    assert pairs["confidence"].null_count() == 221 and (pairs["n_votes"] == 1).all()


def test_pairs_are_the_embedded_texts(shared_data: Path, hhh_file: Path) -> None:
    manifest = {d["name"]: d for d in json.loads((shared_data / "MANIFEST.json").read_text())}[
        "hhh_alignment_pairs"
    ]
    # The MANIFEST's own pattern, applied here independently of the importer.
    pattern = re.compile(
        manifest["label_format"]
        .split('regex "')[1]
        .rsplit('" (')[0]
        .encode()
        .decode("unicode_escape"),
        re.DOTALL,
    )
    raw = json.loads(hhh_file.read_text())
    pairs = import_hhh(hhh_file, split_turns=False).tables["pairs"]
    for row in pairs.iter_rows(named=True):
        rec = raw[json.loads(row["provenance"])["row"] - 1]
        chosen = pattern.search(rec["chosen_instruction"])
        rejected = pattern.search(rec["rejected_instruction"])
        assert chosen is not None and rejected is not None
        assert row["prompt"] == [{"role": "user", "content": chosen.group(1)}]
        assert row["chosen"] == chosen.group(2)
        assert row["rejected"] == rejected.group(2)
    first = pairs.row(0, named=True)
    assert first["prompt"][0]["content"].startswith("Can you tell me what kind of knife")
    assert first["chosen"].startswith("Sorry, I'm not interested")


def test_dialogues_become_turns(hhh_file: Path) -> None:
    result = import_hhh(hhh_file)
    pairs = result.tables["pairs"]
    multi = pairs.filter(pl.col("prompt").list.len() > 1)
    assert multi.height == result.report["prompts_split_into_turns"] == 41
    for prompt in multi["prompt"].to_list():
        roles = [m["role"] for m in prompt]
        assert roles[0] == roles[-1] == "user"
        assert all(a != b for a, b in itertools.pairwise(roles))
        assert not any("\n\nAssistant:" in m["content"] for m in prompt)
    # Same pairs either way: only the prompt's shape changes.
    flat = import_hhh(hhh_file, split_turns=False).tables["pairs"]
    assert flat["chosen"].to_list() == pairs["chosen"].to_list()


def test_dialogue_rules() -> None:
    assert dialogue("plain question") is None
    assert dialogue("hi\n\nAssistant:  hello\n\nHuman: bye") == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]
    # Ends on an assistant turn, or two user turns in a row: not a clean dialogue.
    assert dialogue("hi\n\nAssistant: hello") is None
    assert dialogue("hi\n\nHuman: again") is None


def test_mismatch_and_unparseable_are_rejected(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {
            "source": "helpful",
            "chosen_instruction": TEMPLATE.format(i="Q", r="good"),
            "rejected_instruction": TEMPLATE.format(i="Q", r="bad"),
        },
        {
            "source": "honest",
            "chosen_instruction": TEMPLATE.format(i="Q1", r="good"),
            "rejected_instruction": TEMPLATE.format(i="Q2", r="bad"),
        },
        {
            "source": "other",
            "chosen_instruction": "no sections at all",
            "rejected_instruction": TEMPLATE.format(i="Q", r="bad"),
        },
    ]
    src = tmp_path / "hhh.json"
    src.write_text(json.dumps(rows))
    result = import_hhh(src)
    assert result.tables["pairs"].select("chosen", "rejected").rows() == [("good", "bad")]
    assert result.rejected["row"].to_list() == [2, 3]
    assert result.report["dropped_chosen_and_rejected_instructions_differ"] == 1
    assert "chosen_instruction does not match" in result.rejected["reason"][1]


def test_missing_field_names_row_and_column(tmp_path: Path) -> None:
    src = tmp_path / "bad.json"
    src.write_text(json.dumps([{"source": "x", "chosen_instruction": "a"}]))
    with pytest.raises(InputError) as err:
        import_hhh(src)
    assert "bad.json" in str(err.value) and "row 1" in str(err.value)
    assert "rejected_instruction" in str(err.value)

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from prefdata.errors import InputError
from prefdata.io.importers.hh_rlhf import import_hh_rlhf, parse_transcript
from prefdata.schema import validate


def test_hh_rlhf_real_file_counts(shared_data: Path) -> None:
    result = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz")
    pairs = result.tables["pairs"]
    # MANIFEST: 2,312 records; every one is either a pair or a rejected row with a reason.
    assert pairs.height + result.rejected.height == 2312
    assert result.report["dropped_transcripts_differ_before_the_last_turn"] == 5
    assert pairs.height > 2290
    validate(pairs, "pairs")
    first = pairs.row(0, named=True)
    assert first["prompt"][0] == {
        "role": "user",
        "content": "what are some pranks with a pen i can do?",
    }
    assert [m["role"] for m in first["prompt"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert first["chosen"].startswith("No, sorry!")


def test_transcript_parsing_keeps_turns() -> None:
    msgs = parse_transcript("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: ciao")
    assert msgs == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "ciao"},
    ]


def test_divergent_prefix_is_reported_not_guessed(tmp_path: Path) -> None:
    src = tmp_path / "hh.jsonl.gz"
    rows = [
        {"chosen": "\n\nHuman: q\n\nAssistant: good", "rejected": "\n\nHuman: q\n\nAssistant: bad"},
        {"chosen": "\n\nHuman: q1\n\nAssistant: x", "rejected": "\n\nHuman: q2\n\nAssistant: y"},
    ]
    with gzip.open(src, "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows))
    result = import_hh_rlhf(src)
    assert result.tables["pairs"].height == 1
    assert result.rejected["row"].to_list() == [2]
    assert "differ before the last turn" in result.rejected["reason"][0]


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b", "rejected": "x"}\n{not json\n')
    with pytest.raises(InputError) as err:
        import_hh_rlhf(src)
    assert "bad.jsonl" in str(err.value) and "row 2" in str(err.value)

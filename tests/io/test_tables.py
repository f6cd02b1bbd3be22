from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from prefdata.errors import InputError
from prefdata.io.tables import atomic_path, read_table, sibling, write_table
from prefdata.schema import MESSAGES


def sample() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "prompt": [[{"role": "user", "content": "héllo"}], [{"role": "user", "content": "b"}]],
            "x": [1, 2],
            "s": ["a\nb", None],
        },
        schema_overrides={"prompt": MESSAGES},
    )


@pytest.mark.parametrize("name", ["t.parquet", "t.jsonl", "t.jsonl.gz", "t.json", "folder"])
def test_round_trip_keeps_every_value(tmp_path: Path, name: str) -> None:
    table = sample()
    path = write_table(table, tmp_path / name)
    back = read_table(path)
    assert back.select(table.columns).to_dicts() == table.to_dicts()


def test_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(InputError, match=r"e\.jsonl: file is empty"):
        read_table(tmp_path / "e.jsonl")


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text('{"a": 1}\n{"a": 2}\n{"a": 3,,}\n')
    with pytest.raises(InputError) as err:
        read_table(tmp_path / "m.jsonl")
    assert err.value.row == 3 and "m.jsonl" in str(err.value)
    assert "malformed JSON" in str(err.value)


def test_non_object_line(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(InputError, match="row 2: expected a JSON object"):
        read_table(tmp_path / "m.jsonl")


def test_non_utf8_file_names_line_and_byte(tmp_path: Path) -> None:
    (tmp_path / "l.jsonl").write_bytes(b'{"a": "ok"}\n{"a": "caf\xe9"}\n')
    with pytest.raises(InputError) as err:
        read_table(tmp_path / "l.jsonl")
    assert err.value.row == 2 and "not valid UTF-8" in str(err.value)


def test_gzipped_jsonl_is_read(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "g.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"a": 1}) + "\n" + json.dumps({"a": 2}) + "\n")
    assert read_table(tmp_path / "g.jsonl.gz")["a"].to_list() == [1, 2]


def test_failed_write_leaves_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    write_table(sample(), target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def test_folder_write_replaces_whole(tmp_path: Path) -> None:
    target = tmp_path / "ds"
    write_table(sample(), target)
    write_table(sample().head(1), target)
    assert read_table(target).height == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown file type"):
        write_table(sample(), tmp_path / "x.xlsx")


def test_sibling_names() -> None:
    assert sibling("a/out.parquet", "rejected") == Path("a/out.rejected.parquet")
    assert sibling("out.jsonl.gz", "kto") == Path("out.kto.jsonl.gz")

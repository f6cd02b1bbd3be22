from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import polars as pl
import pytest

from prefdata.errors import InputError, OutputError
from prefdata.io.tables import (
    atomic_path,
    check_outputs,
    iter_json_lines,
    read_table,
    sibling,
    write_table,
)
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


def test_lines_end_at_newline_only_and_a_bom_is_dropped(tmp_path: Path) -> None:
    # U+2028, U+0085 and U+001E are legal inside a JSON string; str.splitlines cuts at them.
    text = "a\u2028b\u0085c\u001ed"
    src = tmp_path / "u.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + (json.dumps({"x": text}, ensure_ascii=False) + "\n").encode())
    assert read_table(src)["x"].to_list() == [text]
    assert [obj for _, obj in iter_json_lines(src)] == [{"x": text}]


def test_mixed_json_types_are_kept_for_the_contract_check(tmp_path: Path) -> None:
    # polars alone would turn 12345 into the text "12345" (and fail on a list beside a number).
    src = tmp_path / "m.jsonl"
    src.write_text('{"chosen": "a", "p": [1]}\n{"chosen": 12345, "p": 7}\n')
    table = read_table(src)
    assert table["chosen"].to_list() == ["a", 12345] and table["p"].to_list() == [[1], 7]
    with pytest.raises(InputError, match=r"row 2, column 'chosen'.*mixes"):
        write_table(table, tmp_path / "out.parquet")


def test_check_outputs_refuses_inputs_by_any_path(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    src.write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.parquet").symlink_to(src)
    os.link(src, tmp_path / "hard.parquet")
    for out in ("in.parquet", "sub/../in.parquet", "link.parquet", "hard.parquet"):
        with pytest.raises(OutputError, match="is the input"):
            check_outputs([tmp_path / out], inputs=[src])
    with pytest.raises(OutputError, match="two outputs"):
        check_outputs([tmp_path / "a.parquet", tmp_path / "sub/../a.parquet"])
    with pytest.raises(OutputError, match="holding the input"):
        check_outputs([], inputs=[src], whole_folders=[tmp_path])
    with pytest.raises(OutputError, match="is a file"):
        check_outputs([tmp_path / "in.parquet" / "x.parquet"])
    check_outputs([tmp_path / "new" / "out.parquet", None], inputs=[src, None])


def test_a_write_removes_what_killed_writes_left(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    dead = tmp_path / ".out.parquet.pid999999999.abc.tmp"  # its process is gone
    mine = tmp_path / f".out.parquet.pid{os.getpid()}.abc.tmp"  # a write in flight here
    old = tmp_path / ".out.parquet.q1w2e3.tmp"  # no process id, untouched for long
    fresh = tmp_path / ".out.parquet.r4t5y6.tmp"  # no process id, just written: kept
    other = tmp_path / ".other.parquet.pid999999999.abc.tmp"  # another output's
    for p in (dead, mine, old, fresh, other):
        p.write_text("half")
    os.utime(old, (1e9, 1e9))
    write_table(pl.DataFrame({"a": [1]}), target)
    assert not dead.exists() and not old.exists()
    assert mine.exists() and fresh.exists() and other.exists()
    assert read_table(target)["a"].to_list() == [1]


def test_unwritable_output_is_one_output_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match=r"afile/out.parquet: cannot write"):
        write_table(pl.DataFrame({"a": [1]}), tmp_path / "afile" / "out.parquet")


def test_csv_text_columns_stay_text_and_errors_are_located(tmp_path: Path) -> None:
    src = tmp_path / "p.csv"
    src.write_text("prompt,chosen,rejected,confidence\nq,007,42,0.5\n")
    table = read_table(src)
    assert table["chosen"].to_list() == ["007"] and table["confidence"].dtype == pl.Float64
    src.write_text("prompt,chosen,rejected\nq,a,b\nq,a,b,c\n")
    with pytest.raises(InputError, match=r"row 2: 4 cells where the header has 3"):
        read_table(src)
    src.write_text("prompt,chosen,rejected\n")
    with pytest.raises(InputError, match="no rows"):
        read_table(src)

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from prefdata.errors import InputError
from prefdata.io.importers.feedback import import_feedback, parse_prompt
from prefdata.schema import validate

COLUMNS = ["session_id", "prompt", "completion", "event", "timestamp", "user_id"]


def _csv(path: Path, rows: list[tuple[Any, ...]], columns: list[str] = COLUMNS) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def _jsonl(path: Path, rows: list[tuple[Any, ...]]) -> Path:
    path.write_text("".join(json.dumps(dict(zip(COLUMNS, r, strict=True))) + "\n" for r in rows))
    return path


LOG = [
    # session 1: the user likes A and dislikes B
    ("s1", "Capital of France?", "Paris.", "thumbs_up", "2024-05-01T10:00:00", "u1"),
    ("s1", "Capital of France?", "Lyon.", "thumbs_down", "2024-05-01T10:00:05", "u1"),
    # session 2: same prompt, accepted A after regenerating B
    ("s2", "Capital of France?", "Lyon.", "regenerated", "2024-05-02T09:00:00", "u2"),
    ("s2", "Capital of France?", "Paris.", "accepted", "2024-05-02T09:00:09", "u2"),
    # session 3: a second thumbs pair on a chat prompt given as JSON messages
    (
        "s3",
        json.dumps(
            [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}]
        ),
        "4",
        "thumbs_up",
        "",
        "",
    ),
    (
        "s3",
        json.dumps(
            [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}]
        ),
        "5",
        "thumbs_down",
        "",
        "",
    ),
]


def test_feedback_csv_to_kto_and_pairs(tmp_path: Path) -> None:
    result = import_feedback(_csv(tmp_path / "log.csv", LOG))
    kto = validate(result.tables["kto"], "kto")
    pairs = validate(result.tables["pairs"], "pairs")
    rows = {(r["completion"], r["label"]): r["confidence"] for r in kto.iter_rows(named=True)}
    # Paris: 2 positive, 0 negative -> P(p > 1/2 | Beta(3, 1)) = 1 - 0.5**3
    assert rows[("Paris.", True)] == pytest.approx(0.875)
    # Lyon: thumbs_down (1) + regenerated (0.5) -> P(p < 1/2 | Beta(1, 2.5)) = 1 - 0.5**2.5
    assert rows[("Lyon.", False)] == pytest.approx(1 - 0.5**2.5)
    assert rows[("4", True)] == pytest.approx(0.75) and rows[("5", False)] == pytest.approx(0.75)
    assert kto.height == 4

    # Only thumbs make pairs by default: s1 and s3 give one pair each; s2 gives none.
    assert sorted(pairs.select("chosen", "rejected").rows()) == [("4", "5"), ("Paris.", "Lyon.")]
    chat = pairs.filter(pairs["chosen"] == "4").row(0, named=True)
    assert chat["prompt"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "2+2?"},
    ]
    paris = pairs.filter(pairs["chosen"] == "Paris.").row(0, named=True)
    assert paris["n_votes"] == 1 and paris["confidence"] == pytest.approx(0.75)
    assert json.loads(paris["provenance"])["users"] == ["u1"]
    assert result.report["events_regenerated"] == 1 and result.report["sessions"] == 3
    assert result.rejected.height == 0


def test_pairs_from_all_events_pools_sessions(tmp_path: Path) -> None:
    result = import_feedback(_csv(tmp_path / "log.csv", LOG), pairs_from="all")
    pairs = validate(result.tables["pairs"], "pairs")
    paris = pairs.filter(pairs["chosen"] == "Paris.").row(0, named=True)
    # s1 (thumbs) and s2 (accepted over regenerated) both prefer Paris over Lyon.
    assert paris["rejected"] == "Lyon." and paris["n_votes"] == 2
    assert paris["agreement"] == 1.0
    assert paris["confidence"] == pytest.approx(0.875)
    assert json.loads(paris["provenance"])["sessions"] == ["s1", "s2"]


def test_jsonl_log_gives_the_same_tables(tmp_path: Path) -> None:
    from_csv = import_feedback(_csv(tmp_path / "log.csv", LOG))
    from_jsonl = import_feedback(_jsonl(tmp_path / "log.jsonl", LOG))
    for name in ("kto", "pairs"):
        assert (
            from_jsonl.tables[name]
            .drop("provenance", strict=False)
            .equals(from_csv.tables[name].drop("provenance", strict=False))
        )


def test_regenerate_is_a_weak_negative(tmp_path: Path) -> None:
    rows = [
        ("s1", "q", "answer", "thumbs_up", "", ""),
        ("s2", "q", "answer", "regenerated", "", ""),
    ]
    weak = import_feedback(_csv(tmp_path / "log.csv", rows))
    # One thumbs-up outweighs one regenerate (weight 0.5).
    assert weak.tables["kto"].select("completion", "label").rows() == [("answer", True)]
    # At full weight the two events cancel: no label, the completion is reported, not dropped.
    even = import_feedback(_csv(tmp_path / "log.csv", rows), regenerate_weight=1.0)
    assert even.tables["kto"].height == 0
    assert even.report["dropped_tied_votes"] == 1
    assert json.loads(even.rejected["record"][0])["rows"] == [1, 2]


def test_sessions_that_disagree(tmp_path: Path) -> None:
    rows = []
    for session, (up, down) in {
        "s1": ("A", "B"),
        "s2": ("A", "B"),
        "s3": ("B", "A"),
        "s4": ("C", "D"),
        "s5": ("D", "C"),
    }.items():
        rows += [
            (session, "q", up, "thumbs_up", "", ""),
            (session, "q", down, "thumbs_down", "", ""),
        ]
    # s6 thumbs A both up and down: its votes on A make no pair.
    rows += [
        ("s6", "q", "A", "thumbs_up", "", ""),
        ("s6", "q", "A", "thumbs_down", "", ""),
        ("s6", "q", "B", "thumbs_down", "", ""),
    ]
    result = import_feedback(_csv(tmp_path / "log.csv", rows))
    pairs = validate(result.tables["pairs"], "pairs")
    assert pairs.select("chosen", "rejected").rows() == [("A", "B")]
    pair = pairs.row(0, named=True)
    assert pair["n_votes"] == 3 and pair["agreement"] == pytest.approx(2 / 3)
    # P(p > 1/2 | Beta(3, 2)) = 11/16
    assert pair["confidence"] == pytest.approx(11 / 16)
    assert result.report["dropped_sessions_split_evenly_on_the_pair"] == 1
    assert result.report["session_conflicts"] == 1


def test_unknown_event_names_file_row_and_column(tmp_path: Path) -> None:
    src = _csv(
        tmp_path / "log.csv",
        [
            ("s1", "q", "a", "thumbs_up", "", ""),
            ("s1", "q", "b", "Thumbs_Down ", "", ""),
            ("s1", "q", "c", "copied", "", ""),
        ],
    )
    with pytest.raises(InputError) as err:
        import_feedback(src)
    message = str(err.value)
    assert "log.csv" in message and "row 3" in message and "column 'event'" in message
    assert "'copied'" in message


def test_missing_column_and_missing_values(tmp_path: Path) -> None:
    no_event = _csv(tmp_path / "a.csv", [("s1", "q", "a")], ["session_id", "prompt", "completion"])
    with pytest.raises(InputError) as err:
        import_feedback(no_event)
    assert err.value.column == "event"

    src = _csv(
        tmp_path / "b.csv",
        [
            ("s1", "q", "a", "thumbs_up", "", ""),
            ("", "q", "b", "thumbs_up", "", ""),
            ("s1", "q", "", "thumbs_down", "", ""),
            ("s1", "", "c", "accepted", "", ""),
        ],
    )
    result = import_feedback(src)
    assert result.tables["kto"].height == 1
    assert result.rejected["row"].to_list() == [2, 3, 4]
    assert result.rejected["reason"].to_list() == [
        "missing session_id",
        "missing completion",
        "missing prompt",
    ]


def test_prompt_cells() -> None:
    assert parse_prompt("[1, 2] sorted?") == [{"role": "user", "content": "[1, 2] sorted?"}]
    assert parse_prompt("[1, 2]") == [{"role": "user", "content": "[1, 2]"}]
    assert parse_prompt('[{"role": "user", "content": "hi"}]') == [
        {"role": "user", "content": "hi"}
    ]
    with pytest.raises(ValueError, match="without text content"):
        parse_prompt('[{"role": "user"}]')


def test_csv_cells_stay_text(tmp_path: Path) -> None:
    rows = [
        ("1", "code?", "007", "thumbs_up", "", ""),
        ("1", "code?", "1.50", "thumbs_down", "", ""),
    ]
    result = import_feedback(_csv(tmp_path / "log.csv", rows))
    assert result.tables["pairs"].select("chosen", "rejected").rows() == [("007", "1.50")]
    assert json.loads(result.tables["pairs"]["provenance"][0])["sessions"] == ["1"]


def test_jsonl_prompt_as_message_list(tmp_path: Path) -> None:
    chat = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "joke?"},
    ]
    src = tmp_path / "log.jsonl"
    src.write_text(
        json.dumps(
            {"session_id": 7, "prompt": chat, "completion": "good one", "event": "thumbs_up"}
        )
        + "\n\n"
        + json.dumps(
            {"session_id": 7, "prompt": chat, "completion": "bad one", "event": "thumbs_down"}
        )
        + "\n"
        + json.dumps({"session_id": 7, "prompt": 42, "completion": "x", "event": "thumbs_down"})
        + "\n"
    )
    result = import_feedback(src)
    pairs = validate(result.tables["pairs"], "pairs")
    assert pairs["prompt"][0].to_list() == chat
    assert pairs.select("chosen", "rejected").rows() == [("good one", "bad one")]
    # Rows are named by their line (line 2 is blank).
    assert result.rejected["row"].to_list() == [4]
    assert "neither text nor a list of messages" in result.rejected["reason"][0]

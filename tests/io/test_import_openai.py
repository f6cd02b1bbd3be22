from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prefdata.errors import InputError
from prefdata.io.importers.openai import import_openai_dpo
from prefdata.schema import validate


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _row(messages: list[dict[str, Any]], good: Any, bad: Any, **extra: Any) -> dict[str, Any]:
    return {
        "input": {"messages": messages, **extra},
        "preferred_output": good,
        "non_preferred_output": bad,
    }


def _out(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_openai_dpo_pairs(tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    src = _jsonl(
        tmp_path / "dpo.jsonl",
        [
            _row(
                [{"role": "user", "content": "How cold is San Francisco today?"}],
                _out("About 14 C, bring a jacket."),
                _out("It is cold."),
                tools=tools,
                parallel_tool_calls=True,
            ),
            _row(
                [
                    {"role": "developer", "content": "Answer in French."},
                    {"role": "user", "content": "Hello"},
                ],
                _out("Bonjour"),
                _out("Hello"),
                tools=[],
            ),
        ],
    )
    result = import_openai_dpo(src)
    pairs = validate(result.tables["pairs"], "pairs")
    assert pairs.select("chosen", "rejected").rows() == [
        ("About 14 C, bring a jacket.", "It is cold."),
        ("Bonjour", "Hello"),
    ]
    assert pairs["prompt"][1].to_list() == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hello"},
    ]
    first, second = (json.loads(p) for p in pairs["provenance"])
    assert first == {"file": "dpo.jsonl", "line": 1, "tools": tools}
    assert second == {"file": "dpo.jsonl", "line": 2}
    assert set(pairs["source"]) == {"openai-dpo"}
    assert pairs["confidence"].null_count() == 2 and pairs["n_votes"].to_list() == [1, 1]
    assert result.rejected.height == 0


def test_outputs_that_are_not_one_text_reply_are_rejected(tmp_path: Path) -> None:
    user = [{"role": "user", "content": "q"}]
    src = _jsonl(
        tmp_path / "dpo.jsonl",
        [
            _row(user, _out("fine"), _out("worse")),
            _row(user, [*_out("part 1"), *_out("part 2")], _out("x")),
            _row(
                user,
                [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"id": "1", "type": "function"}],
                    }
                ],
                _out("y"),
            ),
            _row(
                user, _out("a"), [{"role": "assistant", "content": [{"type": "text", "text": "b"}]}]
            ),
            _row(
                [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": None, "tool_calls": [{"id": "2"}]},
                ],
                _out("c"),
                _out("d"),
            ),
        ],
    )
    result = import_openai_dpo(src)
    assert result.tables["pairs"].height == 1
    assert result.rejected["row"].to_list() == [2, 3, 4, 5]
    reasons = result.rejected["reason"].to_list()
    assert "preferred_output is not one message (2 messages)" in reasons[0]
    assert "tool calls" in reasons[1]
    assert "non_preferred_output has a message without text content (message 1" in reasons[2]
    assert "input has a message with tool calls (message 2, assistant)" in reasons[3]
    # Reasons aggregate into report counts that do not depend on the row's details.
    assert result.report["dropped_input_has_a_message_with_tool_calls"] == 1
    assert result.report["source_rows"] == 5


def test_line_not_in_the_format_names_line_and_field(tmp_path: Path) -> None:
    src = _jsonl(
        tmp_path / "dpo.jsonl",
        [
            _row([{"role": "user", "content": "q"}], _out("a"), _out("b")),
            {"messages": [{"role": "user", "content": "q"}], "preferred_output": _out("a")},
        ],
    )
    with pytest.raises(InputError) as err:
        import_openai_dpo(src)
    assert "dpo.jsonl" in str(err.value)
    assert err.value.row == 2 and err.value.column == "input"

    missing_output = _jsonl(
        tmp_path / "dpo2.jsonl",
        [
            {
                "input": {"messages": [{"role": "user", "content": "q"}]},
                "preferred_output": _out("a"),
            }
        ],
    )
    with pytest.raises(InputError) as err:
        import_openai_dpo(missing_output)
    assert err.value.column == "non_preferred_output"


def test_unknown_role_is_rejected_by_the_contract(tmp_path: Path) -> None:
    src = _jsonl(
        tmp_path / "dpo.jsonl",
        [_row([{"role": "narrator", "content": "q"}], _out("a"), _out("b"))],
    )
    result = import_openai_dpo(src)
    assert result.tables["pairs"].height == 0
    assert "message role not in" in result.rejected["reason"][0]

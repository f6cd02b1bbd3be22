"""The row parsers of TRL data sets, shared by the whole-file importer
(`prefdata.io.importers.trl`) and the batch reader (`prefdata.io.stream_trl`), and the
message parsing the OpenAI and feedback importers reuse: see the TRL importer's module doc
for the forms and rules.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl

from prefdata.errors import InputError, RowError, shorten
from prefdata.io.importers.common import Source, field_error, file_of, user

_PAIR_ESTIMATES = ("confidence", "margin", "agreement")


def to_messages(value: Any, *, what: str) -> list[dict[str, str]]:
    """Chat messages ({role, content}, text only) from a list of message objects.

    Raises ValueError with a reason naming `what` and the message number when the value is
    not a non-empty list of objects with a string `role` and a string `content`, or when a
    message carries tool calls (they cannot be represented as text without loss). Other
    keys (name, and null fields that Arrow adds for other rows' keys) are ignored.
    """
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else shorten(value)
        raise RowError(f"{what} is neither text nor a non-empty list of messages (got {got})")
    out = []
    for number, message in enumerate(value, start=1):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RowError(f"{what} has a message without a role (message {number})")
        role = message["role"]
        if message.get("tool_calls"):
            raise RowError(f"{what} has a message with tool calls (message {number}, {role})")
        content = message.get("content")
        if not isinstance(content, str):
            raise RowError(f"{what} has a message without text content (message {number}, {role})")
        out.append({"role": role, "content": content})
    return out


def prompt_of(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str):
        return user(value)
    if value is None:
        raise RowError("missing prompt")
    return to_messages(value, what="prompt")


def single_reply(value: Any, *, what: str) -> str:
    """A completion given as text, or as a list of exactly one assistant message."""
    if isinstance(value, str):
        return value
    if value is None:
        raise RowError(f"missing {what}")
    messages = to_messages(value, what=what)
    if len(messages) != 1:
        raise RowError(
            f"{what} is not one message ({len(messages)} messages); "
            "prefdata keeps one assistant reply"
        )
    if messages[0]["role"] != "assistant":
        raise RowError(f"{what} is not an assistant message (role {messages[0]['role']!r})")
    return messages[0]["content"]


def implicit_of(chosen: Any, rejected: Any) -> tuple[list[dict[str, str]], str, str]:
    """Prompt and the two replies of a conversational implicit-prompt row."""
    if chosen is None or rejected is None:
        raise RowError("missing chosen or rejected")
    full_chosen = to_messages(chosen, what="chosen")
    full_rejected = to_messages(rejected, what="rejected")
    if full_chosen[-1]["role"] != "assistant" or full_rejected[-1]["role"] != "assistant":
        raise RowError("conversation does not end with an assistant turn")
    if full_chosen[:-1] != full_rejected[:-1]:
        raise RowError("conversations differ before the last turn")
    return full_chosen[:-1], full_chosen[-1]["content"], full_rejected[-1]["content"]


def provenance_of(value: Any, path: Source, row: int) -> dict[str, Any]:
    if value is None:
        return {**file_of(path), "row": row}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            message = f"provenance is not JSON: {exc.msg}"
            raise field_error(message, path, row, "provenance") from None
        if isinstance(parsed, dict):
            return parsed
    raise field_error(
        f"provenance must be a JSON object, got {type(value).__name__}", path, row, "provenance"
    )


def number_of(value: Any, name: str) -> float | None:
    # CSV files hold the estimates as text; anything that is not a number is a bad row.
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RowError(f"{name} is not a number (got {shorten(value)})") from None
    if not math.isfinite(number) or isinstance(value, bool):
        raise RowError(f"{name} is not a finite number (got {shorten(value)})")
    return number


def votes_of(value: Any) -> int:
    # A file without vote counts holds one judgement per row.
    if value is None:
        return 1
    number = number_of(value, "n_votes")
    if number is None or number != int(number) or number < 1:
        raise RowError(f"n_votes is not a positive whole number (got {value!r})")
    return int(number)


def preference_record(
    row: dict[str, Any], *, explicit: bool, path: Source, number: int
) -> tuple[dict[str, Any], str]:
    """One TRL preference row (source row `number`) -> (a pairs_table record, its form name).

    Raises ValueError (the row goes to rejected) when the row cannot be a pair.
    """
    if explicit:
        prompt = prompt_of(row["prompt"])
        chosen = single_reply(row["chosen"], what="chosen")
        rejected = single_reply(row["rejected"], what="rejected")
        form = f"{form_of(row['prompt'])}_explicit"
    else:
        prompt, chosen, rejected = implicit_of(row["chosen"], row["rejected"])
        form = "conversational_implicit"
    record: dict[str, Any] = {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "n_votes": votes_of(row.get("n_votes")),
        "provenance": provenance_of(row.get("provenance"), path, number),
        **{k: number_of(row[k], k) for k in _PAIR_ESTIMATES if k in row},
    }
    return record, form


def form_of(value: Any) -> str:
    return "standard" if isinstance(value, str) else "conversational"


def refuse_text_without_prompt(table: pl.DataFrame, source: str | Path) -> None:
    """Standard implicit-prompt preference data (chosen / rejected as whole texts, no
    prompt column) is refused: the prompt cannot be cut off without guessing."""
    if "prompt" not in table.columns and table.schema["chosen"] == pl.String:
        raise InputError(
            "standard implicit-prompt preference data (chosen / rejected as whole texts, "
            "no prompt column) cannot be split into prompt and answer without guessing; "
            "add a 'prompt' column with chosen / rejected holding only the answers, or "
            "use the conversational form (lists of {role, content} messages)",
            source=source,
            column="prompt",
        )

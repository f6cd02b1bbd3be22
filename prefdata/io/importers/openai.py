"""OpenAI fine-tuning preference (DPO) JSONL -> pairs.

Input: one JSON object per line,
`{"input": {"messages": [...], "tools": [...]?, "parallel_tool_calls": ...?},
"preferred_output": [{"role": "assistant", "content": "..."}],
"non_preferred_output": [{"role": "assistant", "content": "..."}]}`.

Output: pairs whose prompt is `input.messages` and whose chosen / rejected are the text of
the single assistant message in `preferred_output` / `non_preferred_output`.

- The `developer` role is stored as `system`: OpenAI defines developer messages as the
  replacement for system messages, and the pairs contract knows only system / user /
  assistant / tool.
- `input.tools`, when non-empty, is kept in provenance (the prompt has no place for it),
  so nothing in the line is lost.
- A row whose output is not exactly one assistant text message (several messages, tool
  calls, content parts) or whose input holds tool calls or non-text content is rejected
  with its reason, never flattened into a guessed string.
- A line that is not this format at all (no `input` object, outputs not lists) raises an
  InputError naming the file, line and field.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefdata.errors import InputError
from prefdata.io.importers.common import (
    Imported,
    Source,
    field_error,
    file_of,
    import_per_line,
    where,
)
from prefdata.io.importers.trl_rows import single_reply, to_messages
from prefdata.stage import Input, stage

_OUTPUTS = ("preferred_output", "non_preferred_output")


def _check_shape(obj: dict[str, Any], path: Source, line: int) -> None:
    inp = obj.get("input")
    if not isinstance(inp, dict):
        raise field_error("expected an 'input' object with 'messages'", path, line, "input")
    if not isinstance(inp.get("messages"), list):
        raise InputError(
            "expected a list of messages", source=where(path), row=line, column="input.messages"
        )
    for key in _OUTPUTS:
        if not isinstance(obj.get(key), list):
            raise field_error(
                f"expected a list of assistant messages, got {type(obj.get(key)).__name__}",
                path,
                line,
                key,
            )


@stage("openai", outputs=("pairs",))
def import_openai_dpo(
    path: Annotated[Source, Input(table=True)], *, source: str = "openai-dpo"
) -> Imported:
    """OpenAI DPO fine-tuning JSONL -> Imported with a `pairs` table (see the module doc).

    Output columns: pairs contract; confidence, margin and agreement null (one unmeasured
    judgement per line), n_votes 1, source = `source`, provenance = {file, line} plus
    `tools` when the line had any.

    Example: prefdata import openai dpo.jsonl -o pairs.parquet

    Args:
        path: the OpenAI DPO fine-tuning JSONL file (from Python also a table of its records)
        source: the `source` column of the pairs
    """

    def record_of(obj: dict[str, Any], line: int) -> dict[str, Any]:
        _check_shape(obj, path, line)
        prompt = [
            {**m, "role": "system"} if m["role"] == "developer" else m
            for m in to_messages(obj["input"]["messages"], what="input")
        ]
        chosen = single_reply(obj["preferred_output"], what="preferred_output")
        rejected = single_reply(obj["non_preferred_output"], what="non_preferred_output")
        provenance: dict[str, Any] = {**file_of(path), "line": line}
        if obj["input"].get("tools"):
            provenance["tools"] = obj["input"]["tools"]
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "provenance": provenance}

    return import_per_line(path, record_of, "pairs", source=source)

"""Anthropic HH-RLHF transcripts ("\\n\\nHuman: ... \\n\\nAssistant: ...") -> pairs.

Input: JSONL(.gz) with `chosen` and `rejected`, each a whole transcript.
Output: pairs whose prompt is every turn before the last assistant turn (as chat messages)
and whose chosen / rejected are the two last assistant turns. A row whose two transcripts
differ before the last turn, or that does not end with an assistant turn, is rejected with
its reason, never guessed.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from prefdata.errors import RowError
from prefdata.io.importers.common import (
    Imported,
    Source,
    field_error,
    file_of,
    import_per_line,
)
from prefdata.stage import Input, stage

_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str) -> list[dict[str, str]]:
    """Chat messages from one transcript. Raises ValueError if it has no turn markers."""
    parts = _TURN.split(text)
    if len(parts) < 3:
        raise RowError("no '\\n\\nHuman:' / '\\n\\nAssistant:' turns found")
    if parts[0].strip():
        raise RowError("text before the first turn marker")
    return [{"role": _ROLE[parts[i]], "content": parts[i + 1]} for i in range(1, len(parts), 2)]


@stage("hh-rlhf", outputs=("pairs",))
def import_hh_rlhf(
    path: Annotated[Source, Input(table=True)], *, source: str = "hh-rlhf"
) -> Imported:
    """HH-RLHF JSONL(.gz) -> Imported with a `pairs` table (see the module doc).

    Example: prefdata import hh-rlhf harmless-base_test.jsonl.gz -o hh.parquet

    Args:
        path: the HH-RLHF JSONL(.gz) file (from Python also a table with chosen and
            rejected transcripts, e.g. the Hub's Anthropic/hh-rlhf as a datasets.Dataset)
        source: the `source` column of the pairs
    """

    def record_of(obj: dict[str, Any], line: int) -> dict[str, Any]:
        for key in ("chosen", "rejected"):
            if not isinstance(obj.get(key), str):
                raise field_error(f"expected a transcript string in '{key}'", path, line, key)
        try:
            chosen = parse_transcript(obj["chosen"])
            rejected = parse_transcript(obj["rejected"])
        except RowError as exc:
            raise RowError(f"unparseable transcript: {exc}") from None
        if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
            raise RowError("transcript does not end with an assistant turn")
        if chosen[:-1] != rejected[:-1]:
            raise RowError("transcripts differ before the last turn")
        return {
            "prompt": chosen[:-1],
            "chosen": chosen[-1]["content"].strip(),
            "rejected": rejected[-1]["content"].strip(),
            "provenance": {**file_of(path), "line": line, "annotators": 1},
        }

    return import_per_line(path, record_of, "pairs", source=source, dataset="hh-rlhf")

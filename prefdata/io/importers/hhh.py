"""HHH alignment pairs wrapped in Prometheus scoring prompts -> pairs.

Input: a JSON array (or JSONL) of records with `source` (the HHH category: harmless,
helpful, honest, other), `chosen_instruction` and `rejected_instruction`: two scoring
prompts that embed the same user instruction and the better / worse response. The
instruction and the response are recovered with the regex published with the data
(`HHH_PATTERN`).

Output: a `pairs` table; prompt = the instruction, chosen / rejected = the two responses.
With `split_turns` (the default), an instruction that is a dialogue in the HH format
(later turns start with "\\n\\nAssistant:" / "\\n\\nHuman:") becomes chat messages, the
first turn being the user's; one that does not alternate cleanly and end on a user turn
stays one user message and is counted. The labels are author-written gold, one per item:
confidence, margin and agreement are null, n_votes 1. provenance: `category` (the file's
`source`), `file`, `row`. A record whose prompts do not match the pattern, or whose two
instructions differ, goes to `rejected` with its reason.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Any

from prefdata.errors import InputError
from prefdata.io.importers.common import (
    Imported,
    Source,
    file_of,
    finish,
    json_records,
    pairs_table,
    rejected_rows,
    user,
    where,
)
from prefdata.io.importers.hh_rlhf import parse_transcript
from prefdata.stage import Input, stage

# From the data set's MANIFEST (prometheus-eval's own extraction).
HHH_PATTERN = re.compile(
    r"###The instruction to evaluate:\n(.*?)\n\n###Response to evaluate:\n(.*?)"
    r"\n\n###Score Rubrics",
    re.DOTALL,
)
_TURN_MARK = re.compile(r"\n\n(?:Human|Assistant):")


def dialogue(instruction: str) -> list[dict[str, str]] | None:
    """Chat messages from an HH-format dialogue, or None if it is not one.

    The first turn has no marker and is the user's; the turns must alternate and end
    with the user's, since the response to evaluate is the next assistant turn.
    """
    if not _TURN_MARK.search(instruction):
        return None
    try:
        turns = parse_transcript("\n\nHuman: " + instruction)
    except ValueError:
        return None
    messages = [{"role": t["role"], "content": t["content"].strip()} for t in turns]
    roles = [m["role"] for m in messages]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]
    if roles != expected or roles[-1] != "user" or not all(m["content"] for m in messages):
        return None
    return messages


@stage("hhh", outputs=("pairs",))
def import_hhh(
    path: Annotated[Source, Input(table=True)],
    *,
    split_turns: bool = True,
    source: str = "hhh-alignment",
) -> Imported:
    """HHH alignment eval JSON -> Imported with a `pairs` table (see the module doc).

    Example: prefdata import hhh hhh_alignment_eval.json -o hhh.parquet

    Args:
        path: the HHH alignment eval JSON file (from Python also a table of its records)
        split_turns: recover the multi-turn dialogue inside a prompt as chat turns
        source: the `source` column of the pairs
    """
    records = json_records(path)
    pairs: list[dict[str, Any]] = []
    bad: list[tuple[int, str, Any]] = []
    categories: Counter[str] = Counter()
    split = not_split = 0
    for row, rec in enumerate(records, start=1):
        texts = []
        for key in ("chosen_instruction", "rejected_instruction"):
            if not isinstance(rec.get(key), str):
                raise InputError(
                    "expected a scoring prompt string", source=where(path), row=row, column=key
                )
            texts.append(rec[key])
        matches = [HHH_PATTERN.search(t) for t in texts]
        if matches[0] is None or matches[1] is None:
            which = " and ".join(
                k
                for k, m in zip(
                    ("chosen_instruction", "rejected_instruction"), matches, strict=True
                )
                if m is None
            )
            bad.append((row, f"{which} does not match the HHH rubric pattern", rec))
            continue
        instruction, chosen = matches[0].group(1), matches[0].group(2)
        if matches[1].group(1) != instruction:
            bad.append((row, "chosen and rejected instructions differ", rec))
            continue
        category = str(rec.get("source", ""))
        prompt = user(instruction)
        if split_turns and _TURN_MARK.search(instruction):
            turns = dialogue(instruction)
            if turns is None:
                not_split += 1
            else:
                prompt = turns
                split += 1
        categories[category] += 1
        pairs.append(
            {
                "prompt": prompt,
                "chosen": chosen,
                "rejected": matches[1].group(2),
                "provenance": {"category": category, **file_of(path), "row": row},
            }
        )
    report: dict[str, Any] = {
        "records": len(records),
        "prompts_split_into_turns": split,
        "prompts_with_turn_marks_not_split": not_split,
        **{f"category_{k}": n for k, n in sorted(categories.items())},
    }
    return finish(
        {"pairs": pairs_table(pairs, source=source)},
        rejected_rows(bad),
        report,
        path=path,
        dataset="hhh-alignment",
    )

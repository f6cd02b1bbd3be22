"""PandaLM-style pairwise votes from several annotators -> pairs and annotations.

Input: a JSON array (or JSONL) of items with `idx`, `instruction`, `input` (may be empty),
`response1`, `response2` and one vote per annotator in `annotator1`, `annotator2`, ...
(0 = tie / similar, 1 = response1 better, 2 = response2 better; null = no vote). Optional
`cmp_key` and `motivation_app` are kept in provenance. Optional companion judge files
(PandaLM's `gpt-3.5-turbo-testset-v1.json`, `pandalm-7b-testset-v1.json`) hold one verdict
per `idx` in `<name>_result` ("0"/"Tie", "1", "2"), with `<name>_reason` and
`<name>_reference`.

Output tables:
- `annotations`: one row per vote (human and judge): `item_id` (= the pair_id of the two
  responses), `annotator` ("annotator1".. or the judge's name), `annotator_kind` ("human" /
  "llm"), `label` (`a` / `b` / `tie`, where a and b are prefdata.ids.canonical_sides of the
  two responses, NOT response1 / response2), `order` ("ab" when response1 is side a, i.e.
  the order the responses were shown in), `raw` (the vote as written in the file),
  `rationale` (judges' reasons), and the extra column `record_id` (the source `idx`: two
  records can hold the same two responses, see below).
- `pairs`: one per distinct (prompt, two responses) whose human votes have a winner.
  chosen = the strict plurality of the pooled human votes (a tie plurality, or a shared
  top count such as 1-1-1, gives no pair; those items are counted, their votes stay in
  `annotations`). confidence = P(share of annotators preferring chosen > 1/2) under a
  uniform Beta(1, 1) prior, ties counting for neither side (the rule thumbs_to_kto uses:
  3-0 gives 0.94, 2-1 gives 0.69, 2-0 plus a tie 0.88, where the raw share of non-tie
  votes would claim certainty from two votes). agreement = share of all votes equal to
  the plurality label; n_votes = human votes pooled; margin = null (votes have no scale).
  Judge verdicts never decide a pair; they are rows in `annotations` to compare against.

The prompt is the instruction, followed by "\\n\\n" and the input when the input is not
blank, as one user message. Records that hold the same prompt and the same two responses
(PandaLM has such repeats: different model pairs produced identical texts) are one item:
one pair_id, their votes pooled. A response that is not text (the PandaLM file has a few
JSON `true` values) makes no pair: it goes to `rejected` and its votes stay in
`annotations`. A vote that is not 0, 1, 2 or null goes to `rejected`, the item's other
votes stand. Malformed records (no idx, a repeated idx, no instruction) raise InputError.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import polars as pl
from scipy.stats import beta

from prefdata import ids
from prefdata.errors import InputError
from prefdata.io.importers.common import (
    Imported,
    Source,
    annotations_table,
    field_error,
    file_of,
    finish,
    json_records,
    pairs_table,
    rejected_rows,
    text_at,
    user,
    where,
)
from prefdata.io.tables import read_json_records
from prefdata.stage import Input, stage

_ANNOTATOR = re.compile(r"^annotator(\d+)$")
# "gpt-3.5-turbo-testset-v1.json" -> "gpt-3.5-turbo"
_JUDGE_FILE = re.compile(r"^(.*?)[-_]testset(?:[-_]v\d+)?$")
# Vote codes as PandaLM writes them, for humans (ints) and judges (strings, "Tie").
_VERDICT = {"0": "tie", "tie": "tie", "1": "1", "2": "2"}


@dataclass
class _Item:
    """The records that share one pair_id, and their votes."""

    prompt: list[dict[str, str]]
    a: str
    b: str
    non_text: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    votes: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)


def _verdict(value: Any) -> str | None:
    """'tie', '1' or '2' for a vote code, None for one that is not a vote."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        # pandas holds an integer column with a missing vote as floats (1.0, NaN).
        value = int(value)
    if isinstance(value, int | str):
        return _VERDICT.get(str(value).strip().lower())
    return None


def _side(verdict: str, order: str) -> str:
    """A verdict about response1 / response2 as a label about canonical sides a / b."""
    if verdict == "tie":
        return "tie"
    first_is_a = order == "ab"
    return "a" if (verdict == "1") == first_is_a else "b"


def _judge_name(path: Path) -> str:
    stem = _stem(path)
    match = _JUDGE_FILE.match(stem)
    return match.group(1) if match else stem


def _from_folder(folder: Path) -> tuple[Path, list[Path]]:
    """(the test set, the judge files) in a folder laid out as PandaLM ships it:
    `testset-v1.json` beside `<judge>-testset-v1.json` files."""
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.endswith((".json", ".jsonl"))
    )
    judges = [p for p in files if _JUDGE_FILE.match(_stem(p))]
    tests = [p for p in files if p not in judges]
    if len(tests) != 1:
        raise InputError(
            f"expected one test set (e.g. testset-v1.json) beside the judge files "
            f"(<judge>-testset-v1.json); found {[p.name for p in tests] or 'none'}",
            source=folder,
        )
    return tests[0], judges


def _stem(path: Path) -> str:
    stem = path.name
    for suffix in (".jsonl", ".json"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def winner(counts: Mapping[str, int]) -> tuple[str | None, str]:
    """The strict-plurality label of vote counts over a / b / tie, and why there is none.

    Returns (label, "") when one label has more votes than every other, else
    (None, "no_votes" | "no_majority"). The label may be "tie".
    """
    ranked = Counter(counts).most_common()
    if not ranked or ranked[0][1] == 0:
        return None, "no_votes"
    if len(ranked) > 1 and ranked[1][1] == ranked[0][1]:
        return None, "no_majority"
    return ranked[0][0], ""


def vote_confidence(wins: int, losses: int) -> float:
    """P(the share of annotators preferring the winner exceeds 1/2), Beta(1, 1) prior."""
    return float(beta.sf(0.5, wins + 1, losses + 1))


@stage("pandalm", outputs=("pairs", "annotations"))
def import_pandalm(
    path: Annotated[Source, Input(table=True)],
    *,
    judges: Sequence[str | Path] | Mapping[str, str | Path] = (),
    source: str = "pandalm",
) -> Imported:
    """PandaLM test set (+ optional judge files) -> Imported with `pairs` and `annotations`.

    `judges`: companion files keyed by `idx`; a list names each judge after its file
    ("gpt-3.5-turbo-testset-v1.json" -> "gpt-3.5-turbo"), a mapping gives the names.
    See the module doc for the columns and rules.

    Example: prefdata import pandalm testset-v1.json -o pandalm.parquet
    --judges gpt-3.5-turbo-testset-v1.json

    Args:
        path: the PandaLM test set JSON file (or its folder; from Python also a table of
            its records, with the judge files beside it as files)
        judges: judge verdict files keyed by idx (repeat; each judge is named after its file)
        source: the `source` column of the pairs
    """
    if not isinstance(path, pl.DataFrame) and Path(path).is_dir():
        path, found = _from_folder(Path(path))
        judges = judges or found
    records = json_records(path)
    bad: list[tuple[int, str, Any]] = []
    items: dict[str, _Item] = {}
    by_idx: dict[str, tuple[str, str]] = {}  # idx -> (item_id, order)
    votes: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "records": len(records),
        "human_votes": 0,
        "records_unanimous": 0,
        "records_pooled_with_earlier": 0,
    }
    for row, rec in enumerate(records, start=1):
        if rec.get("idx") is None:
            raise InputError("missing item id", source=where(path), row=row, column="idx")
        idx = str(rec["idx"])
        if idx in by_idx:
            raise field_error(
                f"idx {idx} appears twice; judge files could not be matched", path, row, "idx"
            )
        instruction = text_at(rec.get("instruction"), path, row, "instruction")
        extra = rec.get("input")
        extra = "" if extra is None else text_at(extra, path, row, "input")
        prompt = user(instruction + ("\n\n" + extra if extra.strip() else ""))
        responses: list[str] = []
        non_text: list[str] = []
        for key in ("response1", "response2"):
            if key not in rec:
                raise InputError("missing response", source=where(path), row=row, column=key)
            value = rec[key]
            if not isinstance(value, str):
                # The id needs some text; the JSON form is exact, and the item makes no pair.
                non_text.append(f"{key} is not text (JSON {json.dumps(value)})")
                value = json.dumps(value)
            responses.append(value)
        r1, r2 = responses
        pid = ids.prompt_id(prompt)
        item_id = ids.pair_id(pid, r1, r2)
        a, b = ids.canonical_sides(r1, r2)
        order = "ab" if a == r1 else "ba"
        by_idx[idx] = (item_id, order)
        if item_id in items:
            report["records_pooled_with_earlier"] += 1
        item = items.setdefault(item_id, _Item(prompt, a, b))
        item.non_text.extend(non_text)
        item.rows.append(row)

        annotators = sorted(
            (k for k in rec if _ANNOTATOR.match(k)), key=lambda k: int(k[len("annotator") :])
        )
        if not annotators:
            raise field_error(
                "no annotator1, annotator2, ... vote columns", path, row, "annotator1"
            )
        record_votes: dict[str, str] = {}
        for name in annotators:
            value = rec[name]
            if value is None:
                continue
            verdict = _verdict(value)
            if verdict is None:
                bad.append((row, f"{name}: vote {value!r} is not 0, 1 or 2", rec))
                continue
            label = _side(verdict, order)
            record_votes[name] = label
            item.votes.append(label)
            votes.append(
                {
                    "item_id": item_id,
                    "annotator": name,
                    "annotator_kind": "human",
                    "label": label,
                    "rationale": None,
                    "raw": str(value),
                    "order": order,
                    "record_id": idx,
                }
            )
        report["human_votes"] += len(record_votes)
        if len(record_votes) > 1 and len(set(record_votes.values())) == 1:
            report["records_unanimous"] += 1
        item.records.append(
            {
                "idx": rec["idx"],
                "row": row,
                "order": order,
                "votes": record_votes,
                **{k: rec[k] for k in ("cmp_key", "motivation_app") if k in rec},
            }
        )

    judge_files = (
        dict(judges) if isinstance(judges, Mapping) else {_judge_name(Path(p)): p for p in judges}
    )
    for name, judge_path in judge_files.items():
        n = _judge_votes(name, judge_path, by_idx, votes, bad)
        report[f"judge_votes_{name}"] = n

    pairs: list[dict[str, Any]] = []
    counts = Counter[str]()
    for item_id, item in items.items():
        tally = Counter(item.votes)
        top, why = winner(tally)
        if item.non_text:
            # One rejected row per item: the pair cannot exist, its votes stay in annotations.
            bad.append(
                (
                    item.rows[0],
                    "; ".join(item.non_text) + " (votes kept in annotations)",
                    {"item_id": item_id, "records": item.records},
                )
            )
            continue
        if top is None:
            counts[f"items_{why}"] += 1
            continue
        if top == "tie":
            counts["items_tie_majority"] += 1
            continue
        chosen, rejected = (item.a, item.b) if top == "a" else (item.b, item.a)
        other = "b" if top == "a" else "a"
        pairs.append(
            {
                "prompt": item.prompt,
                "chosen": chosen,
                "rejected": rejected,
                "confidence": vote_confidence(tally[top], tally[other]),
                "margin": None,
                "n_votes": sum(tally.values()),
                "agreement": tally[top] / sum(tally.values()),
                "provenance": {
                    **file_of(path),
                    "chosen_side": top,
                    "votes": {k: tally[k] for k in ("a", "b", "tie")},
                    "rule": "strict plurality of human votes",
                    "records": item.records,
                },
            }
        )
    report.update(
        {
            "items": len(items),
            "items_tie_majority": counts["items_tie_majority"],
            "items_no_majority": counts["items_no_majority"],
            "items_no_votes": counts["items_no_votes"],
        }
    )
    annotations = annotations_table(votes).with_columns(
        pl.Series("record_id", [v["record_id"] for v in votes], dtype=pl.String)
    )
    tables = {"pairs": pairs_table(pairs, source=source), "annotations": annotations}
    return finish(tables, rejected_rows(bad), report, path=path, dataset="pandalm")


def _judge_votes(
    name: str,
    path: str | Path,
    by_idx: Mapping[str, tuple[str, str]],
    votes: list[dict[str, Any]],
    bad: list[tuple[int, str, Any]],
) -> int:
    """Append one annotation per parseable verdict in a judge file; return how many."""
    records = read_json_records(path)
    keys = [k for k in records[0] if k.endswith("_result")]
    if len(keys) != 1:
        raise InputError(
            f"expected one '<judge>_result' column, found {keys or 'none'}",
            source=path,
            row=1,
            column="<judge>_result",
        )
    prefix = keys[0][: -len("_result")]
    n = 0
    for row, rec in enumerate(records, start=1):
        if rec.get("idx") is None:
            raise InputError("missing item id", source=path, row=row, column="idx")
        if keys[0] not in rec:
            raise InputError("missing verdict", source=path, row=row, column=keys[0])
        idx = str(rec["idx"])
        if idx not in by_idx:
            bad.append((row, f"{name}: verdict for idx {idx}, which the test set lacks", rec))
            continue
        verdict = _verdict(rec[keys[0]])
        item_id, order = by_idx[idx]
        reason = rec.get(f"{prefix}_reason")
        votes.append(
            {
                "item_id": item_id,
                "annotator": name,
                "annotator_kind": "llm",
                # Never a guessed label: an unreadable verdict is a row with `error` set.
                "label": None if verdict is None else _side(verdict, order),
                "error": None if verdict else f"unparseable judge verdict {rec[keys[0]]!r}",
                "rationale": reason if isinstance(reason, str) else None,
                "raw": json.dumps(rec, ensure_ascii=False),
                "order": order,
                "record_id": idx,
            }
        )
        n += 1
    return n

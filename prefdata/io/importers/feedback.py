"""Implicit feedback logs from a chat product (CSV or JSONL) -> KTO rows and pairs.

The log format (columns, events, and why each event counts as it does) is documented in
docs/feedback-log-format.md. In short, one row per event:

- `session_id` (required): one conversation / visit.
- `prompt` (required): text, or chat messages (a JSON array of {role, content}).
- `completion` (required): the answer the event is about.
- `event` (required): thumbs_up, thumbs_down, accepted, rejected or regenerated
  (case and surrounding spaces ignored); any other name is an InputError.
- `timestamp`, `user_id` (optional): user ids are kept in pair provenance.

Output:
- kto: per (prompt, completion), positive events (thumbs_up, accepted; weight 1 each)
  against negative events (thumbs_down, rejected: weight 1; regenerated: weight
  `regenerate_weight`, a weak negative on the completion that was regenerated) ->
  prefdata.io.convert.thumbs_to_kto (label = more positive than negative weight, confidence =
  Beta(1, 1) posterior). Completions whose weights tie go to `rejected` ("tied votes").
- pairs: within one session and one prompt, a completion with a positive event against a
  completion with a negative event (pairs_from="thumbs": thumbs_up vs thumbs_down only;
  "all": every positive vs every negative event, so "regenerated A, then accepted B"
  becomes B over A). Votes on the same pair from several sessions are pooled: chosen =
  the side more sessions preferred, n_votes = sessions, agreement = majority share,
  confidence = Beta(1, 1) posterior that chosen is better. A pair whose sessions split
  evenly goes to `rejected`; a completion that got both a positive and a negative event
  in one session is left out of that session's pairs (counted in the report).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl

from prefdata import ids
from prefdata.errors import InputError, RowError, shorten
from prefdata.io.convert import thumbs_to_kto
from prefdata.io.importers.common import (
    REJECTED_SCHEMA,
    Imported,
    Source,
    field_error,
    file_of,
    finish,
    json_lines,
    pairs_table,
    rejected_rows,
    user,
    where,
)
from prefdata.io.importers.trl_rows import to_messages
from prefdata.io.tables import infer_format, iter_json_lines, read_table, read_text
from prefdata.schema import MESSAGES, require_columns
from prefdata.stage import Input, stage

POSITIVE = ("thumbs_up", "accepted")
NEGATIVE = ("thumbs_down", "rejected", "regenerated")
EVENTS = POSITIVE + NEGATIVE
REQUIRED = ("session_id", "prompt", "completion", "event")
_THUMBS = ({"thumbs_up"}, {"thumbs_down"})
_ALL = (set(POSITIVE), set(NEGATIVE))


def parse_prompt(value: Any) -> list[dict[str, str]]:
    """A log's prompt cell as chat messages.

    A list, or a string holding a JSON array of {role, content} objects, is read as
    messages; any other string is the text of one user message. Raises ValueError for a
    missing prompt or a malformed message list.
    """
    if isinstance(value, list):
        return to_messages(value, what="prompt")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError("missing prompt")
    if not isinstance(value, str):
        raise RowError(f"prompt is neither text nor a list of messages (got {value!r})")
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        # Only an array of message objects is messages; "[1, 2] sorted?" is plain text.
        if (
            isinstance(parsed, list)
            and parsed
            and all(isinstance(m, dict) and "role" in m for m in parsed)
        ):
            return to_messages(parsed, what="prompt")
    return user(value)


def _rows(path: Source) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    """(row number, record, why the row is unusable or None): the line for JSONL, the data
    row (first = 1) otherwise."""
    if isinstance(path, pl.DataFrame):
        _require_columns(path.columns, path)
        yield from ((number, row, None) for number, row in json_lines(path))
        return
    if infer_format(path) == "jsonl":
        for line, obj in iter_json_lines(path):
            for column in REQUIRED:
                if column not in obj:
                    raise field_error(
                        "missing field of the feedback log format (see "
                        "docs/feedback-log-format.md)",
                        path,
                        line,
                        column,
                    )
            yield line, obj, None
        return
    if infer_format(path) == "csv":
        yield from _csv_rows(path)
        return
    table = read_table(path)
    _require_columns(table.columns, path)
    for index, row in enumerate(table.iter_rows(named=True)):
        yield index + 1, row, None


def _require_columns(columns: list[str], path: Source) -> None:
    what = "the feedback log format (see docs/feedback-log-format.md) needs"
    require_columns(columns, REQUIRED, what, source=where(path), error=InputError)


def _csv_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    """A CSV / TSV log read cell by cell, every cell as text (type inference would turn a
    completion "007" into 7). A row with more cells than the header would lose the extra
    ones, and one with fewer has lost some: both are set aside with the reason."""
    separator = "\t" if str(path).lower().endswith(".tsv") else ","
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=separator, strict=True)
    row = 0
    try:
        header = next(reader, None)
        if header is None:
            raise InputError("file is empty", source=path)
        _require_columns(header, path)
        for cells in reader:
            if not cells:
                continue
            row += 1
            record: dict[str, Any] = {
                name: (value if value != "" else None)
                for name, value in zip(header, cells, strict=False)
            }
            problem = None
            if len(cells) != len(header):
                record["cells"] = cells
                problem = f"{len(cells)} cells where the header has {len(header)}" + (
                    "; the extra cells would be lost" if len(cells) > len(header) else ""
                )
            yield row, record, problem
    except csv.Error as exc:
        raise InputError(
            f"malformed CSV ({exc}); a quote may be left open", source=path, row=row + 1
        ) from None


def _event(value: Any, path: Source, row: int) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    name = str(value).strip().lower()
    if name not in EVENTS:
        raise field_error(
            f"unknown event {value!r}; expected one of {', '.join(EVENTS)}", path, row, "event"
        )
    return name


def _text(value: Any, name: str = "value") -> str | None:
    """A cell as text (None when blank). An id may be a number (7 -> "7"); a NaN, a
    completion that is a number, or a list / object is a row problem (ValueError)."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        raise RowError(f"{name} is NaN (not a number)")
    if not isinstance(value, str) and (
        name == "completion" or not isinstance(value, int | float) or isinstance(value, bool)
    ):
        raise RowError(f"{name} is not text (got {shorten(value)})")
    text = str(value)
    return text if text.strip() else None


@stage("feedback", outputs=("kto", "pairs"))
def import_feedback(
    path: Annotated[Source, Input(table=True)],
    *,
    regenerate_weight: float = 0.5,
    pairs_from: Literal["thumbs", "all"] = "thumbs",
    source: str = "feedback",
) -> Imported:
    """A feedback log -> Imported with `kto` and `pairs` tables (see the module doc).

    Input columns: session_id, prompt, completion, event; optional timestamp, user_id.
    Output kto: prompt, completion, label, confidence, source (+ prompt_id,
    completion_id). Output pairs: pairs contract, margin null, provenance = {file,
    sessions, users, votes_chosen, votes_rejected, pairs_from}.
    Rows with a missing session_id, prompt, completion or event go to `rejected`.

    Example: prefdata import feedback events.jsonl -o feedback.kto.parquet

    Args:
        path: the feedback event log (JSONL or CSV; see docs/feedback-log-format.md; from
            Python also a table of its events)
        regenerate_weight: how much a regenerate counts against the replaced completion
        pairs_from: thumbs: pairs from thumbs only; all: also from regenerations and edits
        source: the `source` column
    """
    if pairs_from not in ("thumbs", "all"):
        raise InputError(f"pairs_from must be 'thumbs' or 'all', got {pairs_from!r}")
    if not 0 <= regenerate_weight <= 1:
        raise InputError(f"regenerate_weight must lie in 0-1, got {regenerate_weight}")
    weights = {name: 1.0 for name in EVENTS} | {"regenerated": float(regenerate_weight)}
    pair_up, pair_down = _THUMBS if pairs_from == "thumbs" else _ALL

    bad: list[tuple[int, str, Any]] = []
    events: Counter[str] = Counter()
    # (prompt key, completion) -> [positive weight, negative weight]; dicts keep first-seen order.
    votes: dict[tuple[str, str], list[float]] = {}
    prompts: dict[str, list[dict[str, str]]] = {}
    source_rows: dict[tuple[str, str], list[int]] = {}
    # (session, prompt key) -> completion -> event names seen in that session
    sessions: dict[tuple[str, str], dict[str, set[str]]] = {}
    session_users: dict[str, set[str]] = {}
    n_rows = 0
    for row, record, problem in _rows(path):
        n_rows += 1
        if problem is not None:
            bad.append((row, problem, record))
            continue
        event = _event(record.get("event"), path, row)
        try:
            session = _text(record.get("session_id"), "session_id")
            completion = _text(record.get("completion"), "completion")
            user_id = _text(record.get("user_id"), "user_id")
        except ValueError as exc:
            bad.append((row, str(exc), record))
            continue
        missing = [
            name
            for name, value in (
                ("session_id", session),
                ("completion", completion),
                ("event", event),
            )
            if value is None
        ]
        if missing:
            bad.append((row, f"missing {', '.join(missing)}", record))
            continue
        assert session is not None and completion is not None and event is not None
        try:
            prompt = parse_prompt(record.get("prompt"))
        except ValueError as exc:
            bad.append((row, str(exc), record))
            continue
        key = ids.prompt_key(prompt)
        prompts.setdefault(key, prompt)
        events[event] += 1
        tally = votes.setdefault((key, completion), [0.0, 0.0])
        tally[0 if event in POSITIVE else 1] += weights[event]
        source_rows.setdefault((key, completion), []).append(row)
        sessions.setdefault((session, key), {}).setdefault(completion, set()).add(event)
        if user_id is not None:
            session_users.setdefault(session, set()).add(user_id)

    thumbs = pl.DataFrame(
        {
            "prompt": [prompts[k] for k, _ in votes],
            "completion": [c for _, c in votes],
            "up": [v[0] for v in votes.values()],
            "down": [v[1] for v in votes.values()],
        },
        schema={"prompt": MESSAGES, "completion": pl.String, "up": pl.Float64, "down": pl.Float64},
    )
    voted = thumbs_to_kto(thumbs, source=source)
    kto, tied, thumbs_report = voted.tables["kto"], voted.tables["tied"], voted.report

    pair_records, split_even, conflicts = _session_pairs(
        sessions, prompts, session_users, pair_up, pair_down, pairs_from, path
    )

    rejected = [
        rejected_rows(bad),
        _unlocated(
            "tied votes",
            [
                {**r, "rows": source_rows[(ids.prompt_key(r["prompt"]), r["completion"])]}
                for r in tied.to_dicts()
            ],
        ),
        _unlocated("sessions split evenly on the pair", split_even),
    ]
    report: dict[str, Any] = {
        "source_rows": n_rows,
        **{f"events_{name}": events[name] for name in EVENTS},
        "sessions": len({s for s, _ in sessions}),
        "completions": thumbs.height,
        "session_conflicts": conflicts,
        "regenerate_weight": regenerate_weight,
        "pairs_from": pairs_from,
        **{k: v for k, v in thumbs_report.items() if not k.startswith("dropped_")},
    }
    return finish(
        {"kto": kto, "pairs": pairs_table(pair_records, source=source)},
        pl.concat(rejected),
        report,
        path=path,
    )


def _unlocated(reason: str, records: list[dict[str, Any]]) -> pl.DataFrame:
    # Aggregates have no single source row; the rows they came from are in the record.
    return pl.DataFrame(
        {
            "row": [None] * len(records),
            "reason": [reason] * len(records),
            "record": [json.dumps(r, ensure_ascii=False, default=str) for r in records],
        },
        schema=REJECTED_SCHEMA,
    )


def _session_pairs(
    sessions: dict[tuple[str, str], dict[str, set[str]]],
    prompts: dict[str, list[dict[str, str]]],
    session_users: dict[str, set[str]],
    pair_up: set[str],
    pair_down: set[str],
    pairs_from: str,
    path: Source,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(pair records, pairs whose sessions split evenly, completions with conflicting events)."""
    from scipy.stats import beta  # as in convert.thumbs_to_kto: keeps import time low

    # (prompt key, side a, side b) in canonical order -> winner -> sessions that said so
    pooled: dict[tuple[str, str, str], dict[str, list[str]]] = {}
    conflicts = 0
    for (session, key), completions in sessions.items():
        ups, downs = [], []
        for completion, seen in completions.items():
            is_up, is_down = bool(seen & pair_up), bool(seen & pair_down)
            if is_up and is_down:
                conflicts += 1
            elif is_up:
                ups.append(completion)
            elif is_down:
                downs.append(completion)
        for good in ups:
            for worse in downs:
                a, b = ids.canonical_sides(good, worse)
                pooled.setdefault((key, a, b), {}).setdefault(good, []).append(session)

    records: list[dict[str, Any]] = []
    split_even: list[dict[str, Any]] = []
    for (key, a, b), winners in pooled.items():
        for_a, for_b = winners.get(a, []), winners.get(b, [])
        all_sessions = for_a + for_b
        users = sorted({u for s in all_sessions for u in session_users.get(s, set())})
        if len(for_a) == len(for_b):
            split_even.append(
                {"prompt": prompts[key], "a": a, "b": b, "sessions_a": for_a, "sessions_b": for_b}
            )
            continue
        chosen, rejected = (a, b) if len(for_a) > len(for_b) else (b, a)
        wins, losses = max(len(for_a), len(for_b)), min(len(for_a), len(for_b))
        records.append(
            {
                "prompt": prompts[key],
                "chosen": chosen,
                "rejected": rejected,
                "confidence": float(beta.sf(0.5, wins + 1, losses + 1)),
                "agreement": wins / (wins + losses),
                "n_votes": wins + losses,
                "provenance": {
                    **file_of(path),
                    "sessions": sorted(all_sessions),
                    "users": users,
                    "votes_chosen": wins,
                    "votes_rejected": losses,
                    "pairs_from": pairs_from,
                },
            }
        )
    return records, split_even, conflicts

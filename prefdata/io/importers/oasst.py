"""OpenAssistant message trees -> ranked pairs and thumbs-up / thumbs-down KTO rows.

Input: JSONL with one tree per line: `message_tree_id` and `prompt`, the root message.
A message has `message_id`, `text`, `role` (`prompter` / `assistant`), `deleted`,
optional `rank` (0 = best among its siblings), optional `emojis` ({"+1": n, "-1": n, ...},
or the Hub's {"name": [...], "count": [...]}), optional `synthetic` / `model_name`, and
`replies` (a list of messages). From Python also a table: those trees one per row, or the
messages one per row as the Hub's OpenAssistant/oasst1 and oasst2 hold them (`message_id`,
`parent_id`, `message_tree_id` and the message's fields; a root has no parent), assembled
into the same trees (replies in row order; errors name the row of the tree's root).

Output tables:
- `pairs`: sibling assistant replies that carry a `rank` are ranked together (one group
  per parent message) and become pairs with prefdata.io.convert.rankings_to_pairs: mode
  "all" gives every two siblings with different ranks, "best-vs-worst" the best against
  the worst of each group. margin = rank difference; confidence and agreement are null
  (ranks are one aggregated ordering, not votes). provenance adds `message_tree_id`,
  `parent_id`, `message_id_chosen` / `message_id_rejected` and `rank_chosen` /
  `rank_rejected`.
- `kto`: every assistant message with more "+1" than "-1" (label true) or more "-1" than
  "+1" (label false), via prefdata.io.convert.thumbs_to_kto (confidence = Beta posterior of
  the vote counts); messages with equal counts, 0 / 0 included, are counted in the report,
  not labelled. Extra column `provenance` (JSON: message and tree ids, the counts).

The prompt of a message is the conversation from the root down to its parent, as chat
messages (prompter -> user, assistant -> assistant). Only assistant replies become
completions: ranked prompter siblings (alternative user turns) and thumbs on prompter
messages are ignored and counted. Deleted messages are left out by default, with their
whole subtree (a reply to a deleted message has lost its context); both are counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import polars as pl

from prefdata.errors import InputError
from prefdata.io.convert import rankings_to_pairs, thumbs_to_kto
from prefdata.io.importers.common import (
    Imported,
    Source,
    field_error,
    finish,
    json_lines,
    rejected_rows,
    where,
)
from prefdata.schema import MESSAGES
from prefdata.stage import Input, stage

_ROLE = {"prompter": "user", "assistant": "assistant"}


def _count_subtree(message: dict[str, Any]) -> int:
    stack, n = [message], 0
    while stack:
        m = stack.pop()
        n += 1
        stack.extend(r for r in m.get("replies") or [] if isinstance(r, dict))
    return n


def _check(message: Any, at: str, path: Source, line: int) -> dict[str, Any]:
    """The message, or InputError naming the line and the message's place in the tree."""
    if not isinstance(message, dict):
        raise field_error(
            f"expected a message object, got {type(message).__name__}", path, line, at
        )
    for key in ("message_id", "text"):
        if not isinstance(message.get(key), str):
            raise InputError(
                f"expected a string in '{key}'", source=where(path), row=line, column=f"{at}.{key}"
            )
    if message.get("role") not in _ROLE:
        raise field_error(
            f"role must be one of {sorted(_ROLE)}, got {message.get('role')!r}",
            path,
            line,
            f"{at}.role",
        )
    rank = message.get("rank")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int)):
        raise field_error(f"expected an integer rank, got {rank!r}", path, line, f"{at}.rank")
    replies = message.get("replies") or []
    if not isinstance(replies, list):
        raise InputError(
            "expected a list of replies", source=where(path), row=line, column=f"{at}.replies"
        )
    return message


def _trees(path: Source) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or row, tree) of each tree: a file's lines, a table of trees' rows, or the trees
    assembled from a table of messages (the Hub's form; the row of each tree's root)."""
    if not isinstance(path, pl.DataFrame) or "prompt" in path.columns:
        yield from json_lines(path)
        return
    for column in ("message_id", "parent_id", "message_tree_id"):
        if column not in path.columns:
            raise InputError(
                "expected a table of trees (message_tree_id, prompt) or of messages "
                f"(message_id, parent_id, message_tree_id); the table has {path.columns}",
                source=where(path),
                column=column,
            )
    messages = [_message_of(row) for row in path.iter_rows(named=True)]
    by_id = {m["message_id"]: m for m in messages if isinstance(m["message_id"], str)}
    roots: list[tuple[int, dict[str, Any]]] = []
    for row, m in enumerate(messages, start=1):
        parent = m.pop("parent_id")
        if parent is None:
            roots.append((row, m))
        elif parent in by_id:
            by_id[parent]["replies"].append(m)
        else:
            raise field_error(
                f"parent {parent!r} is not a message of the table", path, row, "parent_id"
            )
    for row, root in roots:
        yield row, {"message_tree_id": root.pop("message_tree_id"), "prompt": root}


def _message_of(row: dict[str, Any]) -> dict[str, Any]:
    """A message row of the Hub's table as a tree's message: its rank an int (the Hub holds
    ranks as floats, 0.0 = best), no replies yet."""
    rank = row.get("rank")
    if isinstance(rank, float) and rank.is_integer():
        rank = int(rank)
    return {**row, "rank": rank, "replies": []}


def _votes(message: dict[str, Any], key: str) -> int:
    emojis = message.get("emojis") or {}
    if isinstance(emojis, dict) and isinstance(emojis.get("name"), list):
        # The Hub's form: parallel lists of emoji names and counts.
        emojis = dict(zip(emojis["name"], emojis.get("count") or [], strict=False))
    value = emojis.get(key, 0) if isinstance(emojis, dict) else 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@stage("oasst", outputs=("pairs", "kto"))
def import_oasst(
    path: Annotated[Source, Input(table=True)],
    *,
    mode: Literal["all", "best-vs-worst"] = "all",
    include_deleted: bool = False,
    source: str = "oasst",
) -> Imported:
    """OpenAssistant tree JSONL -> Imported with `pairs` and `kto` (see the module doc).

    Example: prefdata import oasst trees.jsonl -o oasst.parquet --mode best-vs-worst

    Args:
        path: the OpenAssistant message-tree JSONL file (from Python also a table of
            those trees, or of messages as the Hub's oasst1 / oasst2 hold them)
        mode: all ranked pairs, or each group's best against its worst
        include_deleted: keep messages marked deleted
        source: the `source` column
    """
    ranked: list[dict[str, Any]] = []  # rankings_to_pairs input rows
    thumbs: list[dict[str, Any]] = []  # thumbs_to_kto input rows
    bad: list[tuple[int, str, Any]] = []
    # (parent id, text) -> the ranked replies with that text, to name messages in provenance.
    by_text: dict[tuple[str, str], list[dict[str, Any]]] = {}
    report: dict[str, Any] = {
        "trees": 0,
        "messages": 0,
        "assistant_messages": 0,
        "deleted_messages": 0,
        "messages_below_deleted": 0,
        "ranked_groups": 0,
        "ranked_prompter_groups_ignored": 0,
        "unranked_replies_in_ranked_groups": 0,
        "prompter_messages_with_thumbs_ignored": 0,
        "synthetic_messages": 0,
    }
    for line, tree in _trees(path):
        tree_id = tree.get("message_tree_id")
        if not isinstance(tree_id, str):
            raise InputError(
                "expected a string tree id", source=where(path), row=line, column="message_tree_id"
            )
        report["trees"] += 1
        # Depth-first walk without recursion: (message, its place, conversation up to its parent).
        stack: list[tuple[Any, str, list[dict[str, str]], str | None]] = [
            (tree.get("prompt"), "prompt", [], None)
        ]
        while stack:
            raw, at, context, parent_id = stack.pop()
            m = _check(raw, at, path, line)
            if m.get("deleted") and not include_deleted:
                report["deleted_messages"] += 1
                report["messages_below_deleted"] += _count_subtree(m) - 1
                continue
            report["messages"] += 1
            report["synthetic_messages"] += bool(m.get("synthetic"))
            role = _ROLE[m["role"]]
            up, down = _votes(m, "+1"), _votes(m, "-1")
            if role == "assistant":
                report["assistant_messages"] += 1
                if not context:
                    bad.append(
                        (
                            line,
                            "assistant message without a prompt before it",
                            {"message_tree_id": tree_id, "message_id": m["message_id"]},
                        )
                    )
                else:
                    thumbs.append(
                        {
                            "prompt": context,
                            "completion": m["text"],
                            "up": up,
                            "down": down,
                            "provenance": {
                                "message_tree_id": tree_id,
                                "message_id": m["message_id"],
                                "parent_id": parent_id,
                                "+1": up,
                                "-1": down,
                                "synthetic": bool(m.get("synthetic")),
                                **({"model_name": m["model_name"]} if m.get("model_name") else {}),
                            },
                        }
                    )
            elif up or down:
                report["prompter_messages_with_thumbs_ignored"] += 1
            here = [*context, {"role": role, "content": m["text"]}]
            replies = [
                (_check(r, f"{at}.replies[{i}]", path, line), f"{at}.replies[{i}]")
                for i, r in enumerate(m.get("replies") or [])
            ]
            kept = [(r, w) for r, w in replies if include_deleted or not r.get("deleted")]
            ranked_replies = [r for r, _ in kept if r.get("rank") is not None]
            if ranked_replies:
                if any(r["role"] != "assistant" for r in ranked_replies):
                    # Alternative user turns ranked against each other are not completions.
                    report["ranked_prompter_groups_ignored"] += 1
                else:
                    report["ranked_groups"] += 1
                    report["unranked_replies_in_ranked_groups"] += len(kept) - len(ranked_replies)
                    for r in ranked_replies:
                        ranked.append(
                            {
                                "prompt": here,
                                "completion": r["text"],
                                "rank": r["rank"],
                                "group": m["message_id"],
                            }
                        )
                        by_text.setdefault((m["message_id"], r["text"]), []).append(
                            {
                                "message_tree_id": tree_id,
                                "message_id": r["message_id"],
                                "rank": r["rank"],
                            }
                        )
            # Reversed so the walk visits replies in file order.
            for r, w in reversed(replies):
                stack.append((r, w, here, m["message_id"]))

    ranked_pairs = rankings_to_pairs(_ranked_frame(ranked), mode=mode, source=source)
    pairs, rank_report = ranked_pairs.tables["pairs"], ranked_pairs.report
    pairs = pairs.with_columns(
        pl.Series(
            "provenance",
            [
                _pair_provenance(p, c, r, by_text)
                for p, c, r in pairs.select("provenance", "chosen", "rejected").iter_rows()
            ],
            dtype=pl.String,
        )
    )
    voted = thumbs_to_kto(_thumbs_frame(thumbs), source=source)
    kto, tied, thumbs_report = voted.tables["kto"], voted.tables["tied"], voted.report
    # thumbs_to_kto keeps the untied rows in input order: line them up with their ids.
    labelled = [t for t in thumbs if t["up"] != t["down"]]
    if kto.height != len(labelled) or kto["completion"].to_list() != [
        t["completion"] for t in labelled
    ]:
        raise AssertionError("thumbs_to_kto changed the row order")
    kto = kto.with_columns(
        pl.Series(
            "provenance",
            [json.dumps(t["provenance"], ensure_ascii=False) for t in labelled],
            dtype=pl.String,
        )
    )
    no_votes = sum(1 for t in thumbs if t["up"] == t["down"] == 0)
    report.update(
        {
            "mode": mode,
            "include_deleted": include_deleted,
            "ranked_completions": len(ranked),
            "rank_groups_all_tied": rank_report["prompts_all_tied"],
            "thumbs_no_votes": no_votes,
            "thumbs_tied_votes": tied.height - no_votes,
            "kto_desirable": thumbs_report["desirable"],
            "kto_undesirable": thumbs_report["undesirable"],
        }
    )
    tables = {"pairs": pairs, "kto": kto}
    return finish(tables, rejected_rows(bad), report, path=path, dataset="oasst")


def _ranked_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"prompt": MESSAGES, "completion": pl.String, "rank": pl.Int64, "group": pl.String},
    )


def _thumbs_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        [{k: r[k] for k in ("prompt", "completion", "up", "down")} for r in rows],
        schema={"prompt": MESSAGES, "completion": pl.String, "up": pl.Int64, "down": pl.Int64},
    )


def _pair_provenance(
    provenance: str,
    chosen: str,
    rejected: str,
    by_text: dict[tuple[str, str], list[dict[str, Any]]],
) -> str:
    prov = json.loads(provenance)
    parent = prov.pop("group")
    # Negated ranks were only the scores rankings_to_pairs compares; the ranks say it plainly.
    prov.pop("scores_chosen", None)
    prov.pop("scores_rejected", None)
    out: dict[str, Any] = {"message_tree_id": None, "parent_id": parent}
    for side, text in (("chosen", chosen), ("rejected", rejected)):
        found = by_text[(parent, text)]
        out["message_tree_id"] = found[0]["message_tree_id"]
        # Two siblings with the same text are both named rather than one picked.
        out[f"message_id_{side}"] = (
            found[0]["message_id"] if len(found) == 1 else [f["message_id"] for f in found]
        )
        out[f"rank_{side}"] = found[0]["rank"] if len(found) == 1 else [f["rank"] for f in found]
    return json.dumps({**out, **prov}, ensure_ascii=False)

"""Stable ids: the same content gives the same id in every run, on every machine.

Ids are truncated BLAKE2b digests, so they do not depend on Python's per-process hash seed,
on polars' internal hash (not stable across versions) or on the order rows arrive in.

- prompt_id   = digest of the messages, each "role<US>content", joined by <RS>
- completion_id = digest of prompt_id + <US> + completion
- pair_id     = digest of prompt_id + <US> + the two completion digests in sorted order,
  so it does not depend on which side is chosen: a relabel refers to the same item.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl

ID_BYTES = 8  # 16 hex characters: collisions are negligible below ~10^8 items
_US, _RS = "\x1f", "\x1e"


def digest(text: str) -> str:
    """Hex id of one string."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=ID_BYTES).hexdigest()


def digests(texts: Iterable[str | None]) -> list[str | None]:
    """digest() over many strings; a missing value has no id (the contract check flags it)."""
    blake = hashlib.blake2b
    return [
        None if t is None else blake(t.encode("utf-8"), digest_size=ID_BYTES).hexdigest()
        for t in texts
    ]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal values hash equally."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def prompt_key(messages: Sequence[dict[str, Any]]) -> str:
    return _RS.join(f"{m['role']}{_US}{m['content']}" for m in messages)


def prompt_id(messages: Sequence[dict[str, Any]]) -> str:
    """Id of a prompt given as chat messages (only role and content count)."""
    return digest(prompt_key(messages))


def completion_id(pid: str, completion: str) -> str:
    """Id of one completion to one prompt."""
    return digest(pid + _US + completion)


def pair_id(pid: str, first: str, second: str) -> str:
    """Id of an unordered pair of completions to one prompt."""
    d1, d2 = sorted((digest(first), digest(second)))
    return digest(pid + _US + d1 + _RS + d2)


def canonical_sides(first: str, second: str) -> tuple[str, str]:
    """Order two completions as (a, b) by content digest.

    Annotation labels `a` / `b` on a pair always refer to this order, which anyone can
    recompute from the pair alone; the order actually shown to a judge or a human is
    recorded separately in the `order` column (`ab` / `ba`).
    """
    if (digest(first), first) <= (digest(second), second):
        return first, second
    return second, first


def _prompt_key_expr(column: str = "prompt") -> pl.Expr:
    return (
        pl.col(column)
        .list.eval(
            pl.concat_str(
                [pl.element().struct.field("role"), pl.element().struct.field("content")],
                separator=_US,
            )
        )
        .list.join(_RS)
    )


def _digest_column(series: pl.Series) -> pl.Series:
    # Hash each distinct value once: prompts repeat across pairs and candidates.
    uniq = series.unique()
    table = pl.DataFrame(
        {"key": uniq, "id": digests(uniq.to_list())}, schema={"key": pl.String, "id": pl.String}
    )
    return (series.to_frame("key").join(table, on="key", how="left", maintain_order="left"))["id"]


def with_prompt_ids(table: pl.DataFrame) -> pl.DataFrame:
    """Add or replace `prompt_id` from the `prompt` column (chat messages)."""
    keys = table.select(_prompt_key_expr().alias("k"))["k"]
    return table.with_columns(_digest_column(keys).alias("prompt_id"))


def with_pair_ids(table: pl.DataFrame) -> pl.DataFrame:
    """Add `prompt_id` and `pair_id` from `prompt`, `chosen` and `rejected`."""
    table = with_prompt_ids(table)
    # Responses are nearly always distinct, so hash them directly (the unique + join that
    # pays off for repeated prompts would only cost time here).
    dc = pl.Series(digests(table["chosen"].to_list()), dtype=pl.String)
    dr = pl.Series(digests(table["rejected"].to_list()), dtype=pl.String)
    lo = pl.select(pl.min_horizontal(dc, dr)).to_series()
    hi = pl.select(pl.max_horizontal(dc, dr)).to_series()
    keys = table["prompt_id"] + _US + lo + _RS + hi
    return table.with_columns(pl.Series("pair_id", digests(keys.to_list()), dtype=pl.String))


def with_completion_ids(table: pl.DataFrame) -> pl.DataFrame:
    """Add `prompt_id` and `completion_id` from `prompt` and `completion`."""
    table = with_prompt_ids(table)
    keys = table["prompt_id"] + _US + table["completion"]
    return table.with_columns(pl.Series("completion_id", digests(keys.to_list()), dtype=pl.String))

"""The on-disk call cache: one SQLite file, keyed by a hash of (backend, model, messages,
parameters, prompt-template version). A re-run or a resumed run never repeats a paid call.

Only successful responses are stored (an error is retried next time). The API key is never
part of a key or a value. SQLite in WAL mode so several processes can share one cache.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prefdata.llm.base import Client, Request, Response


def default_cache_path() -> Path:
    from prefdata.paths import cache_root

    return cache_root() / "calls.sqlite"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stored: int = 0
    errors: int = 0

    def line(self) -> str:
        total = self.hits + self.misses
        return (
            f"call cache: {self.hits}/{total} answered from cache, {self.misses} new calls "
            f"({self.errors} failed, not cached)"
        )


class CallCache:
    """get / put responses by request key; `enabled=False` (--no-cache) reads and writes nothing."""

    def __init__(self, path: str | Path | None = None, *, enabled: bool = True) -> None:
        self.path = Path(path) if path else default_cache_path()
        self.enabled = enabled
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL keeps the database consistent on a crash and only risks the
            # last commits on power loss; FULL synced every put (~3 ms each).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, backend TEXT, "
                "model TEXT, response TEXT, created REAL DEFAULT (unixepoch('subsec')))"
            )
            self._db.commit()

    def get(self, key: str) -> Response | None:
        if self._db is None:
            return None
        with self._lock:
            row = self._db.execute("SELECT response FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        response = Response.from_json(json.loads(row[0]))
        response.cached = True
        return response

    def put(self, key: str, backend: str, model: str, response: Response) -> None:
        self.put_many([(key, backend, model, response)])

    def put_many(self, items: Sequence[tuple[str, str, str, Response]]) -> None:
        """Store successful responses in one transaction (errors are never cached)."""
        rows = []
        for key, backend, model, response in items:
            if response.error is not None:
                continue
            data = response.to_json()
            data["cached"] = False
            rows.append((key, backend, model, json.dumps(data)))
        if self._db is None or not rows:
            return
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO calls (key, backend, model, response) VALUES (?, ?, ?, ?)",
                rows,
            )
            self._db.commit()
        self.stats.stored += len(rows)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


async def complete_cached(
    client: Client, requests: Sequence[Request], cache: CallCache
) -> list[Response]:
    """Answer `requests` from the cache where possible and send only the rest to `client`.

    Output keeps the input order. New successful answers are stored before returning, so an
    interruption after this call loses nothing; callers process work in chunks so that an
    interruption inside a long run loses at most one chunk.
    """
    keys = [r.cache_key(client.backend, client.model) for r in requests]
    out: list[Response | None] = [cache.get(k) for k in keys]
    todo = [i for i, r in enumerate(out) if r is None]
    cache.stats.hits += len(requests) - len(todo)
    cache.stats.misses += len(todo)
    if todo:
        fresh = await client.complete([requests[i] for i in todo])
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for i, response in zip(todo, fresh, strict=True):
            response.created_at = response.created_at or now
            out[i] = response
            if response.error is not None:
                cache.stats.errors += 1
        cache.put_many(
            [(keys[i], client.backend, client.model, r) for i, r in zip(todo, fresh, strict=True)]
        )
    return [r for r in out if r is not None]

"""The on-disk call cache: one SQLite file, keyed by a hash of (backend, endpoint, model,
sampling parameters, the whole request, the prompt-template version). A re-run, a resumed
run, or another process sharing the file never repeats a paid call.

- Every answer is stored the moment it arrives (`complete_cached` hands the client a callback),
  so a run killed at any point repeats only the calls that were in flight.
- Only valid answers are stored: not an error, and one the caller's `accept` takes (a judge
  reply whose verdict is outside A / B / tie is asked again next time, never replayed).
- Before a call is sent it is claimed in the file (table `claims`: key, owner, lease). Another
  process that wants the same call waits for its answer instead of paying for it again. The
  owner renews its leases while it runs (a heartbeat thread); a claim whose owner died (its
  process is gone on this host, or its lease ran out) is taken over.

The API key is never part of a key or a value. SQLite in WAL mode, so readers never block.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prefdata.llm.base import Client, Request, Response

__all__ = [
    "Accept",
    "CacheStats",
    "CallCache",
    "call_key",
    "complete_cached",
    "default_cache_path",
]

# How long a claim holds without renewal, and how often the owner renews its claims.
LEASE_S = 60.0
# How often a process waiting for another's answer looks again.
POLL_S = 0.2

Accept = Callable[[Response], bool]


def default_cache_path() -> Path:
    from prefdata.paths import cache_root

    return cache_root() / "calls.sqlite"


def call_key(client: Client, request: Request) -> str:
    """The cache key of `request` sent to `client` (its backend, endpoint and model)."""
    return request.cache_key(client.backend, getattr(client, "endpoint", None), client.model)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stored: int = 0
    errors: int = 0
    waited: int = 0  # answers another process was already paying for

    def line(self) -> str:
        total = self.hits + self.misses
        shared = f", {self.waited} from another process" if self.waited else ""
        return (
            f"call cache: {self.hits}/{total} answered from cache{shared}, {self.misses} new "
            f"calls ({self.errors} failed, not cached)"
        )


def _process_gone(host: str, pid: int) -> bool:
    """True when `pid` on this host has ended (or is a zombie awaiting its parent)."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


class CallCache:
    """get / put responses by request key, and claim calls before sending them.
    `enabled=False` (--no-cache) reads, writes and claims nothing."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        enabled: bool = True,
        lease: float = LEASE_S,
        poll: float = POLL_S,
    ) -> None:
        self.path = Path(path) if path else default_cache_path()
        self.enabled = enabled
        self.lease = lease
        self.poll = poll
        self.stats = CacheStats()
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit: every write below is its own short transaction, so no other process
            # waits on this one for longer than one statement.
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, timeout=60, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL keeps the database consistent on a crash (a killed process loses
            # nothing it committed) and only risks the last commits on power loss.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, backend TEXT, "
                "model TEXT, response TEXT, created REAL DEFAULT (unixepoch('subsec')))"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT, "
                "host TEXT, pid INTEGER, expires REAL)"
            )

    # ---- answers -------------------------------------------------------------------------

    def get(self, key: str) -> Response | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, Response]:
        """The stored answers of those `keys` that have one."""
        wanted = list(dict.fromkeys(keys))
        if self._db is None or not wanted:
            return {}
        out: dict[str, Response] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT key, response FROM calls WHERE key IN ({marks})", part
                ).fetchall()
                for key, text in rows:
                    response = Response.from_json(json.loads(text))
                    response.cached = True
                    out[key] = response
        return out

    def put(self, key: str, backend: str, model: str, response: Response) -> None:
        """Store one answer (an error is never stored) and end this process's claim on it,
        in one transaction."""
        if response.error is not None:
            return
        data = response.to_json()
        data["cached"] = False
        if self._db is None:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO calls (key, backend, model, response) "
                    "VALUES (?, ?, ?, ?)",
                    (key, backend, model, json.dumps(data)),
                )
                self._db.execute(
                    "DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self.stats.stored += 1

    # ---- claims --------------------------------------------------------------------------

    def claim(self, keys: Sequence[str]) -> tuple[list[str], list[str], dict[str, Response]]:
        """(claimed now by this process, held by another live process, answered meanwhile).

        One transaction: no two processes claim the same key. A claim whose owner's process
        is gone, or whose lease ran out, is taken over."""
        if self._db is None:
            return list(keys), [], {}
        mine: list[str] = []
        others: list[str] = []
        answered = self.get_many(keys)
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for key in keys:
                    if key in answered:
                        continue
                    row = self._db.execute(
                        "SELECT owner, host, pid, expires FROM claims WHERE key = ?", (key,)
                    ).fetchone()
                    if row is not None and row[0] != self.owner:
                        _, host, pid, expires = row
                        if expires > now and not _process_gone(host, int(pid)):
                            others.append(key)
                            continue
                    self._db.execute(
                        "INSERT OR REPLACE INTO claims (key, owner, host, pid, expires) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (key, self.owner, self.host, os.getpid(), now + self.lease),
                    )
                    mine.append(key)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if mine:
            self._start_heartbeat()
        return mine, others, answered

    def free(self, keys: Iterable[str]) -> list[str]:
        """Those of `keys` that nobody answered and no live process holds any more (their
        call failed, or their owner died): free to claim."""
        if self._db is None:
            return list(keys)
        now = time.time()
        out = []
        with self._lock:
            for key in keys:
                if self._db.execute("SELECT 1 FROM calls WHERE key = ?", (key,)).fetchone():
                    continue
                row = self._db.execute(
                    "SELECT owner, host, pid, expires FROM claims WHERE key = ?", (key,)
                ).fetchone()
                if row is None or row[3] <= now or _process_gone(row[1], int(row[2])):
                    out.append(key)
        return out

    def release(self, keys: Iterable[str]) -> None:
        """End this process's claims on `keys` (calls that failed or were not made)."""
        wanted = list(keys)
        if self._db is None or not wanted:
            return
        with self._lock:
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                self._db.execute(
                    f"DELETE FROM claims WHERE owner = ? AND key IN ({marks})", [self.owner, *part]
                )

    def _renew(self) -> None:
        if self._db is None:
            return
        with self._lock:
            self._db.execute(
                "UPDATE claims SET expires = ? WHERE owner = ?",
                (time.time() + self.lease, self.owner),
            )

    def _start_heartbeat(self) -> None:
        # A thread, not a task: a local model holds the event loop's worker thread for a
        # whole batch, and a claim must not lapse while its call is being answered.
        if self._heartbeat is not None:
            return

        def beat() -> None:
            while not self._stop.wait(self.lease / 3):
                # A failed beat is tried again; a lapsed lease only risks one repeated call.
                with contextlib.suppress(sqlite3.Error):
                    self._renew()

        self._heartbeat = threading.Thread(target=beat, name="call-cache-heartbeat", daemon=True)
        self._heartbeat.start()

    def close(self) -> None:
        self._stop.set()
        if self._db is not None:
            with self._lock:
                self._db.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
                self._db.close()
                self._db = None


async def complete_cached(
    client: Client,
    requests: Sequence[Request],
    cache: CallCache,
    *,
    accept: Accept | None = None,
) -> list[Response]:
    """Answer `requests` from the cache where possible and send only the rest to `client`.

    Output keeps the input order. Each new answer is stored as it arrives when it is valid
    (`response.ok` and `accept(response)`); the same request twice in `requests` is sent
    once. A request another process has claimed is not sent: this waits for that answer (and
    sends it itself only if the other process dies or fails it).
    """
    keys = [call_key(client, r) for r in requests]
    indices: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        indices.setdefault(key, []).append(i)
    out: list[Response | None] = [None] * len(requests)

    def fill(key: str, response: Response) -> None:
        for i in indices[key]:
            out[i] = response

    valid = accept or (lambda _r: True)
    for key, hit in cache.get_many(indices).items():
        fill(key, hit)
    pending = [k for k in indices if out[indices[k][0]] is None]
    sent = 0
    waited = 0
    while pending:
        mine, others, answered = cache.claim(pending)
        for key, hit in answered.items():
            fill(key, hit)
        if mine:
            sent += len(mine)
            now = datetime.now(UTC).isoformat(timespec="seconds")

            stored: set[int] = set()

            def store(
                i: int,
                response: Response,
                mine: list[str] = mine,
                now: str = now,
                stored: set[int] = stored,
            ) -> None:
                response.created_at = response.created_at or now
                stored.add(i)
                if response.ok and valid(response):
                    cache.put(mine[i], client.backend, client.model, response)

            try:
                fresh = await client.complete([requests[indices[k][0]] for k in mine], store)
                for i, response in enumerate(fresh):
                    if i not in stored:  # a client that does not report answers as they come
                        store(i, response)
            finally:
                # Calls that failed, were invalid or never came back are free for anyone.
                cache.release(mine)
            for key, response in zip(mine, fresh, strict=True):
                fill(key, response)
                if not response.ok:
                    cache.stats.errors += 1
        pending = []
        waiting = set(others)
        while waiting:
            await asyncio.sleep(cache.poll)
            for key, hit in cache.get_many(waiting).items():
                fill(key, hit)
                waiting.discard(key)
                waited += len(indices[key])
            # Claims that ended without an answer (the call failed, or its process died) go
            # back to be claimed (in one transaction, so only one waiting process takes each).
            free = cache.free(sorted(waiting))
            pending += free
            waiting -= set(free)
    cache.stats.misses += sent
    cache.stats.hits += len(requests) - sent
    cache.stats.waited += waited
    return [r if r is not None else Response(error="internal: no answer") for r in out]

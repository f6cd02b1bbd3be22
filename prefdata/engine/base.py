"""The engine base class (what `map` promises every caller) and the local engine: the bottom
of prefdata.engine, which the Ray engine builds on (see the package doc).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from prefdata.errors import PrefdataError

__all__ = ["Engine", "LocalEngine"]

T = TypeVar("T")
R = TypeVar("R")


class Engine(ABC):
    """What runs a function over work items (see the module doc). An engine only says how a
    list of items runs (`_run`); `map` holds what every engine promises its callers."""

    name: str
    workers: int
    gpus: int  # GPUs the engine's workers can use (model work gets one each)
    # The folder for shards, reachable from every worker (None: no shards).
    scratch: Path | None = None
    # True when items run in other processes (so work is worth cutting into shards).
    distributed: bool = False

    def map(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        *,
        model: bool = False,
        gpus: float = 0.0,
        what: str = "",
    ) -> list[R]:
        """`fn(item)` for every item, in the items' order (see the module doc); `what` names
        the items in errors."""
        if not items:
            return []
        out = self._run(fn, list(items), model=model, gpus=gpus)
        if len(out) != len(items):
            # Work lost on the way (a node gone): the stage cannot be assembled.
            raise PrefdataError(
                f"{self.name} engine: {len(items)} {what or 'items'} sent, {len(out)} back"
            )
        return out

    @abstractmethod
    def _run(self, fn: Callable[[T], R], items: list[T], *, model: bool, gpus: float) -> list[R]:
        """The results of `fn` on `items` (at least one), in order."""


class LocalEngine(Engine):
    """Everything in this process, one item after another (the default engine)."""

    name = "local"
    workers = 1
    gpus = 0  # a local model picks its own device

    def _run(self, fn: Callable[[T], R], items: list[T], *, model: bool, gpus: float) -> list[R]:
        return [fn(item) for item in items]

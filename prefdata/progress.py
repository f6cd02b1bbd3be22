"""Long work shows progress and runs from sync code: one progress bar and one sync runner
shared by generation, judging, critique and embedding."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")


@contextlib.contextmanager
def progress_bar(
    total: int, enabled: bool, label: str, *, transient: bool = False
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields `advance(n)`. Disabled: a no-op advance."""
    if not enabled:
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=transient,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also from inside a running loop (a notebook): then in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as err:
            box["error"] = err

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def synced(afn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The sync version of an async operation: same signature and docstring, run with
    `run_sync`. Named like `afn` without its leading "a" (`judge = synced(ajudge)`), so an
    operation has one body and no second list of keyword arguments to keep in step."""

    @functools.wraps(afn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(afn(*args, **kwargs))

    name = afn.__name__.removeprefix("a")
    wrapper.__name__ = name
    wrapper.__qualname__ = afn.__qualname__.removesuffix(afn.__name__) + name
    return wrapper

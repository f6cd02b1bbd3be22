"""Pieces every CLI module shares: the error wrapper, report printing, choice checking."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from prefdata.errors import OptionError, PrefdataError, one_line, shorten

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def error_line(exc: BaseException) -> str:
    """The one line a user reads for `exc`: file, row and column first (see errors.py).

    A library option shows as its flag (`drop_issues` -> `--drop-issues`); an OSError keeps
    the path and the system's reason and drops the Python class name.
    """
    if isinstance(exc, OptionError) and exc.option:
        return one_line(f"--{exc.option.replace('_', '-')}: {exc.detail}")
    if isinstance(exc, OSError):
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        reason = exc.strerror or str(exc)
        return one_line(f"{where}: {reason}" if where else reason)
    return one_line(str(exc))


def print_error(exc: BaseException) -> None:
    """One red line on stderr. The text is escaped: a path or a value holding `[/]` or
    `[red]` is printed as written, never read as rich markup."""
    console.print(f"[bold red]error:[/] {escape(error_line(exc))}", highlight=False, soft_wrap=True)


def friendly_errors(func: F) -> F:
    """Turn prefdata's own errors, and the system's file errors (a folder that cannot be
    written, a full disk), into one red line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (PrefdataError, OSError) as exc:
            print_error(exc)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def pick(option: str, value: str, choices: tuple[str, ...]) -> Any:
    """Check a choice option; returned as Any so it fits the library's Literal types."""
    if value not in choices:
        raise OptionError(
            f"must be one of {', '.join(choices)}; got {shorten(value)}",
            option=option.replace("-", "_"),
        )
    return value


def print_report(report: dict[str, Any]) -> None:
    """A stage's report as JSON on stdout (messages go to stderr, so stdout stays parseable)."""
    print(json.dumps(report, indent=1, default=str))

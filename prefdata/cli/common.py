"""Pieces every CLI module shares: the error wrapper, report printing, choice checking."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from prefdata.errors import PrefdataError

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Turn prefdata's own errors into one red line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PrefdataError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def pick(option: str, value: str, choices: tuple[str, ...]) -> Any:
    """Check a choice option; returned as Any so it fits the library's Literal types."""
    if value not in choices:
        raise PrefdataError(f"--{option} must be one of {', '.join(choices)}; got '{value}'")
    return value


def print_report(report: dict[str, Any]) -> None:
    """A stage's report as JSON on stdout (messages go to stderr, so stdout stays parseable)."""
    print(json.dumps(report, indent=1, default=str))

"""Errors users see. Each one names where the bad input is: file, row (or line) and column.

Every error a user can cause is a `PrefdataError`; the CLI prints it as one line and exits
with code 2 (prefdata.cli.common.friendly_errors). The ones about values also subclass
`ValueError`, so code written against the library's earlier bare ValueErrors keeps working.

- `InputError`: bad input data (a file that cannot be read, a malformed line, a wrong value).
- `ContractError`: a table that does not meet its column contract (prefdata.schema).
- `RowError`: why one row of an import is set aside (the reason in the rejected table).
- `OptionError`: an option value, or a combination of options, that cannot work (an
  InputError: the user's input is the options too).
- `OutputError`: an output that cannot be written, or that would overwrite an input.
- `MissingExtraError`: an optional dependency is not installed.
- `RecipeError` (an InputError) and `TrainingError`: training recipes and runs (prefdata.train).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A message is one line a person reads: a value pasted into it (a 20 MB label, a whole
# transcript) is cut to this many characters, with the length said.
VALUE_CHARS = 120
MESSAGE_CHARS = 2000


def shorten(value: object, limit: int = VALUE_CHARS) -> str:
    """`repr(value)` cut to `limit` characters, saying how long it was, for error messages."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def one_line(text: str, limit: int = MESSAGE_CHARS) -> str:
    """`text` as one line (newlines shown as spaces) of at most `limit` characters."""
    flat = " ".join(part.strip() for part in text.splitlines() if part.strip())
    if len(flat) <= limit:
        return flat
    return f"{flat[:limit]}... ({len(flat):,} characters)"


class PrefdataError(Exception):
    """Base class: the CLI prints these as one clear message, without a traceback."""


class InputError(PrefdataError, ValueError):
    """Bad input data: a file that cannot be read, a malformed line, a wrong column."""

    def __init__(
        self,
        message: str,
        *,
        source: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.source = str(source) if source is not None else None
        self.row = row
        self.column = column
        self.detail = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.source:
            where.append(self.source)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column:
            where.append(f"column '{self.column}'")
        prefix = ", ".join(where)
        return one_line(f"{prefix}: {self.detail}" if prefix else self.detail)

    def locate(self, source: str | Path) -> None:
        """Name the file this error is about, when the code that raised it did not know it."""
        if self.source is None:
            self.source = str(source)
            self.args = (self._format(),)

    def __str__(self) -> str:
        return self._format()


class ContractError(InputError):
    """A table does not meet its column contract (see prefdata.schema)."""


class RowError(PrefdataError, ValueError):
    """Why one source row cannot become data. Importers catch it and set the row aside with
    this text as its reason (the rest of the file is imported); a file-level problem is an
    InputError instead."""


class OptionError(InputError):
    """An option value, or a combination of options, that cannot work.

    `option` is the library's parameter name (`drop_issues`); the CLI shows it as its flag.
    An InputError (and so a ValueError), so callers that catch bad input catch it too.
    """

    def __init__(self, message: str, *, option: str | None = None) -> None:
        self.option = option
        super().__init__(message)

    def _format(self) -> str:
        option = getattr(self, "option", None)
        return one_line(f"{option}: {self.detail}" if option else self.detail)


class OutputError(PrefdataError):
    """An output that cannot be written (unwritable folder, full disk) or would overwrite an
    input or another output of the same command."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else None
        super().__init__(one_line(f"{path}: {message}" if path is not None else message))


class MissingExtraError(PrefdataError):
    """An optional dependency is missing; the message carries the exact install command."""


class RecipeError(InputError):
    """A training recipe or override that cannot work: unknown key, wrong type, conflicting
    settings (prefdata.train)."""


class TrainingError(PrefdataError):
    """Training could not run: the model does not fit, the reference is not frozen, the
    machine lacks what a launch config asks for (prefdata.train)."""


@contextmanager
def located(source: str | Path | None) -> Iterator[None]:
    """Errors about input data raised inside the block name `source` when they name no file.

    A stage function sees a table, not the file it came from; the caller that read the file
    wraps the call so the user still learns which file is wrong.
    """
    try:
        yield
    except InputError as exc:
        if source is not None:
            exc.locate(source)
        raise

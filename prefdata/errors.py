"""Errors users see. Each one names where the bad input is: file, row (or line) and column."""

from __future__ import annotations

from pathlib import Path


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
        return f"{prefix}: {self.detail}" if prefix else self.detail


class ContractError(InputError):
    """A table does not meet its column contract (see prefdata.schema)."""


class MissingExtraError(PrefdataError):
    """An optional dependency is missing; the message carries the exact install command."""


class RecipeError(InputError):
    """A training recipe or override that cannot work: unknown key, wrong type, conflicting
    settings (prefdata.train)."""


class TrainingError(PrefdataError):
    """Training could not run: the model does not fit, the reference is not frozen, the
    machine lacks what a launch config asks for (prefdata.train)."""

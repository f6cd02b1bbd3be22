"""What a stage kind is: its options, the tables it reads and writes, and the function that
runs it. The kinds themselves live in the `stages_*` modules; `stages.REGISTRY` lists them.

A stage function takes a `StageRun` (its options, its resolved input files, its own output
folder, the run's call cache) and returns `(outputs, report)`: slot name -> the file (or
folder) it wrote, and a JSON-able report. It calls the same library function as the CLI
command of the same name; it holds no logic of its own beyond reading and writing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import polars as pl

from prefdata.engine import Engine
from prefdata.errors import OptionError
from prefdata.llm.cache import CallCache

StageOutputs = tuple[dict[str, Path], dict[str, Any]]

TYPES = ("any", "str", "int", "float", "bool", "strs", "dict", "path", "recipe", "name_or_path")
"""Option types: `strs` is a list of strings (a single string becomes a one-item list);
`path` a file resolved against the pipeline file's folder; `recipe` a path or a mapping;
`name_or_path` one of the option's built-in `names` (e.g. a rubric), or else a `path`."""


@dataclass(frozen=True)
class Opt:
    """One option of a stage kind: default, type, allowed values, and whether it is required."""

    default: Any = None
    type: str = "any"
    choices: tuple[str, ...] = ()
    required: bool = False
    # name_or_path: the built-in names; any other value is a file.
    names: tuple[str, ...] = ()

    def names_file(self, value: Any) -> TypeGuard[str]:
        """Whether `value` of this option is a file: resolved against the pipeline file's
        folder, checked to exist, and hashed as an input of the stage."""
        if not isinstance(value, str):
            return False
        return self.type in ("path", "recipe") or (
            self.type == "name_or_path" and value not in self.names
        )

    def check(self, value: Any) -> Any:
        """The value, coerced where safe (int -> float, str -> [str]); ValueError says why not."""
        if value is None:
            if self.required:
                raise OptionError("missing, and this option is required")
            return None
        kind = self.type
        if kind == "bool" and not isinstance(value, bool):
            raise OptionError(f"must be true or false, got {value!r}")
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise OptionError(f"must be a whole number, got {value!r}")
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise OptionError(f"must be a number, got {value!r}")
            value = float(value)
        if kind in ("str", "path", "name_or_path") and not isinstance(value, str):
            raise OptionError(f"must be text, got {value!r}")
        if kind == "strs":
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise OptionError(f"must be a list of text values, got {value!r}")
        if kind == "dict" and not isinstance(value, Mapping):
            raise OptionError(f"must be a mapping (key: value lines), got {value!r}")
        if kind == "recipe" and not isinstance(value, str | Mapping):
            raise OptionError(f"must be a recipe file or an inline mapping, got {value!r}")
        if self.choices:
            values = value if isinstance(value, list) else [value]
            for v in values:
                if v not in self.choices:
                    raise OptionError(f"must be one of {', '.join(self.choices)}; got {v!r}")
        return value


@dataclass(frozen=True)
class Slot:
    """An input: the first of `names` found wins (each name searched through all earlier
    stages, latest first, before the next name is tried). `auto=False`: only when the stage's
    `inputs:` names it."""

    names: tuple[str, ...]
    required: bool = True
    auto: bool = True

    @property
    def key(self) -> str:
        """The name the stage's `inputs:` mapping uses for this slot."""
        return self.names[0]


@dataclass
class StageRun:
    """Everything a stage function gets. `engine`: where row-wise work runs (None: in this
    process; see prefdata.engine)."""

    name: str
    kind: str
    dir: Path
    options: dict[str, Any]
    inputs: dict[str, Path]
    cache: CallCache
    progress: bool
    engine: Engine | None = None

    def out(self, filename: str) -> Path:
        """A path in the stage's own output folder."""
        return self.dir / filename

    def table(self, slot: str, contract: str | None = None) -> pl.DataFrame:
        """The input table of `slot`, checked against `contract` when given."""
        from prefdata.io.tables import read_table

        path = self.inputs[slot]
        table = read_table(path)
        if contract is not None:
            from prefdata.schema import validate

            table = validate(table, contract, source=path)
        return table

    def maybe(self, slot: str, contract: str | None = None) -> pl.DataFrame | None:
        """The input table of an optional slot, or None when nothing fills it."""
        return self.table(slot, contract) if slot in self.inputs else None


@dataclass(frozen=True)
class StageKind:
    """A stage kind: `run` does the work; the rest is what the pipeline file may say."""

    kind: str
    run: Callable[[StageRun], StageOutputs]
    help: str
    options: dict[str, Opt]
    inputs: tuple[Slot, ...] | Callable[[Mapping[str, Any]], tuple[Slot, ...]] = ()
    outputs: tuple[str, ...] = ()
    # Reads state outside the run folder (an Argilla server): runs every time.
    external: bool = False
    # Extra checks of the options at parse time (raise ValueError naming the key).
    check: Callable[[Mapping[str, Any]], None] | None = None

    def slots(self, options: Mapping[str, Any]) -> tuple[Slot, ...]:
        """The input slots, which for some kinds depend on an option (train's method)."""
        return self.inputs(options) if callable(self.inputs) else self.inputs

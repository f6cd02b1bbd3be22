"""What a stage is: a plain library function whose signature is the only declaration of its
options. The CLI command (`prefdata.cli.derive`) and the pipeline stage kind
(`prefdata.pipeline.derive`) are both derived from it, so the three can never drift apart.

    @stage("filter", outputs=("pairs", "kto"))
    def filter_pairs(
        pairs: Annotated[pl.DataFrame, Table("pairs")],
        *,
        issues: Annotated[pl.DataFrame | None, Table("issues")] = None,
        min_confidence: float | None = None,
        ties: Literal["drop", "kto"] = "drop",
    ) -> StageResult:
        \"\"\"Keep the pairs that pass ...

        Args:
            issues: the issues table from `prefdata audit`
            min_confidence: drop pairs whose confidence is below this
            ties: what to do with tied pairs
        \"\"\"

- Data comes first, options are keyword-only, typed, with defaults; each option's help is its
  line in the docstring's `Args:` section (a test checks that every option has one).
- A table parameter is marked `Table(contracts...)`. The decorator's wrapper accepts a polars
  DataFrame or LazyFrame, a pandas DataFrame, a `datasets.Dataset` (or a `DatasetDict` with
  the split named as `dict[split]`), a pyarrow Table, or a path, converts it to polars and
  checks its column contract once, here, so no stage function converts or checks on its own.
- `Input(names...)` marks a file or folder input the stage reads itself (a model folder, a JSON
  document): a file on the command line, a slot filled by an earlier stage in a pipeline.
  `Input(table=True)`: a table the stage reads itself from a path (to stream a large file, or
  to keep a format's own line numbers); a table users hold is converted by the wrapper as
  for `Table`, so the function gets a path or a polars DataFrame.
- `Output(name)` marks a path the stage writes itself (an export file, a report folder, a model
  folder): `-o` on the command line, `name` in the stage's folder in a pipeline (`Output(".")`:
  the stage's folder itself).
- `File(names=..., mapping=...)` marks an option whose value names a file (a rubric, a
  constitution, a recipe): a pipeline resolves it against the pipeline file and hashes it.
- `Resource(name)` marks what the caller provides rather than the user: the call cache, the
  progress switch, the engine the row-wise work runs on (prefdata.engine; `--engine` on the
  command line, `prefdata run --engine` in a pipeline).
- A frozen dataclass parameter (e.g. `JudgeOptions`) is a group of options: its fields
  become options of their own, documented in the dataclass's `Args:` section.
- Every stage returns one `StageResult` (tables, rejected, report); `prefdata.io.results`
  writes it the one way.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import polars as pl

from prefdata.errors import PrefdataError
from prefdata.stage_call import converting

__all__ = [
    "File",
    "Input",
    "Output",
    "Param",
    "Resource",
    "StageResult",
    "StageSpec",
    "Table",
    "spec_of",
    "stage",
]

F = TypeVar("F", bound=Callable[..., Any])


# ---- markers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A table input. `contracts`: the column contracts it may meet, tried in order (none: any
    table). `auto`: in a pipeline, filled from the latest earlier stage that made a table of
    this name; `auto=False` only when the stage's `inputs:` names it. `rows=False`: check the
    columns and their types only, for a stage that itself counts and skips bad rows (e.g.
    votes without a label); a tuple of contracts: check the rows of those only (a judge
    checks pairs whole but counts the blank completions of candidates itself). `check=False`:
    the contracts only name the tables that can fill it; the stage checks the (looser)
    columns it needs itself. `needs`: for a stage that reads only part of a contract, the
    required columns it needs, one tuple for all contracts or a mapping per contract; the
    contract's other columns are checked when present (prefdata.schema.conform), so a NaN or
    a number where text belongs is refused as everywhere else."""

    contracts: tuple[str, ...] = ()
    auto: bool = True
    rows: bool | tuple[str, ...] = True
    check: bool = True
    # (contract, needed columns) pairs; a contract not named needs all its required columns.
    needs: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __init__(
        self,
        *contracts: str,
        auto: bool = True,
        rows: bool | tuple[str, ...] = True,
        check: bool = True,
        needs: tuple[str, ...] | Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        object.__setattr__(self, "contracts", contracts)
        object.__setattr__(self, "auto", auto)
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "check", check)
        if needs is None:
            pairs: tuple[tuple[str, tuple[str, ...]], ...] = ()
        elif isinstance(needs, Mapping):
            pairs = tuple((c, tuple(n)) for c, n in needs.items())
        else:
            pairs = tuple((c, tuple(needs)) for c in contracts)
        object.__setattr__(self, "needs", pairs)

    def needs_for(self, contract: str) -> tuple[str, ...] | None:
        """The required columns a table meeting `contract` must have here (None: all)."""
        return dict(self.needs).get(contract)


@dataclass(frozen=True)
class Input:
    """A file or folder input that is not a table the stage reads as one (a model folder, a
    JSON document): the stage gets its path. `names`: the outputs of earlier pipeline stages
    that can fill it; `auto` as for Table. `table=True`: it is a table the stage reads
    itself when given a path (streaming a large file, or a format's own line numbers); an
    in-memory table (polars, pandas, `datasets`, pyarrow) is converted to a polars DataFrame
    by the wrapper instead, with no contract check (the stage checks what it reads)."""

    names: tuple[str, ...] = ()
    auto: bool = True
    table: bool = False

    def __init__(self, *names: str, auto: bool = True, table: bool = False) -> None:
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "auto", auto)
        object.__setattr__(self, "table", table)


@dataclass(frozen=True)
class Output:
    """A path the stage writes itself; `name` is its file name inside a pipeline stage's
    folder (e.g. "report" for a folder, "model" for a model folder)."""

    name: str


@dataclass(frozen=True)
class File:
    """An option whose value names a file (resolved against a pipeline file's folder and hashed
    as an input there). `names`: built-in values that are not files (e.g. rubric names);
    `mapping`: an inline mapping is allowed instead of a file (a recipe)."""

    names: tuple[str, ...] = ()
    mapping: bool = False


@dataclass(frozen=True)
class Resource:
    """Provided by the caller, not chosen by the user: "cache" (a CallCache), "progress",
    "engine" (a prefdata.engine.Engine, or None for this process)."""

    name: str


# ---- the result ----------------------------------------------------------------------------


@dataclass
class StageResult:
    """What every stage returns.

    tables: output name -> table; the first one is the main product (`-o` on the command line).
    rejected: rows that did not become data, each with its `reason` (never dropped silently).
    report: JSON-able figures; the CLI prints it, a pipeline keeps it in the stage's manifest.
    documents: other JSON outputs by name (e.g. the settings a filter ran with, or an
    agreement report that is the stage's product).
    files: paths the stage wrote itself (through an `Output` parameter), by output name.
    warnings: lines for the user (the CLI prints them after the report), not data.
    failure: set when the stage ran but failed (e.g. too many of its model calls failed): its
    outputs are still written (nothing is lost), then the command exits 1 with this line and
    a pipeline stops after this stage.
    """

    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    rejected: pl.DataFrame | None = None
    report: dict[str, Any] = field(default_factory=dict)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    failure: str | None = None

    @property
    def main(self) -> pl.DataFrame:
        """The main product: the first table."""
        if not self.tables:
            raise PrefdataError("this stage made no table")
        return next(iter(self.tables.values()))


# ---- what a signature declares -----------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One parameter of a stage, as the CLI and the pipeline see it.

    role: "table", "input" (a path), "output", "resource" or "option". `annotation` is the
    resolved type with `None` removed (`optional` says whether None is allowed); `choices`
    come from a Literal; `group` names the dataclass parameter an option belongs to (its
    fields are flattened).
    """

    name: str
    role: Literal["table", "input", "output", "resource", "option"]
    annotation: Any
    default: Any
    help: str
    optional: bool = False
    positional: bool = False
    choices: tuple[Any, ...] = ()
    table: Table | None = None
    input: Input | None = None
    output: Output | None = None
    resource: Resource | None = None
    file: File | None = None
    group: str | None = None

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    @property
    def value_type(self) -> str:
        """bool, int, float, str, path, strs (a list of text), dict, or any."""
        return _value_type(self.annotation)


@dataclass(frozen=True)
class StageSpec:
    """A stage: its name (the CLI command and pipeline kind), the function, its parameters in
    signature order, the outputs it can make (tables and documents; the first is the main
    product, which `-o` names on the command line), and its help."""

    name: str
    func: Callable[..., StageResult]
    params: tuple[Param, ...]
    outputs: tuple[str, ...]
    summary: str
    description: str
    # Reads or writes state outside its files (an Argilla server): a pipeline runs it every
    # time instead of skipping it when its inputs are unchanged.
    external: bool = False

    def by_role(self, role: str) -> list[Param]:
        return [p for p in self.params if p.role == role]

    @property
    def options(self) -> list[Param]:
        return self.by_role("option")

    @property
    def tables(self) -> list[Param]:
        return self.by_role("table")

    @property
    def inputs(self) -> list[Param]:
        """Table and path inputs: the parameters that are files, in signature order."""
        return [p for p in self.params if p.role in ("table", "input")]

    def groups(self) -> dict[str, type]:
        """Dataclass parameter name -> its class (options flattened from it)."""
        hints = _hints(self.func)
        out: dict[str, type] = {}
        for p in self.options:
            if p.group is not None and p.group not in out:
                out[p.group] = _strip_optional(hints[p.group])[0]
        return out

    def call(self, values: Mapping[str, Any]) -> StageResult:
        """Call the stage with flat values (a dataclass group's fields gathered back into the
        dataclass). Unset values take the signature's defaults."""
        kwargs: dict[str, Any] = {}
        grouped: dict[str, dict[str, Any]] = {}
        for p in self.params:
            if p.name not in values:
                continue
            value = values[p.name]
            if isinstance(value, list) and get_origin(p.annotation) is tuple:
                value = tuple(value)  # YAML and the CLI give lists; a frozen field wants a tuple
            if p.group is not None:
                grouped.setdefault(p.group, {})[p.name] = value
            else:
                kwargs[p.name] = value
        for group, cls in self.groups().items():
            kwargs[group] = cls(**grouped.get(group, {}))
        result = self.func(**kwargs)
        if not isinstance(result, StageResult):
            raise TypeError(f"stage {self.name} returned {type(result).__name__}, not StageResult")
        return result


# ---- docstrings ----------------------------------------------------------------------------

_SECTION = re.compile(r"^\s*(Args|Arguments|Attributes|Returns|Raises|Example|Examples):\s*$")
_ITEM = re.compile(r"^(\s*)(\*{0,2}[A-Za-z_][A-Za-z0-9_]*)\s*(?:\([^)]*\))?:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, str, dict[str, str]]:
    """(summary, description, arg help) from a Google-style docstring.

    summary: the first paragraph joined into one line; description: the text before the
    first section; arg help: name -> its `Args:` (or `Attributes:`) entry, continuation lines
    joined.
    """
    text = inspect.cleandoc(doc or "")
    lines = text.splitlines()
    body: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    indent: int | None = None
    for line in lines:
        head = _SECTION.match(line)
        if head:
            section, current, indent = head.group(1), None, None
            continue
        if section is None:
            body.append(line)
            continue
        if section not in ("Args", "Arguments", "Attributes"):
            continue
        item = _ITEM.match(line)
        if item and (indent is None or len(item.group(1)) <= indent):
            indent = len(item.group(1))
            current = item.group(2)
            args[current] = item.group(3).strip()
        elif current is not None and line.strip():
            args[current] = f"{args[current]} {line.strip()}".strip()
    description = "\n".join(body).strip()
    summary = " ".join(description.split("\n\n", 1)[0].split())
    return summary, description, args


# ---- deriving the parameters ---------------------------------------------------------------


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    target = inspect.unwrap(func)
    try:
        return typing.get_type_hints(target, include_extras=True)
    except NameError as exc:  # a type imported only under TYPE_CHECKING
        raise TypeError(
            f"{target.__module__}.{target.__qualname__}: every annotation of a stage must be "
            f"importable at run time ({exc})"
        ) from None


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None was allowed)."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        if len(args) == 1:
            return args[0], optional
        return typing.Union[tuple(args)], optional  # noqa: UP007 - rebuilt from parts
    return annotation, False


def _value_type(annotation: Any) -> str:
    origin = get_origin(annotation)
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if annotation is str or origin is Literal:
        return "str"
    if annotation is Path:
        return "path"
    if origin in (list, tuple, Sequence) and all(
        a in (str, Ellipsis) or get_origin(a) is Literal or _text_union(a)
        for a in get_args(annotation)
    ):
        return "strs"
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        return "dict"
    if get_origin(annotation) in (typing.Union, types.UnionType):
        if str in get_args(annotation) and Path not in get_args(annotation):
            return "str"  # text on the command line; Python may pass an object instead
        kinds = {_value_type(a) for a in get_args(annotation)}
        if "strs" in kinds:
            return "strs"  # a list of text on the command line (Python may pass a mapping)
        if kinds <= {"str", "path"}:
            return "str"
        if kinds <= {"int", "float"}:
            return "float"
        if kinds <= {"str", "strs"}:
            return "strs"
    return "any"


def _text_union(annotation: Any) -> bool:
    """`str | SomeObject`: text on the command line, an object allowed from Python (a model
    name or a ready client)."""
    args = get_args(annotation) if get_origin(annotation) in (typing.Union, types.UnionType) else ()
    return str in args


def _choices(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    if get_origin(annotation) in (list, tuple, Sequence):
        for arg in get_args(annotation):
            if get_origin(arg) is Literal:
                return get_args(arg)
    return ()


def _markers(annotation: Any) -> tuple[Any, list[Any]]:
    """(the annotated type, its metadata) for Annotated[...], else (annotation, [])."""
    if get_origin(annotation) is Annotated:
        args = get_args(annotation)
        return args[0], list(args[1:])
    base, optional = _strip_optional(annotation)
    if optional and get_origin(base) is Annotated:
        args = get_args(base)
        return args[0] | None, list(args[1:])
    return annotation, []


def _param(
    name: str,
    annotation: Any,
    default: Any,
    help_text: str,
    *,
    positional: bool = False,
    group: str | None = None,
) -> Param:
    inner, metadata = _markers(annotation)
    bare, optional = _strip_optional(inner)
    table = next((m for m in metadata if isinstance(m, Table)), None)
    path_input = next((m for m in metadata if isinstance(m, Input)), None)
    output = next((m for m in metadata if isinstance(m, Output)), None)
    resource = next((m for m in metadata if isinstance(m, Resource)), None)
    file = next((m for m in metadata if isinstance(m, File)), None)
    role: Literal["table", "input", "output", "resource", "option"] = "option"
    for marker, name_of_role in (
        (table, "table"),
        (path_input, "input"),
        (output, "output"),
        (resource, "resource"),
    ):
        if marker is not None:
            role = name_of_role  # type: ignore[assignment]
            break
    return Param(
        name=name,
        role=role,
        annotation=bare,
        default=default,
        help=help_text,
        optional=optional or default is None,
        positional=positional,
        choices=_choices(bare),
        table=table,
        input=path_input,
        output=output,
        resource=resource,
        file=file,
        group=group,
    )


def derive(
    func: Callable[..., Any], *, name: str, outputs: Sequence[str] = (), external: bool = False
) -> StageSpec:
    """The StageSpec of a stage function (see the module docstring for the rules)."""
    target = inspect.unwrap(func)
    hints = _hints(target)
    summary, description, arg_help = parse_docstring(target.__doc__)
    params: list[Param] = []
    for p in inspect.signature(target).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"stage {name}: *args / **kwargs cannot become options")
        annotation = hints.get(p.name, Any)
        bare, _ = _strip_optional(_markers(annotation)[0])
        if dataclasses.is_dataclass(bare) and isinstance(bare, type):
            params.extend(_group_params(p.name, bare))
            continue
        params.append(
            _param(
                p.name,
                annotation,
                p.default,
                arg_help.get(p.name, ""),
                positional=p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD),
            )
        )
    names = [p.name for p in params]
    clash = {n for n in names if names.count(n) > 1}
    if clash:
        raise TypeError(f"stage {name}: option name(s) {sorted(clash)} appear twice")
    return StageSpec(name, func, tuple(params), tuple(outputs), summary, description, external)


def _group_params(group: str, cls: type) -> list[Param]:
    hints = typing.get_type_hints(cls, include_extras=True)
    _, _, arg_help = parse_docstring(cls.__doc__)
    out = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = inspect.Parameter.empty
        out.append(_param(f.name, hints[f.name], default, arg_help.get(f.name, ""), group=group))
    return out


# ---- the decorator -------------------------------------------------------------------------

_SPEC_ATTR = "__prefdata_stage__"


def stage(name: str, *, outputs: Sequence[str] = (), external: bool = False) -> Callable[[F], F]:
    """Declare a library function as a stage (see the module docstring).

    `outputs`: the names of the tables and documents it can return, main product first (a
    pipeline wires later stages to them by name). `external`: it reads or writes state
    outside its files (a server), so a pipeline runs it every time. The wrapper converts and
    checks every table argument and every choice; everything else is passed through unchanged.
    """

    def wrap(func: F) -> F:
        call = converting(func, lambda: spec_of(call))
        setattr(call, _SPEC_ATTR, (name, tuple(outputs), external))
        return call  # type: ignore[return-value]

    return wrap


@functools.cache
def _cached_spec(func: Callable[..., Any]) -> StageSpec:
    declared = getattr(func, _SPEC_ATTR, None)
    if declared is None:
        raise TypeError(f"{getattr(func, '__qualname__', func)!r} is not declared with @stage")
    name, outputs, external = declared
    return derive(func, name=name, outputs=outputs, external=external)


def spec_of(func: Callable[..., Any]) -> StageSpec:
    """The StageSpec of a function declared with @stage (derived once, then cached)."""
    return _cached_spec(func)

"""CLI commands derived from stage signatures (prefdata.stage): no option is declared twice.

For a stage's parameters, in signature order:
- a positional table, input or path -> an argument (a file);
- a keyword table or input -> `--name FILE`;
- an `Output` -> `-o/--out` (the stage writes it itself);
- the `cache` resource -> `--cache FILE` and `--no-cache`; `progress` -> `--progress/--no-progress`;
- the `engine` resource (and the model-call stages of prefdata.engine.warm) -> `--engine`
  and `--address`: where the row-wise work runs (prefdata.engine);
- an option -> `--name` of its type: bool `--x/--no-x`, a list repeats (`--judge a --judge b`;
  a list option named in the plural also answers to the singular), a mapping takes
  `--name key=value` (the value read as JSON when it parses), a choice is checked by the stage
  and named in the help.
A stage that returns tables gets `-o/--out` (without it the report is printed and nothing is
written), and `--rejected FILE` when it can set rows aside. Every output is checked against the
inputs before anything is written (prefdata.io.results).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from prefdata.cli.common import console, friendly_errors, print_report
from prefdata.errors import PrefdataError, located
from prefdata.stage import Param, StageResult, StageSpec

OUT = "out"
REJECTED = "rejected_out"
NO_CACHE = "no_cache"
ENGINE = "engine"
ADDRESS = "address"
# CLI-only parameters added by the deriver, never passed to the stage.
_CLI_ONLY = (OUT, REJECTED, NO_CACHE)


def flag(name: str) -> str:
    """The long option of a parameter: min_confidence -> --min-confidence."""
    return "--" + name.replace("_", "-")


def _decls(p: Param) -> list[str]:
    decls = [flag(p.name)]
    if p.value_type == "strs" and p.name.endswith("s") and len(p.name) > 3:
        decls.insert(0, flag(p.name[:-1]))
    return decls


def _help(p: Param) -> str:
    text = p.help
    if p.choices:
        text = f"{text} (one of: {' | '.join(str(c) for c in p.choices)})".strip()
    return text


_CLICK_TYPES: dict[str, Any] = {"bool": bool, "int": int, "float": float, "str": str, "path": Path}


def _option_param(p: Param) -> inspect.Parameter:
    """The typer parameter of one stage option."""
    kind = p.value_type
    default = None if p.required else p.default
    help_text = _help(p)
    if kind == "bool":
        info = typer.Option(
            f"{flag(p.name)}/--no-{p.name.replace('_', '-')}",
            help=help_text,
            show_default=not p.optional,
        )
        if p.optional:  # three states: on, off, or "let the stage decide" (None)
            return _kw(p.name, Annotated[bool | None, info], None)
        return _kw(p.name, Annotated[bool, info], p.default)
    if kind in ("strs", "dict"):
        # Repeatable; None means "not given", so the stage's own default applies.
        info = typer.Option(*_decls(p), help=help_text, show_default=False)
        return _kw(p.name, Annotated[list[str] | None, info], None)
    if kind in _CLICK_TYPES:
        click_type = _CLICK_TYPES[kind]
        show = default is not None
        info = typer.Option(flag(p.name), help=help_text, show_default=show)
        if p.required:
            return _kw(p.name, Annotated[click_type, info], inspect.Parameter.empty)
        return _kw(p.name, Annotated[click_type | None, info], default)
    raise TypeError(f"option {p.name}: type {p.annotation!r} has no command-line form")


def _kw(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
    )


def _file_param(p: Param) -> inspect.Parameter:
    """A table or a source file: an argument when positional, else `--name FILE`."""
    help_text = p.help or (f"{' or '.join(p.table.contracts)} table" if p.table else "file")
    if p.positional:
        info: Any = typer.Argument(help=help_text, show_default=False, metavar=p.name.upper())
        default = None if not p.required else inspect.Parameter.empty
        annotation: Any = Annotated[Path | None, info] if default is None else Annotated[Path, info]
        return inspect.Parameter(
            p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation, default=default
        )
    info = typer.Option(flag(p.name), help=help_text, show_default=False)
    if p.required:
        return _kw(p.name, Annotated[Path, info], inspect.Parameter.empty)
    return _kw(p.name, Annotated[Path | None, info], None)


def command_params(spec: StageSpec) -> list[inspect.Parameter]:
    """The typer parameters of a stage's command, positional arguments first."""
    positional: list[inspect.Parameter] = []
    keyword: list[inspect.Parameter] = []
    outputs_tables = bool(spec.outputs) and not spec.by_role("output")
    for p in spec.params:
        if p.role in ("table", "input") or (
            p.role == "option" and p.value_type == "path" and p.positional
        ):
            (positional if p.positional else keyword).append(_file_param(p))
        elif p.role == "output":
            info = typer.Option("-o", "--out", help=p.help or "output", show_default=False)
            required = p.required
            annotation = Annotated[Path, info] if required else Annotated[Path | None, info]
            keyword.insert(
                0, _kw(p.name, annotation, inspect.Parameter.empty if required else None)
            )
        elif p.role == "resource" and p.resource is not None:
            keyword.extend(_resource_params(p))
        elif p.role == "option":
            keyword.append(_option_param(p))
    if spec.name in _sharded_stages() and not _engine_resource(spec):
        keyword.extend(_engine_params())
    if outputs_tables:
        out_help = (
            f"the {spec.outputs[0]} output (others go beside it); omit to only print the report"
        )
        keyword.insert(
            0, _kw(OUT, Annotated[Path | None, typer.Option("-o", "--out", help=out_help)], None)
        )
        if "rejected" in spec.outputs:
            info = typer.Option(
                "--rejected", help="the rows set aside, with their reason (default: beside -o)"
            )
            keyword.insert(1, _kw(REJECTED, Annotated[Path | None, info], None))
    return positional + keyword


def _sharded_stages() -> tuple[str, ...]:
    from prefdata.engine.warm import WARMED

    return tuple(WARMED)


def _engine_resource(spec: StageSpec) -> Param | None:
    """The stage's `Resource("engine")` parameter, if it takes an engine itself."""
    return next(
        (p for p in spec.params if p.resource is not None and p.resource.name == "engine"), None
    )


def _engine_params() -> list[inspect.Parameter]:
    """--engine / --address of a stage that runs row-wise work on an engine."""
    engine = typer.Option(
        help="local (this process) | ray (the row-wise work on a Ray cluster's workers, the "
        "same outputs; docs/scale.md; pip install 'prefdata\\[ray]')"
    )
    address = typer.Option(help="--engine ray: a running cluster (default: start a local one)")
    return [
        _kw(ENGINE, Annotated[str, engine], "local"),
        _kw(ADDRESS, Annotated[str | None, address], None),
    ]


def _call(spec: StageSpec, values: dict[str, Any], given: dict[str, Any]) -> StageResult:
    """The stage once, in this process or (--engine ray) with its work on a cluster: a stage
    taking an engine gets it; a model-call stage has its calls made by the workers."""
    name = given.get(ENGINE) or "local"
    takes = _engine_resource(spec)
    if name == "local" and given.get(ADDRESS) is None:
        return spec.call(values)
    from prefdata.engine import open_engine
    from prefdata.engine.warm import run_sharded

    if takes is not None:
        with open_engine(name, address=given.get(ADDRESS)) as engine:
            return spec.call({**values, takes.name: engine})
    from prefdata.llm.cache import CallCache

    cache = next((v for v in values.values() if isinstance(v, CallCache)), None)
    if cache is None or not cache.enabled:
        raise PrefdataError(
            f"--engine {name} needs the call cache: its workers' answers reach the result "
            "through it (drop --no-cache)"
        )
    with open_engine(name, address=given.get(ADDRESS)) as engine:
        sharded = run_sharded(
            engine,
            spec.name,
            spec.func,
            values,
            cache=cache.path,
            scratch=engine.scratch or cache.path.parent,
        )
    return sharded[0] if sharded is not None else spec.call(values)


def _resource_params(p: Param) -> list[inspect.Parameter]:
    assert p.resource is not None
    if p.resource.name == "cache":
        cache_help = "call cache file (default: the prefdata cache folder)"
        return [
            _kw(p.name, Annotated[Path | None, typer.Option("--cache", help=cache_help)], None),
            _kw(
                NO_CACHE,
                Annotated[
                    bool, typer.Option("--no-cache", help="neither read nor write the cache")
                ],
                False,
            ),
        ]
    if p.resource.name == "progress":
        info = typer.Option("--progress/--no-progress", help="show progress bars")
        return [_kw(p.name, Annotated[bool, info], True)]
    if p.resource.name == "engine":
        return _engine_params()
    raise TypeError(f"resource {p.resource.name} has no command-line form")


def _parse_mapping(name: str, items: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PrefdataError(f"{flag(name)} expects key=value, got '{item}'")
        try:
            parsed[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.strip().replace("-", "_")] = value
    return parsed


def stage_values(
    spec: StageSpec, given: dict[str, Any]
) -> tuple[dict[str, Any], list[Path], list[Any]]:
    """(the stage's keyword values, the input files, what to close afterwards) from the parsed
    command line. Options the user did not give are left out, so the signature's defaults
    apply."""
    from prefdata.llm.cache import CallCache

    values: dict[str, Any] = {}
    inputs: list[Path] = []
    opened: list[Any] = []
    for p in spec.params:
        value = given.get(p.name)
        if p.role in ("table", "input") or (
            p.role == "option" and p.value_type == "path" and p.positional
        ):
            if value is not None:
                inputs.append(Path(value))
                values[p.name] = value
        elif p.role == "resource" and p.resource is not None and p.resource.name == "cache":
            values[p.name] = CallCache(value, enabled=not given.get(NO_CACHE, False))
            opened.append(values[p.name])
        elif p.role == "resource" and p.resource is not None and p.resource.name == "engine":
            continue  # --engine names it; _call opens it around the stage
        elif p.role in ("resource", "output"):
            if value is not None:
                values[p.name] = value
        elif value is not None:
            values[p.name] = _parse_mapping(p.name, value) if p.value_type == "dict" else value
    return values, inputs, opened


def make_command(spec: StageSpec, *, help_text: str | None = None) -> Callable[..., None]:
    """The typer callback of a stage: parse, call the stage once, write its result."""
    from prefdata.io.results import check_outputs, write_result

    params = command_params(spec)

    def run(**given: Any) -> None:
        values, inputs, opened = stage_values(spec, given)
        outputs = {p.name: Path(values[p.name]) for p in spec.by_role("output") if p.name in values}
        # -o and --rejected are known before the stage runs: a path that would overwrite an
        # input, or cannot be written, is refused before a long run, not after it (the
        # companions beside -o are checked again by write_result).
        planned = {**outputs, **{k: Path(given[k]) for k in (OUT, REJECTED) if given.get(k)}}
        try:
            check_outputs(planned, inputs)
            # An error the stage raises about its data names the file when there is one.
            with located(inputs[0] if len(inputs) == 1 else None):
                result = _call(spec, values, given)
        finally:
            for resource in opened:
                resource.close()
        written = write_result(
            result,
            given.get(OUT),
            order=spec.outputs,
            inputs=inputs,
            rejected_to=given.get(REJECTED),
        )
        report = dict(result.report)
        written.update({name: str(path) for name, path in result.files.items()})
        if written:
            report["written"] = written
        elif outputs:
            report["written"] = {k: str(v) for k, v in outputs.items()}
        print_report(report)
        for warning in result.warnings:
            console.print(f"[bold yellow]warning:[/] {escape(str(warning))}", highlight=False)
        if OUT in given and given[OUT] is None and spec.outputs and not outputs:
            console.print("no -o given: the report above is all; nothing was written", style="dim")
        if result.failure is not None:
            console.print(f"[bold red]failed:[/] {escape(result.failure)}", highlight=False)
            raise typer.Exit(1)

    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    run.__doc__ = help_text or spec.description
    run.__name__ = spec.name.replace("-", "_")
    return friendly_errors(run)


def command_help(description: str) -> str:
    """A docstring's description as --help text: each prose paragraph joined into one line
    (typer's rich help keeps single line breaks after the first paragraph, which left wrapped
    docstring lines ragged); a paragraph of list items keeps one item per line."""
    paragraphs = []
    for paragraph in description.split("\n\n"):
        lines = paragraph.splitlines()
        if any(line.lstrip().startswith(("- ", "* ")) for line in lines):
            items: list[str] = []
            for line in lines:
                if line.lstrip().startswith(("- ", "* ")) or not items:
                    items.append(line.strip())
                else:
                    items[-1] = f"{items[-1]} {line.strip()}"
            paragraphs.append("\b" + "\n".join(items))  # \b: typer keeps these breaks
        else:
            paragraphs.append(" ".join(paragraph.split()))
    return "\n\n".join(p for p in paragraphs if p.strip())


def add_stage_command(
    app: typer.Typer, spec: StageSpec, *, name: str | None = None, cls: Any = None
) -> None:
    """Register a stage's derived command on `app` (`cls`: a TyperCommand subclass)."""
    app.command(name or spec.name, help=command_help(spec.description), cls=cls)(make_command(spec))

"""The `prefdata` command line: parse, call one library function, write outputs. No logic.

Every command prints a one-line error naming the file, row and column on bad input
(exit code 2), never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from prefdata.cli.annotate import annotate_app
from prefdata.cli.common import console, friendly_errors
from prefdata.cli.derive import add_stage_command
from prefdata.cli.importing import import_app
from prefdata.cli.run import register as register_run_command
from prefdata.cli.train import register as register_train_commands
from prefdata.errors import PrefdataError
from prefdata.pipeline.catalog import CLI_GROUPS, STAGES, cli_path, stage_spec

app = typer.Typer(
    help="Clean preference data and train on it. Every stage reads and writes a table file "
    "(Parquet by default, JSONL on request).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
MODES = ("all", "best-vs-worst")

app.add_typer(annotate_app, name="annotate")
app.add_typer(import_app(), name="import")
# Groups of derived commands; a group that also has hand-written commands exists already.
_WRITTEN_GROUPS = {"annotate": annotate_app}
for _group, (_help, _names) in CLI_GROUPS.items():
    _sub = _WRITTEN_GROUPS.get(_group) or typer.Typer(
        help=_help, no_args_is_help=True, add_completion=False
    )
    for _name in _names:
        add_stage_command(_sub, stage_spec(_name), name=cli_path(_name)[-1])
    if _group not in _WRITTEN_GROUPS:
        app.add_typer(_sub, name=_group)
for _name in STAGES:
    if len(cli_path(_name)) == 1:
        add_stage_command(app, stage_spec(_name))
register_train_commands(app)
register_run_command(app)


def _show_version(value: bool) -> None:
    if value:
        from prefdata import __version__

        print(f"prefdata {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="show the version"),
    ] = False,
) -> None:
    """Clean preference data and train on it."""


# Files larger than this go through prefdata.io.stream (bounded memory) unless told otherwise.
STREAM_BYTES = 256 * 1024 * 1024


def _use_stream(path: Path, stream: bool | None) -> bool:
    if stream is not None:
        return stream
    return path.is_file() and path.stat().st_size > STREAM_BYTES and not path.name.endswith(".gz")


def _parse_options(options: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in options:
        if "=" not in item:
            raise PrefdataError(f"--option expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        try:
            parsed[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.replace("-", "_")] = value
    return parsed


def _split_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _write_json(report: dict[str, Any], path: Path) -> None:
    from prefdata.io.tables import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1, default=str))


@app.command()
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option("-o", "--out", help="output folder")] = Path("demo-out"),
    quick: Annotated[
        bool, typer.Option("--quick", help="every stage on 6 prompts, about a minute (CI)")
    ] = False,
    judge: Annotated[
        list[str] | None,
        typer.Option(help="swap the judge: backend:model, e.g. anthropic:claude-sonnet-4-6"),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="the judge's server (vLLM, llama.cpp: openai:MODEL)")
    ] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """The whole job offline on the embedded SmolLM2: 40 prompts -> 4 answers each -> local
    judge in both orders -> agreement and consensus -> audit -> filter -> TRL / KTO exports
    -> HTML QA report -> LoRA DPO -> held-out accuracy. It is the pipeline
    prefdata/examples/pipelines/demo.yaml; a re-run skips what is done.

    Example: prefdata demo -o demo-out
    """
    from prefdata.cli.run import quiet_cpu_threads
    from prefdata.io.tables import check_outputs
    from prefdata.pipeline.demo import run_demo, summary_lines
    from prefdata.pipeline.runner import print_summary

    check_outputs([out])
    quiet_cpu_threads()
    try:
        result, figures = run_demo(
            out,
            quick=quick,
            judges=judge or (),
            base_url=base_url,
            progress=progress,
            console=console,
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    print_summary(result, console)
    print("\n".join(summary_lines(figures)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

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
from prefdata.cli.common import console, friendly_errors, print_report
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
for _group, (_help, _names) in CLI_GROUPS.items():
    _sub = typer.Typer(help=_help, no_args_is_help=True, add_completion=False)
    for _name in _names:
        add_stage_command(_sub, stage_spec(_name))
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
def report(
    data: Annotated[
        list[Path], typer.Argument(help="pairs or kto table; give BEFORE AFTER to compare")
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="output folder")],
    annotations: Annotated[Path | None, typer.Option(help="votes on the pairs")] = None,
    issues: Annotated[Path | None, typer.Option(help="issues from prefdata audit")] = None,
    rejected: Annotated[Path | None, typer.Option(help="rows dropped by prefdata filter")] = None,
    sample: Annotated[Path | None, typer.Option(help="reviewed audit sample")] = None,
    tokenizer: Annotated[str, typer.Option(help="smollm2 | tokenizer folder | none")] = "smollm2",
    max_length: Annotated[int, typer.Option(help="truncation length to report against")] = 1024,
    token_rows: Annotated[int, typer.Option(help="tokenize at most this many rows")] = 20000,
    license: Annotated[str | None, typer.Option(help="license for the dataset card")] = None,
    title: Annotated[str | None, typer.Option()] = None,
    filter_settings: Annotated[
        Path | None, typer.Option(help="the OUT-stem.filter.json that prefdata filter wrote")
    ] = None,
) -> None:
    """A self-contained HTML QA report (plots inline, no network), report.json with every
    figure, and a Hugging Face dataset card (README.md).

    Example: prefdata report clean.parquet --annotations votes.parquet --issues issues.parquet
    -o qa/   (or: prefdata report before.parquet after.parquet -o qa/)
    """
    from prefdata.io.tables import check_outputs, read_text
    from prefdata.report import build_report

    if len(data) not in (1, 2):
        raise PrefdataError("give one data set, or two (BEFORE AFTER)")
    check_outputs(
        [out / name for name in ("report.html", "report.json", "README.md")],
        inputs=[*data, annotations, issues, rejected, sample, filter_settings],
    )
    result = build_report(
        data[0],
        compare=data[1] if len(data) == 2 else None,
        annotations=annotations,
        issues=issues,
        rejected=rejected,
        sample=sample,
        tokenizer=None if tokenizer == "none" else tokenizer,
        max_length=max_length,
        token_rows=token_rows,
        license=license,
        title=title,
        filter_settings=json.loads(read_text(filter_settings)) if filter_settings else None,
        out_dir=out,
    )
    print_report(
        {
            "written": [str(out / f) for f in ("report.html", "report.json", "README.md")],
            "sections": [k for k in result.get("data", result) if k not in ("name", "contract")],
        }
    )


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

"""`prefdata run PIPELINE.yaml -o RUN_DIR`: parse, call prefdata.pipeline, print. No logic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from prefdata.cli.common import console, friendly_errors, print_report


def quiet_cpu_threads() -> None:
    """Let torch's OpenMP threads sleep instead of spin while they wait (unless the user
    chose). On a shared CPU a spinning thread burns the core its partner needs: 40 SmolLM2
    answers on 2 cores under load 4.5 took 125 s with 2 spinning threads, 45 s with 2
    sleeping ones, 34 s with 1. Takes effect only before torch is first imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def register(app: typer.Typer) -> None:
    """Add the `run` command to the main app."""

    @app.command("run")
    @friendly_errors
    def run_cmd(
        pipeline: Annotated[Path, typer.Argument(help="pipeline file (YAML)")],
        out: Annotated[Path, typer.Option("-o", "--out", help="run folder")],
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", help="change one option: stage.key=value (YAML value)"),
        ] = None,
        profile: Annotated[
            str | None, typer.Option(help="a named set of changes from the file's profiles:")
        ] = None,
        check: Annotated[
            bool, typer.Option("--check", help="only check the file and list its stages")
        ] = False,
        progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
        engine: Annotated[
            str,
            typer.Option(
                help="where row-wise work runs: local (this process) | ray (Ray Data over "
                "Parquet shards; pip install 'prefdata\\[ray]'); same outputs either way"
            ),
        ] = "local",
        address: Annotated[
            str | None,
            typer.Option(
                help="--engine ray: a running cluster (auto, HOST:6379, ray://HOST:10001); "
                "default: start a local one"
            ),
        ] = None,
    ) -> None:
        """Run a pipeline of stages into one folder: each stage writes RUN_DIR/<stage>/;
        a re-run skips stages whose inputs and options did not change, and a run cut off
        half way resumes (model calls come from RUN_DIR/calls.sqlite). Stage kinds: import,
        generate, judge, critique, annotate, agree, consensus, audit, filter, split,
        export, report, train, eval. Examples ship in prefdata/examples/pipelines/.

        Example: prefdata run pipeline.yaml -o runs/one --set judge.judges=[local:smollm2]
        """
        from prefdata.io.tables import check_outputs
        from prefdata.pipeline import load_pipeline, run_pipeline
        from prefdata.pipeline.runner import print_summary

        check_outputs([out], inputs=[pipeline])
        quiet_cpu_threads()
        spec = load_pipeline(pipeline, sets=set_ or (), profile=profile)
        if check:
            print_report(
                {
                    "pipeline": str(spec.path),
                    "stages": [
                        {"stage": s.name, "kind": s.kind, "options": s.options} for s in spec.stages
                    ],
                }
            )
            return
        try:
            result = run_pipeline(
                spec, out, progress=progress, console=console, engine=engine, address=address
            )
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        print_summary(result, console)
        print_report(result.as_dict())

"""Pipelines: a YAML file of stages (import or generate -> judge / critique / annotate ->
agree / consensus -> audit -> filter -> split -> export -> report -> train -> eval), run
into one folder with skip-if-unchanged, resume from the call cache, and a summary.

    from prefdata.pipeline import load_pipeline, run_pipeline
    result = run_pipeline(load_pipeline("pipeline.yaml"), "runs/one")

CLI: `prefdata run PIPELINE.yaml -o RUN_DIR`. Modules: `spec` (parse and check the file),
`stages` (the stage kinds; each calls the library function of the CLI command of the same
name), `runner` (skip / resume / progress / summary), `demo` (the offline demo); what a finished
stage read and wrote is `prefdata.manifest` (also used by `train rlhf`).
"""

from prefdata.pipeline.runner import RunResult, StageFailed, StageOutcome, run_pipeline
from prefdata.pipeline.spec import Pipeline, StageSpec, load_pipeline

__all__ = [
    "Pipeline",
    "RunResult",
    "StageFailed",
    "StageOutcome",
    "StageSpec",
    "load_pipeline",
    "run_pipeline",
]

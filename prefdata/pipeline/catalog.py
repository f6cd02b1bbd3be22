"""The one list of stages: name -> the library function that is the stage (declared with
`prefdata.stage.stage`). The CLI makes a command of each and the pipeline a stage kind of
each, both derived from the function's signature; a parity test holds them equal.

Add a stage by writing the function with `@stage(...)` and adding its line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from prefdata.stage import StageSpec, spec_of

# name -> (module, function); imported when first asked for.
STAGES: dict[str, tuple[str, str]] = {
    "generate": ("prefdata.llm.generate", "generate"),
    "synthetic-pairs": ("prefdata.label.synthetic", "synthetic_pairs"),
    "judge": ("prefdata.label.judge", "judge"),
    "judge-eval": ("prefdata.quality.judge_eval", "judge_eval"),
    "critique": ("prefdata.label.constitution", "critique"),
    "validate": ("prefdata.io.describe", "validate_file"),
    "info": ("prefdata.io.describe", "info"),
    "agree": ("prefdata.quality.agreement", "agreement"),
    "consensus": ("prefdata.quality.consensus", "consensus_pairs"),
    "audit": ("prefdata.quality.audit", "audit"),
    "audit-rate": ("prefdata.quality.sample", "mislabel_rate"),
    "filter": ("prefdata.quality.filter", "filter_pairs"),
    "split": ("prefdata.io.split", "split_heldout"),
    "eval": ("prefdata.train.evaluation", "evaluate"),
    "bias": ("prefdata.quality.bias", "bias_stats"),
    "export": ("prefdata.io.exporting", "export_files"),
    "pairs-to-kto": ("prefdata.io.convert", "pairs_to_kto"),
    "ratings-to-pairs": ("prefdata.io.convert", "ratings_to_pairs"),
    "rankings-to-pairs": ("prefdata.io.convert", "rankings_to_pairs"),
    "thumbs-to-kto": ("prefdata.io.convert", "thumbs_to_kto"),
    "rule-label": ("prefdata.label.programmatic", "rule_label"),
    "report": ("prefdata.report.build", "build_report"),
    "annotate-push": ("prefdata.annotate.push", "push"),
    "annotate-pull": ("prefdata.annotate.pull", "pull"),
}

# Stages the command line groups under one command (`prefdata convert pairs-to-kto ...`):
# group -> (its help, its stages). A pipeline names them by the stage name alone. Within
# its group a stage's command drops the group's name in front (annotate-push -> `prefdata
# annotate push`); the annotate group also holds the hand-written control of the local
# Argilla server (prefdata.cli.annotate).
CLI_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "convert": (
        "Convert between tables: pairs -> KTO, ratings / rankings -> pairs, thumbs -> KTO.",
        ("pairs-to-kto", "ratings-to-pairs", "rankings-to-pairs", "thumbs-to-kto"),
    ),
    "annotate": (
        "Human annotation in Argilla: push pairs, pull the responses.",
        ("annotate-push", "annotate-pull"),
    ),
}


# A stage that sits inside a hand-built command group (`prefdata train eval`: the train group
# is one command per training method, see prefdata.cli.train, which registers it).
CLI_PATHS: dict[str, tuple[str, ...]] = {"eval": ("train", "eval")}


def cli_path(name: str) -> tuple[str, ...]:
    """The command words of stage `name` on the command line."""
    if name in CLI_PATHS:
        return CLI_PATHS[name]
    for group, (_, names) in CLI_GROUPS.items():
        if name in names:
            return (group, name.removeprefix(f"{group}-"))
    return (name,)


def stage_function(name: str) -> Callable[..., Any]:
    """The library function of stage `name`."""
    module, attr = STAGES[name]
    found: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return found


def stage_spec(name: str) -> StageSpec:
    """The derived spec of stage `name` (options, inputs, outputs, help)."""
    return spec_of(stage_function(name))

"""The labelling stage written by hand: annotate (human labels in Argilla: push, then pull).
The judge, judge-eval and critique stages are derived from their library functions
(prefdata.pipeline.catalog)."""

from __future__ import annotations

from prefdata.errors import PrefdataError
from prefdata.pipeline.kinds import Opt, Slot, StageKind, StageOutputs, StageRun

# ---- annotate ----------------------------------------------------------------------------


class WaitingForAnnotations(PrefdataError):
    """Records were pushed but too few responses have come back yet: annotate, then re-run."""


def run_annotate(stage: StageRun) -> StageOutputs:
    """`prefdata annotate push` then `pull`: the human responses as the annotations table.

    Runs on every pipeline run (people answer between runs); pushing again updates the
    records in place. With fewer than `min_responses` responses it stops the pipeline with
    a message saying where to annotate.
    """
    from prefdata.annotate import bridge as argilla
    from prefdata.io.tables import read_text, write_table

    opts = stage.options
    where = {"workspace": opts["workspace"], "url": opts["url"]}
    pushed = argilla.push(
        stage.table("pairs"),
        dataset=opts["dataset"],
        annotators_per_item=opts["annotators_per_item"],
        suggestions=stage.maybe("annotations") if opts["suggestions"] else None,
        guidelines=read_text(opts["guidelines"]) if opts["guidelines"] else None,
        rating=opts["rating"],
        seed=opts["seed"],
        **where,
    )
    votes, pulled = argilla.pull(opts["dataset"], **where)
    if votes.height < opts["min_responses"]:
        raise WaitingForAnnotations(
            f"stage '{stage.name}': {pushed['records']} records are in Argilla dataset "
            f"'{opts['dataset']}' at {pushed['url']}, with {votes.height} responses so far "
            f"(the pipeline needs {opts['min_responses']}); annotate them, then run again"
        )
    outputs = {"annotations": write_table(votes, stage.out("votes.parquet"))}
    return outputs, {"push": pushed, "pull": pulled}


ANNOTATE = StageKind(
    "annotate",
    run_annotate,
    "human labels: push to Argilla, pull the responses (prefdata annotate push / pull)",
    {
        "dataset": Opt(type="str", required=True),
        "workspace": Opt(None, "str"),
        "url": Opt(None, "str"),
        "annotators_per_item": Opt(1, "int"),
        "suggestions": Opt(False, "bool"),
        "guidelines": Opt(None, "path"),
        "rating": Opt(False, "bool"),
        "seed": Opt(0, "int"),
        "min_responses": Opt(1, "int"),
    },
    inputs=(
        Slot(("pairs", "candidates")),
        Slot(("annotations",), required=False),
    ),
    outputs=("annotations",),
    external=True,
)

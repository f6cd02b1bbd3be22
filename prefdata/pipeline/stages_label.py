"""Stages that label: judge (LLM judges, both orders), critique (constitutional revision),
annotate (human labels in Argilla: push, then pull). Every model call goes through the run's
call cache, so an interrupted stage resumes and a re-run pays nothing twice."""

from __future__ import annotations

from pathlib import Path

from prefdata.errors import PrefdataError
from prefdata.label.rubric import BUILTIN_RUBRICS
from prefdata.pipeline.kinds import Opt, Slot, StageKind, StageOutputs, StageRun

# ---- judge -------------------------------------------------------------------------------


def run_judge(stage: StageRun) -> StageOutputs:
    """`prefdata judge`: votes (one row per pair x judge x order), verdicts (orders pooled per
    judge), and with candidates as input the judged pairs, the tournament's standings and
    the pointwise scores (as the CLI writes them)."""
    from prefdata.io.tables import write_table
    from prefdata.label.judge import judge
    from prefdata.label.runner import JudgeOptions

    opts = stage.options
    result = judge(
        stage.table("pairs"),
        judges=opts["judges"],
        cache=stage.cache,
        options=JudgeOptions(
            rubric=opts["rubric"],
            orders=opts["orders"],
            max_new_tokens=opts["max_new_tokens"],
            base_url=opts.get("base_url"),
            max_concurrency=opts.get("max_concurrency"),
            device=opts.get("device"),
            batch_size=opts.get("batch_size"),
            batch_state=stage.out("batches.json") if opts["batch"] else None,
            poll_interval=opts["poll_interval"],
            chunk_size=opts["chunk_size"],
        ),
        selection=opts["selection"],
        max_pairs_per_prompt=opts["max_pairs_per_prompt"],
        pointwise_rubric=opts["pointwise_rubric"],
        seed=opts["seed"],
        gold=stage.maybe("gold"),
        min_human_agreement=opts["min_human_agreement"],
        source=opts["source"],
        progress=stage.progress,
    )
    files = {"annotations": "votes"}
    outputs = {
        name: write_table(frame, stage.out(f"{files.get(name, name)}.parquet"))
        for name, frame in result.tables.items()
    }
    return outputs, result.report


JUDGE = StageKind(
    "judge",
    run_judge,
    "pairwise LLM judge in both orders (prefdata judge)",
    {
        "judges": Opt(["local:smollm2"], "strs"),
        "orders": Opt("both", "str", ("both", "ab", "ba")),
        "rubric": Opt("helpfulness", "name_or_path", names=BUILTIN_RUBRICS),
        "pointwise_rubric": Opt(None, "path"),
        "selection": Opt("all", "str", ("all", "best-vs-worst", "tournament")),
        "max_pairs_per_prompt": Opt(None, "int"),
        "max_new_tokens": Opt(400, "int"),
        "seed": Opt(0, "int"),
        "base_url": Opt(None, "str"),
        "max_concurrency": Opt(None, "int"),
        "device": Opt(None, "str"),
        "batch_size": Opt(None, "int"),
        "chunk_size": Opt(256, "int"),
        "batch": Opt(False, "bool"),
        "poll_interval": Opt(30.0, "float"),
        "min_human_agreement": Opt(None, "float"),
        "source": Opt("judged", "str"),
    },
    inputs=(Slot(("pairs", "candidates")), Slot(("gold",), required=False, auto=False)),
    outputs=("annotations", "verdicts", "pairs", "standings", "scores"),
)


# ---- critique ----------------------------------------------------------------------------


def run_critique(stage: StageRun) -> StageOutputs:
    """`prefdata critique`: revision-preferred pairs and the comparison votes."""
    from prefdata.io.tables import write_table
    from prefdata.label.constitution import critique

    opts = stage.options
    pairs, votes, report = critique(
        stage.table("candidates"),
        model=opts["model"],
        judge=opts["judge"],
        cache=stage.cache,
        constitution=Path(opts["constitution"]) if opts["constitution"] else None,
        principles_per_prompt=opts["principles_per_prompt"],
        min_confidence=opts["min_confidence"],
        max_new_tokens=opts["max_new_tokens"],
        seed=opts["seed"],
    )
    outputs = {
        "pairs": write_table(pairs, stage.out("pairs.parquet")),
        "annotations": write_table(votes, stage.out("votes.parquet")),
    }
    return outputs, report


CRITIQUE = StageKind(
    "critique",
    run_critique,
    "constitutional critique and revision (prefdata critique)",
    {
        "model": Opt("local:smollm2", "str"),
        "judge": Opt(None, "str"),
        "constitution": Opt(None, "path"),
        "principles_per_prompt": Opt(2, "int"),
        "min_confidence": Opt(0.6, "float"),
        "max_new_tokens": Opt(256, "int"),
        "seed": Opt(0, "int"),
    },
    inputs=(Slot(("candidates",)),),
    outputs=("pairs", "annotations"),
)


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

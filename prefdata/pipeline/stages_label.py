"""Stages that label: judge (LLM judges, both orders), critique (constitutional revision),
annotate (human labels in Argilla: push, then pull). Every model call goes through the run's
call cache, so an interrupted stage resumes and a re-run pays nothing twice."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from prefdata.errors import PrefdataError
from prefdata.label.judge import BUILTIN_RUBRICS
from prefdata.llm.factory import backend_options
from prefdata.pipeline.kinds import Opt, Slot, StageKind, StageOutputs, StageRun

# ---- judge -------------------------------------------------------------------------------


def judged_pairs(candidates: pl.DataFrame, votes: pl.DataFrame, *, source: str) -> pl.DataFrame:
    """The pairs table behind judge votes on candidates: every pair of a prompt's distinct
    completions (prefdata.label.judge.select_pairs), kept where a vote names its pair_id.

    Input: candidates (`prompt_id`, `prompt`, `completion`) and the votes (`item_id`).
    Output: the pairs contract (confidence and margin unknown until consensus, n_votes 0),
    `source` as given, provenance {"from": "candidates"}.
    """
    from prefdata.io.importers.common import pairs_table
    from prefdata.label.judge import select_pairs

    rows = select_pairs(candidates, selection="all").to_dicts()
    pairs = pairs_table(
        [{**r, "n_votes": 0, "provenance": {"from": "candidates"}} for r in rows], source=source
    )
    return pairs.filter(pl.col("pair_id").is_in(votes["item_id"].unique().implode()))


def run_judge(stage: StageRun) -> StageOutputs:
    """`prefdata judge`: votes (one row per pair x judge x order), verdicts (orders pooled per
    judge), and with candidates as input the judged pairs."""
    from prefdata.io.tables import write_table
    from prefdata.label import judge as jm
    from prefdata.label.selection import is_candidates

    opts = stage.options
    table = stage.table("pairs")
    orders = {"both": ("ab", "ba"), "ab": ("ab",), "ba": ("ba",)}[opts["orders"]]
    votes, report = jm.judge(
        table,
        judges=opts["judges"],
        cache=stage.cache,
        rubric=opts["rubric"],
        orders=orders,
        selection=opts["selection"],
        max_pairs_per_prompt=opts["max_pairs_per_prompt"],
        max_new_tokens=opts["max_new_tokens"],
        client_options=backend_options(
            base_url=opts.get("base_url"),
            max_concurrency=opts.get("max_concurrency"),
            device=opts.get("device"),
            batch_size=opts.get("batch_size"),
        ),
        batch_state=stage.out("batches.json") if opts["batch"] else None,
        poll_interval=opts["poll_interval"],
        chunk_size=opts["chunk_size"],
        progress=stage.progress,
        min_human_agreement=opts["min_human_agreement"],
        gold=stage.maybe("gold"),
        seed=opts["seed"],
    )
    outputs = {
        "annotations": write_table(votes, stage.out("votes.parquet")),
        "verdicts": write_table(jm.pool_orders(votes), stage.out("verdicts.parquet")),
    }
    if is_candidates(table):
        pairs = judged_pairs(table, votes, source=opts["source"])
        outputs["pairs"] = write_table(pairs, stage.out("pairs.parquet"))
    return outputs, report


JUDGE = StageKind(
    "judge",
    run_judge,
    "pairwise LLM judge in both orders (prefdata judge)",
    {
        "judges": Opt(["local:smollm2"], "strs"),
        "orders": Opt("both", "str", ("both", "ab", "ba")),
        "rubric": Opt("helpfulness", "name_or_path", names=BUILTIN_RUBRICS),
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
    outputs=("annotations", "verdicts", "pairs"),
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
        judge_model=opts["judge"],
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

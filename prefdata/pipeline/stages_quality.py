"""Stages that measure and clean: agree, consensus, audit, filter, report (the library
functions behind the CLI commands of the same names)."""

from __future__ import annotations

from pathlib import Path

from prefdata.pipeline.kinds import Opt, Slot, StageKind, StageOutputs, StageRun
from prefdata.pipeline.stages_data import write_json
from prefdata.quality.audit import MODEL_SIGNALS
from prefdata.quality.consensus import CONSENSUS_METHODS

# ---- agree -------------------------------------------------------------------------------


def run_agree(stage: StageRun) -> StageOutputs:
    """`prefdata agree`: agreement.json and the per-item table."""
    from prefdata.io.tables import write_table
    from prefdata.quality.agreement import agreement

    opts = stage.options
    items, report = agreement(
        stage.table("annotations", "annotations"),
        level=opts["level"],
        label_order=opts["label_order"],
        bootstrap=opts["bootstrap"],
        seed=opts["seed"],
    )
    outputs = {
        "agreement": write_json(report, stage.out("agreement.json")),
        "per_item": write_table(items, stage.out("per_item.parquet")),
    }
    return outputs, report


AGREE = StageKind(
    "agree",
    run_agree,
    "inter-annotator agreement: kappas, alpha, bootstrap intervals (prefdata agree)",
    {
        "level": Opt("nominal", "str", ("nominal", "ordinal", "interval")),
        "label_order": Opt(None, "strs"),
        "bootstrap": Opt(1000, "int"),
        "seed": Opt(0, "int"),
    },
    inputs=(Slot(("annotations",)),),
    outputs=("agreement", "per_item"),
)


# ---- consensus ---------------------------------------------------------------------------


def run_consensus(stage: StageRun) -> StageOutputs:
    """`prefdata consensus --pairs`: the pairs oriented by the consensus (confidence = its
    posterior), the posteriors, and the pairs set aside (tie / no consensus / no votes)."""
    from prefdata.io.tables import write_table
    from prefdata.quality.consensus import consensus, pairs_from_consensus

    method = stage.options["method"]
    posteriors, report = consensus(stage.table("annotations", "annotations"), method=method)
    kept, set_aside, pair_report = pairs_from_consensus(
        stage.table("pairs", "pairs"), posteriors, method=method
    )
    outputs = {
        "pairs": write_table(kept, stage.out("pairs.parquet")),
        "posteriors": write_table(posteriors, stage.out("posteriors.parquet")),
        "set_aside": write_table(set_aside, stage.out("set_aside.parquet")),
    }
    return outputs, {**report, "pairs": pair_report}


CONSENSUS = StageKind(
    "consensus",
    run_consensus,
    "consensus labels onto the pairs: majority, Dawid-Skene, or the judges' mean "
    "probability (prefdata consensus)",
    {"method": Opt("dawid-skene", "str", CONSENSUS_METHODS)},
    inputs=(Slot(("annotations",)), Slot(("pairs",))),
    outputs=("pairs", "posteriors", "set_aside"),
)


# ---- audit -------------------------------------------------------------------------------


def run_audit(stage: StageRun) -> StageOutputs:
    """`prefdata audit`: the issues table and a review sample."""
    from prefdata.io.tables import write_table
    from prefdata.quality.audit import audit

    opts = stage.options
    issues, drawn, report = audit(
        stage.table("pairs"),
        annotations=stage.maybe("annotations"),
        test=stage.maybe("test"),
        answers=stage.maybe("answers"),
        model=opts["model"],
        scores=stage.maybe("scores"),
        sample=opts["sample"],
        seed=opts["seed"],
    )
    outputs = {"issues": write_table(issues, stage.out("issues.parquet"))}
    if drawn.height:
        outputs["sample"] = write_table(drawn, stage.out("sample.parquet"))
    return outputs, report


AUDIT = StageKind(
    "audit",
    run_audit,
    "likely mislabelled and broken pairs: rules, duplicates, disagreement (prefdata audit)",
    {
        "model": Opt("none", "str", MODEL_SIGNALS),
        "sample": Opt(50, "int"),
        "seed": Opt(0, "int"),
    },
    inputs=(
        Slot(("pairs",)),
        Slot(("annotations",), required=False),
        Slot(("test",), required=False, auto=False),
        Slot(("scores",), required=False, auto=False),
        Slot(("answers",), required=False, auto=False),
    ),
    outputs=("issues", "sample"),
)


# ---- report ------------------------------------------------------------------------------


def run_report(stage: StageRun) -> StageOutputs:
    """`prefdata report`: report.html (self-contained), report.json, README.md (card).

    With an explicit `before` input (e.g. the consensus stage), the two data sets side by
    side: `before` on the left, this stage's pairs on the right.
    """
    import json

    from prefdata.io.tables import read_text
    from prefdata.report import build_report

    opts = stage.options
    data: Path = stage.inputs["pairs"]
    before = stage.inputs.get("before")
    settings = stage.inputs.get("filter_settings")
    build_report(
        before if before is not None else data,
        compare=data if before is not None else None,
        annotations=stage.inputs.get("annotations"),
        issues=stage.inputs.get("issues"),
        rejected=stage.inputs.get("rejected"),
        sample=stage.inputs.get("sample") if opts["reviewed_sample"] else None,
        tokenizer=None if opts["tokenizer"] == "none" else opts["tokenizer"],
        max_length=opts["max_length"],
        token_rows=opts["token_rows"],
        license=opts["license"],
        title=opts["title"],
        filter_settings=json.loads(read_text(settings)) if settings else None,
        out_dir=stage.dir,
    )
    outputs = {
        "report": stage.out("report.html"),
        "report_json": stage.out("report.json"),
        "card": stage.out("README.md"),
    }
    return outputs, {"written": {k: str(v) for k, v in outputs.items()}}


REPORT = StageKind(
    "report",
    run_report,
    "QA report: self-contained HTML, report.json, dataset card (prefdata report)",
    {
        "title": Opt(None, "str"),
        "license": Opt(None, "str"),
        "tokenizer": Opt("smollm2", "str"),
        "max_length": Opt(1024, "int"),
        "token_rows": Opt(20000, "int"),
        "reviewed_sample": Opt(False, "bool"),
    },
    inputs=(
        Slot(("pairs", "kto")),
        Slot(("annotations",), required=False),
        Slot(("issues",), required=False),
        Slot(("rejected",), required=False),
        Slot(("filter_settings", "filter"), required=False),
        Slot(("sample",), required=False),
        Slot(("before", "pairs"), required=False, auto=False),
    ),
    outputs=("report", "report_json", "card"),
)

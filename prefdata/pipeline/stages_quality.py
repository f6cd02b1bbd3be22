"""Stages that measure and clean: agree, consensus, audit, filter, report (the library
functions behind the CLI commands of the same names)."""

from __future__ import annotations

from pathlib import Path

from prefdata.pipeline.kinds import Opt, Slot, StageKind, StageOutputs, StageRun
from prefdata.quality.audit import MODEL_SIGNALS

# ---- audit -------------------------------------------------------------------------------


def run_audit(stage: StageRun) -> StageOutputs:
    """`prefdata audit`: the issues table and a review sample."""
    from prefdata.io.tables import write_table
    from prefdata.quality.audit import audit
    from prefdata.quality.token_check import TokenCheck

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
        tokens=TokenCheck(
            max_length=opts["max_length"],
            truncation_mode=opts["truncation_mode"],
            tokenizer=opts["tokenizer"],
            train_method=opts["train_method"],
            recipe=opts["recipe"],
        ),
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
        "max_length": Opt(None, "int"),
        "truncation_mode": Opt(None, "str", ("keep_start", "keep_end")),
        "tokenizer": Opt("smollm2", "name_or_path", names=("smollm2",)),
        "train_method": Opt(None, "str", ("dpo", "kto", "reward")),
        "recipe": Opt(None, type="recipe"),
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

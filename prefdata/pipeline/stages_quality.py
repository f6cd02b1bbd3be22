"""The pipeline's `report` stage (the QA report folder); every other quality stage is derived
from its library function (prefdata.pipeline.catalog)."""

from __future__ import annotations

from pathlib import Path

from prefdata.pipeline.kinds import Opt, Slot, StageKind, StageOutputs, StageRun

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

"""The stage kinds a pipeline file may use, by name, in the order data usually flows."""

from __future__ import annotations

from prefdata.pipeline.kinds import StageKind
from prefdata.pipeline.stages_data import EXPORT, GENERATE, IMPORT, SPLIT
from prefdata.pipeline.stages_label import ANNOTATE, CRITIQUE, JUDGE
from prefdata.pipeline.stages_quality import AGREE, AUDIT, CONSENSUS, FILTER, REPORT
from prefdata.pipeline.stages_train import EVAL, TRAIN

REGISTRY: dict[str, StageKind] = {
    k.kind: k
    for k in (
        IMPORT,
        GENERATE,
        JUDGE,
        CRITIQUE,
        ANNOTATE,
        AGREE,
        CONSENSUS,
        AUDIT,
        FILTER,
        SPLIT,
        EXPORT,
        REPORT,
        TRAIN,
        EVAL,
    )
}
"""Stage kind -> its definition (options, inputs, outputs, the function that runs it)."""

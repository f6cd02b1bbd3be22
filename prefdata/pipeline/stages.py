"""The stage kinds a pipeline file may use, by name, in the order data usually flows."""

from __future__ import annotations

from prefdata.pipeline.catalog import STAGES, stage_spec
from prefdata.pipeline.derive import stage_kind
from prefdata.pipeline.kinds import StageKind
from prefdata.pipeline.stages_data import IMPORT
from prefdata.pipeline.stages_train import TRAIN

_WRITTEN: dict[str, StageKind] = {k.kind: k for k in (IMPORT, TRAIN)}
# The order data usually flows in (the order `prefdata run --help` lists them).
_ORDER = (
    "import",
    "generate",
    "judge",
    "judge-eval",
    "critique",
    "annotate-push",
    "annotate-pull",
    "agree",
    "consensus",
    "audit",
    "filter",
    "split",
    "export",
    "report",
    "train",
    "eval",
)
REGISTRY: dict[str, StageKind] = {
    name: stage_kind(stage_spec(name)) if name in STAGES else _WRITTEN[name]
    for name in _ORDER + tuple(n for n in STAGES if n not in _ORDER)
}
"""Stage kind -> its definition (options, inputs, outputs, the function that runs it)."""

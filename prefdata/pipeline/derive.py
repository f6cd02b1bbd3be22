"""Pipeline stage kinds derived from stage signatures (prefdata.stage): the options of a kind
are the stage function's options, its input slots are its table and path inputs, and it
writes its StageOutputs with the one writer (prefdata.io.results). Nothing is declared twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefdata.errors import PrefdataError
from prefdata.pipeline.kinds import Opt, Slot, StageKind, StageOutputs, StageRun
from prefdata.stage import Param, StageSpec


def opt_type(p: Param) -> str:
    """The pipeline option type of a stage option (see prefdata.pipeline.kinds.TYPES)."""
    if p.file is not None:
        if p.file.mapping:
            return "recipe"
        return "name_or_path" if p.file.names else "path"
    kind = p.value_type
    return kind if kind in ("bool", "int", "float", "str", "strs", "dict", "path") else "any"


def option(p: Param) -> Opt:
    """The pipeline option of one stage option: default, type, choices, built-in names."""
    default = None if p.required else p.default
    if isinstance(default, tuple):
        default = list(default)  # YAML has lists, not tuples
    return Opt(
        default=default,
        type=opt_type(p),
        choices=tuple(str(c) for c in p.choices),
        required=p.required,
        names=p.file.names if p.file is not None else (),
    )


def slot(p: Param) -> Slot:
    """The input slot of a table or path input: its own name first, then what can fill it."""
    marker = p.table or p.input
    alternatives: tuple[str, ...] = ()
    auto = True
    if p.table is not None:
        alternatives, auto = p.table.contracts, p.table.auto
    elif p.input is not None:
        alternatives, auto = p.input.names, p.input.auto
    names = tuple(dict.fromkeys((p.name, *alternatives)))
    assert marker is not None
    return Slot(names, required=p.required, auto=auto)


def run_stage(spec: StageSpec, stage: StageRun) -> StageOutputs:
    """Run a derived stage in its folder: inputs from the slots, resources from the run,
    outputs with the one writer. Returns (output name -> path, report)."""
    from prefdata.io.results import write_result_dir

    values: dict[str, Any] = {p.name: stage.options[p.name] for p in spec.options}
    for p in spec.inputs:
        if p.name in stage.inputs:
            values[p.name] = stage.inputs[p.name]
    written: dict[str, Path] = {}
    for p in spec.params:
        if p.role == "resource" and p.resource is not None:
            provided = {"cache": stage.cache, "progress": stage.progress, "engine": stage.engine}
            values[p.name] = provided[p.resource.name]
        elif p.role == "output" and p.output is not None:
            path = stage.dir if p.output.name == "." else stage.out(p.output.name)
            values[p.name] = path
            if p.output.name != ".":
                written[p.output.name] = path
    result = None
    if stage.engine is not None and stage.engine.distributed:
        # Model-call stages share their calls out to the engine's workers; the same function
        # then assembles the result (prefdata.engine.warm). Any other stage runs here.
        from prefdata.engine.warm import run_sharded

        sharded = run_sharded(
            stage.engine, spec.name, spec.func, values, cache=stage.cache.path, scratch=stage.dir
        )
        if sharded is not None:
            result, where = sharded
            # The calls the workers made count as this stage's (the run's summary).
            stage.cache.stats.misses += where["calls_new"]
            stage.cache.stats.hits += where["calls_cached"]
    if result is None:
        result = spec.call(values)
    outputs = write_result_dir(result, stage.dir)
    outputs.update(written)
    outputs.update(result.files)
    if result.failure is not None:
        # Written first (nothing is lost); the stage is not recorded as done, so a re-run
        # runs it again (its answered calls from the call cache).
        raise PrefdataError(f"stage '{stage.name}' failed: {result.failure}")
    return outputs, result.report


def stage_kind(spec: StageSpec) -> StageKind:
    """The pipeline stage kind of a stage."""
    outputs = spec.outputs
    return StageKind(
        spec.name,
        lambda stage: run_stage(spec, stage),
        spec.summary,
        {p.name: option(p) for p in spec.options},
        inputs=tuple(slot(p) for p in spec.inputs),
        outputs=outputs,
        external=spec.external,
    )

"""Run a checked pipeline into a run folder: skip what is up to date, resume what was cut
off, show progress, and list every output at the end.

    result = run_pipeline(load_pipeline("demo.yaml"), "runs/demo")

- Each stage writes into `RUN_DIR/<stage name>/` and, once finished, its manifest
  (prefdata.manifest). A stage whose kind, options and input contents match its
  manifest, and whose outputs still exist, is skipped; a stage that runs again is followed
  by whichever later stages see a changed input.
- Every model call of every stage goes through one call cache, `RUN_DIR/calls.sqlite` (the
  pipeline's `cache:`), so a stage cut off half way resumes: the calls it made are answered
  from the cache and only the missing ones are sent.
- Progress: a rich bar over the stages on stderr, with each stage's own item bars
  (prefdata.progress) below it. Everything a stage prints goes to stderr, so stdout stays
  free for the CLI's JSON summary.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from prefdata import manifest as mf
from prefdata.engine import Engine, open_engine
from prefdata.errors import PrefdataError
from prefdata.llm.cache import CacheStats, CallCache
from prefdata.pipeline import rounds
from prefdata.pipeline.kinds import StageRun
from prefdata.pipeline.spec import Pipeline, StageRef, StageSpec

SUMMARY = "summary.json"


class StageFailed(PrefdataError):
    """A stage failed: the message names the pipeline file and the stage first, then what
    went wrong; the original exception is the `__cause__` (for a traceback)."""


@dataclass
class StageOutcome:
    """What happened to one stage: `status` is ran / skipped / failed / interrupted,
    `reason` why it ran (or "up to date"); model calls are this stage's own."""

    name: str
    kind: str
    status: str
    reason: str
    seconds: float = 0.0
    outputs: dict[str, Path] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    calls_new: int = 0
    calls_cached: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "kind": self.kind,
            "status": self.status,
            "reason": self.reason,
            "seconds": round(self.seconds, 2),
            "calls_new": self.calls_new,
            "calls_cached": self.calls_cached,
            "outputs": {k: str(v) for k, v in self.outputs.items()},
        }


@dataclass
class RunResult:
    """The outcome of a run, stage by stage."""

    pipeline: Pipeline
    run_dir: Path
    stages: list[StageOutcome]

    def stage(self, name: str) -> StageOutcome:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def ran(self) -> list[str]:
        return [s.name for s in self.stages if s.status == "ran"]

    @property
    def calls_new(self) -> int:
        return sum(s.calls_new for s in self.stages)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": str(self.pipeline.path),
            "run_dir": str(self.run_dir),
            "stages": [s.as_dict() for s in self.stages],
        }


# ---- inputs --------------------------------------------------------------------------------


def resolve_inputs(spec: StageSpec, done: list[StageOutcome]) -> dict[str, Path]:
    """Slot -> file for a stage, from its explicit `inputs:` and the earlier stages' actual
    outputs (each name of a slot searched latest stage first, before the next name)."""
    out: dict[str, Path] = {}
    for slot in spec.slots():
        given = spec.inputs.get(slot.key)
        if isinstance(given, Path):
            out[slot.key] = given
            continue
        if isinstance(given, StageRef):
            source = next(s for s in done if s.name == given.stage)
            found = [source.outputs[n] for n in given.names if n in source.outputs]
            if not found:
                raise StageFailed(
                    f"{spec.where}: input {slot.key} is to come from stage '{given.stage}', "
                    f"which made no {' or '.join(given.names)} (it made "
                    f"{', '.join(source.outputs) or 'nothing'})"
                )
            out[slot.key] = found[0]
            continue
        if not slot.auto:
            continue
        path = next(
            (s.outputs[n] for n in slot.names for s in reversed(done) if n in s.outputs), None
        )
        if path is not None:
            out[slot.key] = path
        elif slot.required:
            made = "; ".join(f"{s.name}: {', '.join(s.outputs) or 'nothing'}" for s in done)
            raise StageFailed(
                f"{spec.where}: needs {' or '.join(slot.names)}, which no earlier stage made "
                f"({made or 'no earlier stage'})"
            )
    return out


def _input_hashes(spec: StageSpec, inputs: dict[str, Path]) -> dict[str, str]:
    hashes = {slot: mf.hash_path(path) for slot, path in inputs.items()}
    for key, opt in spec.definition.options.items():
        value = spec.options.get(key)
        # Files named by options (an import's source, a recipe file, a rubric of one's own)
        # are inputs too.
        if opt.names_file(value):
            hashes[f"option:{key}"] = mf.hash_path(Path(value))
    return hashes


# ---- display -------------------------------------------------------------------------------


class _Display:
    """A rich bar over the stages (nested item bars show below it), or plain lines."""

    def __init__(self, console: Console, total: int, enabled: bool) -> None:
        self.console = console
        self.total = total
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None

    @contextlib.contextmanager
    def show(self) -> Iterator[_Display]:
        if not self.enabled:
            yield self
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        ) as progress:
            self._progress = progress
            self._task = progress.add_task("pipeline", total=self.total)
            yield self
            self._progress = None

    def start(self, spec: StageSpec) -> None:
        if self._progress is not None:
            label = f"stage {spec.index}/{self.total}: {spec.name} ({spec.kind})"
            self._progress.update(self._task, description=label)

    def done(self, outcome: StageOutcome) -> None:
        calls = ""
        if outcome.calls_new or outcome.calls_cached:
            calls = f", model calls: {outcome.calls_new} new, {outcome.calls_cached} from cache"
        mark = {"ran": "[green]ran[/]", "skipped": "[dim]skipped[/]"}.get(
            outcome.status, f"[red]{outcome.status}[/]"
        )
        took = "" if outcome.status == "skipped" else f", {outcome.seconds:.1f} s"
        self.console.print(
            f"{mark} {escape(outcome.name)} ({outcome.kind}): "
            f"{escape(outcome.reason)}{took}{calls}",
            highlight=False,
        )
        if self._progress is not None:
            self._progress.advance(self._task)


def _rows(path: Path) -> str:
    try:
        if path.suffix == ".parquet":
            import polars as pl

            return str(pl.scan_parquet(path, glob=False).select(pl.len()).collect().item())
        if path.suffix == ".jsonl":
            with path.open("rb") as fh:
                return str(sum(1 for line in fh if line.strip()))
    except Exception:  # a count is a courtesy; an odd file must not fail the summary
        return ""
    return ""


def print_summary(result: RunResult, console: Console) -> None:
    """A table of every stage and every output, with its path inside the run folder."""
    from rich.table import Table

    table = Table(
        title=f"pipeline {result.pipeline.name}: outputs in {result.run_dir}/",
        title_justify="left",
    )
    table.add_column("stage")
    table.add_column("status")
    table.add_column("s", justify="right")
    table.add_column("model calls")
    table.add_column("rows", justify="right")
    table.add_column("output", overflow="fold")
    for s in result.stages:
        calls = f"{s.calls_new} new" if s.calls_new or s.calls_cached else ""
        if s.calls_cached:
            calls += f", {s.calls_cached} cached"
        paths: list[Path | None] = list(s.outputs.values()) or [None]
        for i, path in enumerate(paths):
            first = i == 0
            table.add_row(
                escape(s.name) if first else "",
                s.status if first else "",
                f"{s.seconds:.1f}" if first and s.status != "skipped" else "",
                calls if first else "",
                _rows(path) if path else "",
                escape(_inside(path, result.run_dir)) if path else "",
            )
    console.print(table)


def _inside(path: Path, run_dir: Path) -> str:
    try:
        return str(path.relative_to(run_dir))
    except ValueError:
        return str(path)


# ---- the run -------------------------------------------------------------------------------


def _calls(before: CacheStats, after: CacheStats) -> tuple[int, int]:
    return after.misses - before.misses, after.hits - before.hits


def _run_stage(
    pipeline_file: Path,
    spec: StageSpec,
    run_dir: Path,
    inputs: dict[str, Path],
    hashes: dict[str, str],
    cache: CallCache,
    progress: bool,
    reason: str,
    engine: Engine | None = None,
) -> StageOutcome:
    stage_dir = run_dir / spec.name
    # No manifest while the stage runs: if it is cut off, the next run runs it again.
    (stage_dir / mf.MANIFEST).unlink(missing_ok=True)
    stage_dir.mkdir(parents=True, exist_ok=True)
    before = replace(cache.stats)
    start = time.perf_counter()
    run = StageRun(
        spec.name, spec.kind, stage_dir, dict(spec.options), inputs, cache, progress, engine
    )
    outcome = StageOutcome(spec.name, spec.kind, "failed", reason)
    try:
        # Libraries that print (TRL's logs) must not mix into the CLI's JSON on stdout.
        with contextlib.redirect_stdout(sys.stderr):
            outputs, report = spec.definition.run(run)
    except KeyboardInterrupt:
        outcome.status = "interrupted"
        raise
    except PrefdataError as exc:
        raise StageFailed(f"{pipeline_file}: {spec.where} ({spec.kind}): {exc}") from exc
    except Exception as exc:
        # Errors from the libraries underneath (polars on a corrupt file, OSError on a full
        # disk) would otherwise say nothing of which stage of which pipeline hit them.
        raise StageFailed(
            f"{pipeline_file}: {spec.where} ({spec.kind}): {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        outcome.seconds = time.perf_counter() - start
        outcome.calls_new, outcome.calls_cached = _calls(before, cache.stats)
    outcome.status, outcome.outputs, outcome.report = "ran", outputs, report
    mf.write_manifest(
        stage_dir,
        {
            "stage": spec.name,
            "kind": spec.kind,
            "options": spec.options,
            "options_hash": mf.options_hash(spec.kind, spec.options),
            "inputs": hashes,
            "input_paths": {k: str(v) for k, v in inputs.items()},
            "outputs": {k: str(v.relative_to(run_dir)) for k, v in outputs.items()},
            "seconds": round(outcome.seconds, 3),
            "calls": {"new": outcome.calls_new, "cached": outcome.calls_cached},
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "report": report,
        },
    )
    return outcome


def run_pipeline(
    pipeline: Pipeline,
    run_dir: str | Path,
    *,
    progress: bool = True,
    console: Console | None = None,
    engine: str = "local",
    address: str | None = None,
) -> RunResult:
    """Run `pipeline` into `run_dir` (see the module doc); returns every stage's outcome and
    writes it to RUN_DIR/summary.json.

    `engine`: where row-wise work runs: "local" (this process) or "ray" (Ray Data over Parquet
    shards; `address` a running cluster, else a local one is started; see prefdata.engine).
    The outputs are the same files with the same content either way, so the engine is not
    part of a stage's manifest: a stage finished on one engine is up to date on the other.

    Raises StageFailed (a PrefdataError naming the pipeline file and the stage, with the
    original exception as its __cause__) when a stage fails;
    KeyboardInterrupt passes through after a message saying how to resume. Either way the
    stages finished before stay finished.
    """
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True)
    display = _Display(console, len(pipeline.stages), progress)
    done: list[StageOutcome] = []
    cache = CallCache(run_dir / pipeline.cache)
    current: StageSpec | None = None
    policies: dict[int, Path] = {}  # round -> the policy its train stage wrote
    try:
        # Shards live in the run folder: on a cluster it is the folder every node reaches.
        scratch = run_dir / ".shards" if engine != "local" else None
        with open_engine(engine, address=address, scratch=scratch) as workers, display.show():
            for spec in pipeline.stages:
                policy = policies.get(spec.round - 1)
                spec = rounds.with_rounds_table(rounds.with_policy(spec, policy), run_dir, done)
                current = spec
                display.start(spec)
                inputs = resolve_inputs(spec, done)
                hashes = _input_hashes(spec, inputs)
                if policy is not None and spec.kind in ("generate", "train"):
                    # The previous round's weights are an input: retrained to other weights,
                    # this round runs again.
                    hashes[rounds.POLICY_INPUT] = mf.hash_path(policy)
                recorded = mf.read_manifest(run_dir / spec.name)
                why = (
                    "reads a server, so it always runs"
                    if spec.definition.external
                    else mf.up_to_date(
                        recorded,
                        kind=spec.kind,
                        options_digest=mf.options_hash(spec.kind, spec.options),
                        inputs=hashes,
                        run_dir=run_dir,
                    )
                )
                if why is None and recorded is not None:
                    outcome = StageOutcome(
                        spec.name,
                        spec.kind,
                        "skipped",
                        "up to date",
                        outputs={k: run_dir / v for k, v in recorded["outputs"].items()},
                        report=recorded.get("report") or {},
                    )
                else:
                    outcome = _run_stage(
                        pipeline.path,
                        spec,
                        run_dir,
                        inputs,
                        hashes,
                        cache,
                        progress,
                        why or "changed",
                        workers,
                    )
                done.append(outcome)
                display.done(outcome)
                if spec.round and spec.kind == "train" and "model" in outcome.outputs:
                    policies[spec.round] = outcome.outputs["model"]
    except KeyboardInterrupt:
        where = f" during {escape(current.where)}" if current else ""
        console.print(
            f"[bold yellow]interrupted[/]{where}. Run the same command again to resume: "
            f"finished stages are skipped and the model calls already made are answered "
            f"from {escape(str(run_dir / pipeline.cache))}.",
            highlight=False,
        )
        raise
    finally:
        cache.close()
    result = RunResult(pipeline, run_dir, done)
    from prefdata.io.tables import atomic_path

    with atomic_path(run_dir / SUMMARY) as tmp:
        tmp.write_text(json.dumps(result.as_dict(), indent=1) + "\n")
    if pipeline.rounds > 1:
        rounds.write_figures(run_dir / rounds.FILE, done)
    return result

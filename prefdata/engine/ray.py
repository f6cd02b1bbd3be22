"""The Ray engine: work items mapped with Ray Data `map_batches`, one item per batch.

Items are small descriptions of work (a shard's Parquet path and the options to run on it);
the rows themselves go through Parquet files, so neither the driver nor Ray's object store
ever holds a whole table. Plain work runs as Ray tasks (`TaskPoolStrategy`); model work runs
on a fixed pool of actors (`ActorPoolStrategy`) with `num_gpus` each, so each worker loads
its model once and keeps it for every shard it is given.

A worker's exception comes back to the driver as the exception itself (pickled), so a bad
input on a worker still raises the same one-line InputError as in one process.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prefdata.engine.base import Engine
from prefdata.paths import require_modules

T = TypeVar("T")
R = TypeVar("R")

# The object store of a cluster this engine starts itself: results are paths and counts, the
# data moves through files, so a small store leaves the memory to the workers.
_LOCAL_OBJECT_STORE = 256 * 1024 * 1024


def _run_one(fn: Callable[[Any], Any], payload: bytes) -> bytes:
    try:
        return pickle.dumps(("ok", fn(pickle.loads(payload))))
    except Exception as exc:  # sent back whole: the driver raises it as it is
        try:
            return pickle.dumps(("error", exc))
        except Exception:
            return pickle.dumps(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))


def _apply(batch: dict[str, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    """One Ray task: the items of the batch (one, with batch_size=1), each through `fn`."""
    return {
        "index": list(batch["index"]),
        "result": [_run_one(fn, bytes(p)) for p in batch["payload"]],
    }


class _Worker:
    """One Ray actor of a model pool: keeps its process (and so the model a stage loaded in it
    on the first shard) for every shard it is given."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return _apply(batch, self.fn)


class RayEngine(Engine):
    """See the module doc. `address`: a running cluster, or None to start a local one with
    `workers` CPUs (reusing the one this process already started, e.g. a test's
    `ray.init(num_cpus=2)`)."""

    name = "ray"
    distributed = True
    scratch: Path

    def __init__(
        self,
        *,
        address: str | None = None,
        workers: int | None = None,
        scratch: str | Path | None = None,
    ) -> None:
        require_modules(["ray", "ray.data"], "pip install 'prefdata[ray]'")
        import ray

        self._own_scratch = scratch is None
        self.scratch = Path(scratch or tempfile.mkdtemp(prefix="prefdata-ray-"))
        self.scratch.mkdir(parents=True, exist_ok=True)

        self._started = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None:
                options["num_cpus"] = workers or os.cpu_count() or 1
                options["object_store_memory"] = _LOCAL_OBJECT_STORE
            ray.init(address=address, **options)
            self._started = True
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        resources = ray.cluster_resources()
        self.cpus = int(resources.get("CPU", 1))
        self.gpus = int(resources.get("GPU", 0))
        self.workers = max(1, workers or self.cpus)

    def _run(self, fn: Callable[[T], R], items: list[T], *, model: bool, gpus: float) -> list[R]:
        import ray.data

        size = min(len(items), self.workers)
        if gpus:
            size = min(size, max(1, int(self.gpus / gpus)))
        rows = [{"index": i, "payload": pickle.dumps(item)} for i, item in enumerate(items)]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        common: dict[str, Any] = {"batch_size": 1, "num_cpus": 1}
        if gpus:
            common["num_gpus"] = gpus
        if model:
            mapped = dataset.map_batches(
                _Worker,
                fn_constructor_kwargs={"fn": fn},
                compute=ray.data.ActorPoolStrategy(size=size),
                **common,
            )
        else:
            mapped = dataset.map_batches(
                functools.partial(_apply, fn=fn),
                compute=ray.data.TaskPoolStrategy(size=size),
                **common,
            )
        # Ray Data does not keep the order of items between tasks: the index restores it.
        done = sorted(mapped.take_all(), key=lambda row: int(row["index"]))
        out: list[R] = []
        for row in done:
            status, value = pickle.loads(bytes(row["result"]))
            if status == "error":
                raise value
            out.append(value)
        return out

    def close(self) -> None:
        """Shut down the cluster this engine started (one it joined is left running) and
        remove the scratch folder it made."""
        if self._own_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):  # left only when something is still in it
                self.scratch.rmdir()
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

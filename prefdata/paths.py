"""Bottom floor: where prefdata keeps its caches, and the check that an optional extra is
installed. Nothing here imports another prefdata module except `errors`, so every layer
(the model loader, the call cache, the audit's embedding cache) can depend on it."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path

from prefdata.errors import MissingExtraError


def path_or_env(path: str | Path | None, env: str) -> Path | None:
    """`path` when given, else the path in the environment variable `env` when it is set and
    not empty, else None (the caller's default): an argument overrides the environment."""
    if path is not None:
        return Path(path)
    value = os.environ.get(env)
    return Path(value) if value else None


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The prefdata cache folder: `cache_dir`, else `$PREFDATA_CACHE`, else `~/.cache/prefdata`."""
    chosen = path_or_env(cache_dir, "PREFDATA_CACHE")
    return chosen.expanduser() if chosen is not None else Path.home() / ".cache" / "prefdata"


def require_modules(modules: Iterable[str], install: str) -> None:
    """Raise MissingExtraError naming `install` when any of `modules` cannot be imported."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"missing Python package(s): {', '.join(missing)}. Install with: {install}"
        )

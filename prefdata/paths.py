"""Bottom floor: where prefdata keeps its caches, and the check that an optional extra is
installed. Nothing here imports another prefdata module except `errors`, so every layer
(the model loader, the call cache, the audit's embedding cache) can depend on it."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path

from prefdata.errors import MissingExtraError


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The prefdata cache folder: `cache_dir`, else `$PREFDATA_CACHE`, else `~/.cache/prefdata`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("PREFDATA_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "prefdata"


def require_modules(modules: Iterable[str], install: str) -> None:
    """Raise MissingExtraError naming `install` when any of `modules` cannot be imported."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"missing Python package(s): {', '.join(missing)}. Install with: {install}"
        )

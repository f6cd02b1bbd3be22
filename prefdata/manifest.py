"""Stage manifests: what a finished stage read, with which options, and what it wrote.

`RUN_DIR/<stage>/manifest.json` is written atomically only after the stage has finished, so
its presence means the outputs are whole. A stage is up to date when its manifest records
the same kind, the same options and the same content hashes of its inputs, and every output
it lists still exists; then a re-run skips it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
VERSION = 1


def hash_path(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names and bytes, sorted;
    hidden files such as unfinished atomic writes left out)."""
    digest = hashlib.sha256()
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        for file in files:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
            digest.update(hash_path(file).encode() + b"\0")
        return digest.hexdigest()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def options_hash(kind: str, options: Mapping[str, Any]) -> str:
    """A stable hash of the stage kind and its (defaults-filled) options."""
    text = json.dumps({"kind": kind, "options": options}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """The manifest of a finished stage, or None (never run, interrupted, unreadable)."""
    path = stage_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == VERSION else None


def write_manifest(stage_dir: Path, manifest: Mapping[str, Any]) -> Path:
    """Write the manifest atomically (the last thing a stage does)."""
    from prefdata.io.tables import atomic_path

    path = stage_dir / MANIFEST
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"version": VERSION, **manifest}, indent=1, default=str) + "\n")
    return path


def up_to_date(
    manifest: Mapping[str, Any] | None,
    *,
    kind: str,
    options_digest: str,
    inputs: Mapping[str, str],
    run_dir: Path,
) -> str | None:
    """None when the stage can be skipped, else why it must run."""
    if manifest is None:
        return "not run before"
    if manifest.get("kind") != kind or manifest.get("options_hash") != options_digest:
        return "options changed"
    if manifest.get("inputs") != dict(inputs):
        return "inputs changed"
    for rel in (manifest.get("outputs") or {}).values():
        if not (run_dir / rel).exists():
            return f"output {rel} is missing"
    return None

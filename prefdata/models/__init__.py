"""Local models: the embedded default (SmolLM2-135M-Instruct, `embedded.py`) and the loader for
it and any local model folder (`loader.py`). `prefdata.models.load("smollm2")` is the entry
point; the cache folder comes from `prefdata.paths.cache_root`."""

from prefdata.models.embedded import (
    EMBEDDED_MODEL,
    EMBEDDED_MODEL_ID,
    embedded_gguf_path,
    embedded_model_path,
    load_embedded_gguf,
)
from prefdata.models.loader import generate_text, load

__all__ = [
    "EMBEDDED_MODEL",
    "EMBEDDED_MODEL_ID",
    "embedded_gguf_path",
    "embedded_model_path",
    "generate_text",
    "load",
    "load_embedded_gguf",
]

"""Local models: the embedded default (SmolLM2-135M-Instruct, `embedded.py`), what a model folder
holds (`folders.py`), the one loader every command uses (`loader.py`), merged exports of LoRA
adapters (`export.py`) and tiny models for tests and benchmarks (`tiny.py`).
`prefdata.models.load("smollm2")` is the entry point; the cache folder comes from
`prefdata.paths.cache_root`."""

from prefdata.models.embedded import (
    EMBEDDED_MODEL,
    EMBEDDED_MODEL_ID,
    embedded_gguf_path,
    embedded_model_path,
    load_embedded_gguf,
)
from prefdata.models.export import export_model, merged_folder
from prefdata.models.folders import KINDS, ModelFolder, inspect_model
from prefdata.models.loader import (
    from_pretrained,
    generate_text,
    load,
    load_reward_model,
    load_tokenizer,
)
from prefdata.models.tiny import tiny_model

__all__ = [
    "EMBEDDED_MODEL",
    "EMBEDDED_MODEL_ID",
    "KINDS",
    "ModelFolder",
    "embedded_gguf_path",
    "embedded_model_path",
    "export_model",
    "from_pretrained",
    "generate_text",
    "inspect_model",
    "load",
    "load_embedded_gguf",
    "load_reward_model",
    "load_tokenizer",
    "merged_folder",
    "tiny_model",
]

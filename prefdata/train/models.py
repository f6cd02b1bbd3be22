"""Loading what a method trains, through the one model loader (prefdata.models).

`--model` takes anything prefdata.models.folders recognises: "smollm2", a model folder, a
LoRA adapter (a previous `prefdata train` output: it is merged into its base once, into the
cache, and training starts from that merged model, so a new adapter, and for DPO / KTO the
reference, sit on the trained policy), or an rlhf run (its policy). A reward model where a
policy is needed is refused in one line naming both; a reward model trains from a policy (a
new value head) or from a reward model (its own head).

LoRA by default (`lora_config`); `prefdata.quantization` loads the frozen base in 4 or 8 bits
(QLoRA, bitsandbytes, CUDA only); `prefdata.attn_implementation` and `prefdata.model_revision`
go to transformers' from_pretrained.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefdata.errors import MissingExtraError, RecipeError

if TYPE_CHECKING:
    from prefdata.models.folders import ModelFolder
    from prefdata.train.hardware import Hardware
    from prefdata.train.recipe import MethodSpec, Recipe

__all__ = [
    "Models",
    "load_models",
    "lora_config",
    "model_path",
    "pad_token_id",
    "quantization_config",
    "training_model",
    "weights_dtype",
]

_QLORA_INSTALL = "pip install 'prefdata[qlora]'"


def training_model(
    model: str | Path, *, reward: bool = False, what: str = "training"
) -> ModelFolder:
    """What `model` holds, as a full local folder (adapters merged into the cache) that training
    loads from. `reward`: a reward model is being trained (a policy or a reward model both
    work); otherwise a policy is needed."""
    from prefdata.models.export import merged_folder
    from prefdata.models.folders import inspect_model

    found = inspect_model(model, want=None if reward else "causal_lm", what=what)
    if not found.adapter:
        return found
    folder = merged_folder(found)
    return dataclasses.replace(found, path=str(folder), adapter=False, base=None)


def model_path(model: str | Path, *, reward: bool = False) -> str:
    """The full model folder (or hub id) training starts from; see `training_model`."""
    return training_model(model, reward=reward).path


def pad_token_id(tokenizer: Any) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its end-of-sequence
    token (as TRL pads when a tokenizer has no pad token)."""
    pad: int = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    return pad


def weights_dtype(recipe: Recipe, hw: Hardware) -> str:
    """The dtype to load weights in (see PREFDATA_COMMON_DEFAULTS['model_dtype'])."""
    choice = str(recipe.prefdata["model_dtype"])
    if choice != "auto":
        return choice
    frozen_base = not recipe.prefdata["full_finetune"]
    if hw.accelerator == "cuda" and recipe.trl.get("bf16") and frozen_base:
        return "bfloat16"
    return "float32"


def quantization_config(recipe: Recipe, hw: Hardware) -> Any:
    """transformers' BitsAndBytesConfig for prefdata.quantization ("4bit": NF4 with double
    quantisation, computing in bf16 where the GPU has it, else fp16; "8bit"), or None.

    RecipeError off CUDA (bitsandbytes' kernels are CUDA ones); MissingExtraError without
    bitsandbytes."""
    import importlib.util

    mode = recipe.prefdata.get("quantization")
    if not mode:
        return None
    if hw.accelerator != "cuda":
        raise RecipeError(
            f"prefdata.quantization={mode} (QLoRA) needs a CUDA GPU; this machine trains on "
            f"{hw.accelerator}. Drop it to train LoRA on the full-precision base",
            source=recipe.source,
            column="prefdata.quantization",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MissingExtraError(f"prefdata.quantization needs bitsandbytes: {_QLORA_INSTALL}")
    import torch
    from transformers import BitsAndBytesConfig

    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if hw.bf16 else torch.float16,
    )


def lora_config(fields: Mapping[str, Any], *, task_type: str) -> Any:
    """A peft.LoraConfig from the recipe's `peft` section (LORA_DEFAULTS filled in)."""
    from peft import LoraConfig

    from prefdata.train.recipe import LORA_DEFAULTS

    values = {**LORA_DEFAULTS, **fields}
    values.setdefault("task_type", task_type)
    try:
        return LoraConfig(**values)
    except (ValueError, TypeError) as err:
        raise RecipeError(f"PEFT rejected the LoRA settings: {err}", column="peft") from err


@dataclass
class Models:
    """What `load_models` returns: the model folder, the policy (or reward model), the frozen
    reference when one is kept separately, the LoRA config (None for full fine-tuning), the
    tokenizer, the weights' dtype and what was loaded (one line)."""

    path: str
    policy: Any
    reference: Any | None
    peft_config: Any | None
    tokenizer: Any
    dtype: str
    loaded: str = ""

    @property
    def finetune(self) -> str:
        """The report's `finetune`: "lora" (an adapter trains) or "full" (every weight)."""
        return "full" if self.peft_config is None else "lora"


def load_models(
    recipe: Recipe,
    spec: MethodSpec,
    hardware: Hardware,
    model: str | Path,
    config: Any,
) -> Models:
    """Load what a method trains, after `build_config` (so DeepSpeed ZeRO-3 can partition the
    weights as they load).

    LoRA (default): the policy plus a LoraConfig; TRL wraps it and, for DPO/KTO, uses the
    base model with the adapter disabled as reference. Full fine-tuning (prefdata.full_finetune)
    of a method with a reference: a second, frozen copy, unless TRL's precompute_ref_log_probs
    is set. Reward models (spec.task_type SEQ_CLS) load as a one-output classifier. Refuses
    early when weights and optimizer state surely do not fit (check_memory).
    """
    from transformers import set_seed

    from prefdata.models.loader import from_pretrained, load_tokenizer
    from prefdata.train.hardware import check_fits, estimate_memory

    reward = spec.task_type == "SEQ_CLS"
    found = training_model(model, reward=reward, what=f"train {spec.name}")
    settings = recipe.prefdata
    revision = settings.get("model_revision")
    if revision and not found.hub:
        raise RecipeError(
            f"prefdata.model_revision={revision} picks a version of a hub model; {found.path} "
            "is a local folder, which has only one",
            source=recipe.source,
            column="prefdata.model_revision",
        )
    full = bool(settings["full_finetune"])
    dtype = weights_dtype(recipe, hardware)
    quantized = quantization_config(recipe, hardware)
    separate = (
        full
        and spec.reference == "policy"
        and not getattr(config, "precompute_ref_log_probs", False)
    )
    if settings["check_memory"] and quantized is None and Path(found.path).is_dir():
        estimate = estimate_memory(
            found.path, full_finetune=full, dtype=dtype, separate_reference=separate
        )
        check_fits(estimate, hardware, source=found.path)
    # New weights (a LoRA adapter, a reward head) are drawn at load or wrap time: seed first so
    # a run repeats exactly.
    set_seed(config.seed)
    tokenizer = load_tokenizer(found, revision=revision)
    kind = "reward_model" if reward else "causal_lm"
    options: dict[str, Any] = {
        "kind": kind,
        "dtype": dtype,
        "revision": revision,
        "attn_implementation": settings.get("attn_implementation"),
    }
    if quantized is not None:
        # bitsandbytes quantises as the weights load, onto this process's GPU; unquantised
        # models are left where they load and placed by the trainer.
        options.update(quantization_config=quantized, device_map={"": hardware.device_index or 0})
    policy = from_pretrained(found, **options)
    reference = None
    if separate:
        reference = from_pretrained(found, **options)
        reference.requires_grad_(False)
        reference.eval()
    if reward and policy.config.pad_token_id is None:
        policy.config.pad_token_id = tokenizer.pad_token_id
    peft = None if full else lora_config(recipe.peft, task_type=spec.task_type)
    loaded = found.describe()
    if reward and found.kind != "reward_model":
        loaded += ", with a new reward head"
    if quantized is not None:
        loaded += f", quantised {settings['quantization']} (QLoRA)"
    return Models(found.path, policy, reference, peft, tokenizer, dtype, loaded)

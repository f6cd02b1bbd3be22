"""The reference-model guard: the model DPO / KTO (and GRPO / RLOO with beta > 0) measure the
policy against must stay what it was, or the KL and implicit rewards mean nothing.

Before training (`check_reference_frozen`): a separate reference must have every parameter
frozen and share no tensor with the policy; with LoRA (the reference is the base with the
adapter disabled) every base parameter must be frozen. During training TRL can move the
reference towards the policy (`sync_ref_model`); prefdata.train.recipe refuses that unless
`prefdata.allow_reference_sync: true`, and then the report says "reference synced every N
steps" instead of claiming a frozen one.

Before and after training (`reference_checksum`): a sha256 over the bytes of every reference
tensor, stored in the report as `reference_checksum: {before, after, unchanged}`. A frozen
reference gives the same digest twice; when it does not (and no sync was allowed) the report
warns loudly.
"""

from __future__ import annotations

import hashlib
from typing import Any

from prefdata.errors import TrainingError

__all__ = [
    "check_reference_frozen",
    "reference_checksum",
    "reference_tensors",
    "trainable_parameters",
]


def _numel(param: Any) -> int:
    # DeepSpeed ZeRO-3 leaves an empty local tensor and keeps the real size in ds_numel.
    return int(getattr(param, "ds_numel", param.numel()))


def trainable_parameters(model: Any) -> int:
    """How many of `model`'s parameters train (requires_grad), at their full size under ZeRO-3."""
    return sum(_numel(p) for p in model.parameters() if p.requires_grad)


def _is_adapter_param(name: str) -> bool:
    return "lora_" in name or ".modules_to_save." in name


def _synced(trainer: Any) -> str | None:
    args = trainer.args
    if not getattr(args, "sync_ref_model", False):
        return None
    steps = getattr(args, "ref_model_sync_steps", None)
    alpha = getattr(args, "ref_model_mixup_alpha", None)
    return f"reference synced every {steps} steps (mixup alpha {alpha})"


def check_reference_frozen(trainer: Any) -> dict[str, Any]:
    """Verify the reference cannot change before training starts; raise TrainingError if it can.

    - separate reference model: every parameter has requires_grad=False and none shares
      storage with the policy (a shared tensor would be trained through the policy);
    - LoRA with the adapter disabled as reference: every base (non-adapter) parameter has
      requires_grad=False, so disabling the adapter gives back the untouched base model;
    - precomputed reference log-probabilities: nothing to freeze.

    Returns {"reference": kind, "reference_parameters": n, "trainable_parameters": n}; with an
    allowed `sync_ref_model` the kind is "reference synced every N steps (...)".
    """
    from accelerate.utils import is_peft_model

    model = trainer.model
    trainable = trainable_parameters(model)
    synced = _synced(trainer)
    ref = getattr(trainer, "ref_model", None)
    if ref is not None:
        ref = trainer.accelerator.unwrap_model(ref)
        loose = [n for n, p in ref.named_parameters() if p.requires_grad]
        if loose:
            raise TrainingError(
                f"the reference model has {len(loose)} trainable parameter(s) (e.g. {loose[0]}); "
                "it must be frozen"
            )
        # Parameters partitioned away by DeepSpeed ZeRO-3 are empty here: nothing to compare.
        policy_storage = {p.data_ptr() for p in model.parameters() if p.numel() > 0}
        shared = [
            n for n, p in ref.named_parameters() if p.numel() > 0 and p.data_ptr() in policy_storage
        ]
        if shared:
            raise TrainingError(
                f"the reference model shares {len(shared)} tensor(s) with the policy (e.g. "
                f"{shared[0]}); training would change the reference. Load it separately."
            )
        count = sum(_numel(p) for p in ref.parameters())
        return {
            "reference": synced or "separate frozen model",
            "reference_parameters": int(count),
            "trainable_parameters": int(trainable),
        }
    if is_peft_model(model):
        loose = [
            n for n, p in model.named_parameters() if p.requires_grad and not _is_adapter_param(n)
        ]
        if loose:
            raise TrainingError(
                f"{len(loose)} base parameter(s) are trainable (e.g. {loose[0]}); with LoRA the "
                "reference is the base model with the adapter disabled, so the base must be frozen"
            )
        count = sum(_numel(p) for n, p in model.named_parameters() if not _is_adapter_param(n))
        return {
            "reference": "base model with the adapter disabled",
            "reference_parameters": int(count),
            "trainable_parameters": int(trainable),
        }
    if getattr(trainer.args, "precompute_ref_log_probs", False):
        return {
            "reference": "precomputed log-probabilities",
            "reference_parameters": 0,
            "trainable_parameters": int(trainable),
        }
    raise TrainingError("no reference model, no adapter and no precomputed reference log-probs")


def reference_tensors(trainer: Any) -> list[tuple[str, Any]] | None:
    """(name, tensor) of every reference tensor, in a stable order, or None when there is no
    reference model to hash (precomputed log-probs, GRPO / RLOO with beta = 0, reward
    models, SFT, ORPO)."""
    from accelerate.utils import is_peft_model

    ref = getattr(trainer, "ref_model", None)
    if ref is not None:
        ref = trainer.accelerator.unwrap_model(ref)
        return sorted(ref.state_dict(keep_vars=True).items())
    model = trainer.model
    beta = getattr(trainer, "beta", getattr(trainer.args, "beta", None))
    if is_peft_model(model) and beta != 0:
        return sorted(
            (n, p) for n, p in model.state_dict(keep_vars=True).items() if not _is_adapter_param(n)
        )
    return None


def reference_checksum(trainer: Any) -> str | None:
    """sha256 over the names and bytes of the reference tensors (see `reference_tensors`);
    None without one. Under DeepSpeed ZeRO-3 each process hashes the shards it holds."""
    import torch

    tensors = reference_tensors(trainer)
    if tensors is None:
        return None
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in tensors:
            digest.update(name.encode() + b"\0")
            data = tensor.detach().to("cpu").contiguous().reshape(-1)
            if data.numel():
                digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()

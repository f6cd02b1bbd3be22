"""The hardware training runs on: what it is, the precision that suits it, whether the model fits.

Fields a recipe leaves unset get these choices (TRL 1.x defaults `bf16=True` and
`gradient_checkpointing=True`; on one CPU without fast bf16 a DPO step on SmolLM2 was about
ten times slower in bf16; `bench/bench_train.py --part precision` measures it on yours):

- `bf16` / `fp16`: bf16 on a GPU that supports it, fp16 on an older GPU, neither (fp32) on CPU
  and Apple MPS;
- `gradient_checkpointing` (`activation_checkpointing` in transformers 5, which warns on the
  old name that TRL 1.16 still sets): off on CPU and MPS (it only trades time for memory
  there), on for GPUs as TRL defaults;
- `report_to`: "none".

A recipe that sets `bf16: true` on a CPU keeps it: prefdata also sets `use_cpu: true`, without
which transformers refuses bf16 on a machine with no bf16 GPU, and the report warns that it
may be slower than fp32.

Several processes (`accelerate launch`, torchrun): each process selects its own GPU
(`LOCAL_RANK`) before anything asks CUDA a question, so no process opens a context on GPU 0
that is not its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefdata.errors import RecipeError, TrainingError

if TYPE_CHECKING:
    from prefdata.train.recipe import Recipe

__all__ = [
    "Hardware",
    "apply_precision",
    "check_fits",
    "detect_hardware",
    "estimate_memory",
    "friendly_oom",
    "select_rank_device",
]


@dataclass(frozen=True)
class Hardware:
    """The accelerator training will run on, as prefdata sees it before training starts."""

    accelerator: str  # "cuda", "mps" or "cpu"
    name: str
    bf16: bool  # bf16 arithmetic is supported and fast
    devices: int
    memory_bytes: int | None  # free memory on one device (GPU) or available RAM (CPU)
    device_index: int | None = None  # this process's GPU (its LOCAL_RANK), None off CUDA

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def select_rank_device() -> int | None:
    """Make this process's GPU (LOCAL_RANK, default 0) the current CUDA device and return its
    index; None without CUDA. Called before any other CUDA query: a query first would open a
    context on GPU 0 in every process of a multi-GPU launch."""
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(os.environ.get("LOCAL_RANK", "0") or 0)
    torch.cuda.set_device(index)
    return index


def detect_hardware() -> Hardware:
    """CUDA GPU (this process's; bf16 when the GPU supports it), else Apple MPS, else CPU."""
    import torch

    index = select_rank_device()
    if index is not None:
        free: int | None
        try:
            free = int(torch.cuda.mem_get_info(index)[0])
        except RuntimeError:
            free = None
        return Hardware(
            accelerator="cuda",
            name=torch.cuda.get_device_name(index),
            bf16=bool(torch.cuda.is_bf16_supported()),
            devices=torch.cuda.device_count(),
            memory_bytes=free,
            device_index=index,
        )
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return Hardware("mps", "Apple MPS", bf16=False, devices=1, memory_bytes=_available_ram())
    return Hardware("cpu", "CPU", bf16=False, devices=1, memory_bytes=_available_ram())


def apply_precision(hw: Hardware, recipe: Recipe, fields: Mapping[str, Any]) -> None:
    """Set bf16 / fp16 / activation checkpointing / report_to where the recipe did not (see the
    module doc); `fields` are the TRL config's fields."""
    user = recipe.user_fields
    if "bf16" not in user and "fp16" not in user:
        if hw.accelerator == "cuda":
            recipe.trl["bf16"] = hw.bf16
            recipe.trl["fp16"] = not hw.bf16
        else:
            recipe.trl["bf16"] = False
            recipe.trl["fp16"] = False
        mode = "bf16" if recipe.trl["bf16"] else "fp16" if recipe.trl["fp16"] else "fp32"
        recipe.notes.append(f"precision {mode} chosen for {hw.accelerator} ({hw.name})")
    elif "bf16" not in user:
        # fp16 chosen by the user: TRL would still default bf16 to `not fp16`, which is False.
        recipe.trl["bf16"] = False
    if recipe.trl.get("bf16") and hw.accelerator == "cuda" and not hw.bf16:
        raise RecipeError(
            f"bf16=true but this GPU ({hw.name}) does not support bf16; use fp16=true or drop "
            "bf16 and let prefdata choose",
            source=recipe.source,
            column="bf16",
        )
    if recipe.trl.get("bf16") and hw.accelerator == "cpu":
        if "use_cpu" not in user:
            # transformers refuses bf16 without a bf16 GPU unless use_cpu says the CPU is meant.
            recipe.trl["use_cpu"] = True
        recipe.warnings.append(
            "bf16=true on cpu: kept (use_cpu=true set so transformers accepts it); bf16 "
            "autocast on a CPU can be much slower than fp32 (measure it: bench/bench_train.py "
            "--part precision); drop bf16 to let prefdata choose fp32"
        )
    elif recipe.trl.get("bf16") and hw.accelerator != "cuda":
        recipe.warnings.append(
            f"bf16=true on {hw.accelerator}: mixed precision there is often slower than fp32; "
            "drop bf16 to let prefdata choose"
        )
    if not {"gradient_checkpointing", "activation_checkpointing"} & user:
        # TRL's default is on; it only trades time for memory, which a CPU rarely needs.
        wanted = hw.accelerator == "cuda"
        # transformers 5 renamed the field and warns on the old name, which TRL 1.16 still
        # defaults: setting the new one keeps TRL's choice on GPUs without the warning.
        name = (
            "activation_checkpointing"
            if "activation_checkpointing" in fields
            else "gradient_checkpointing"
        )
        recipe.trl[name] = wanted
    if "report_to" not in user:
        recipe.trl["report_to"] = "none"


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def estimate_memory(
    path: str, *, full_finetune: bool, dtype: str, separate_reference: bool
) -> dict[str, Any]:
    """A lower bound on training memory from the parameter count (no activations).

    Full fine-tuning with AdamW: weights + fp32 gradients + two fp32 moments (+ a reference copy
    when it is separate). LoRA: the frozen weights (adapters are small). Returns parameters and
    bytes.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in meta.parameters())
    width = torch.tensor([], dtype=getattr(torch, dtype)).element_size()
    need = params * width
    if full_finetune:
        need += params * (4 + 8)
        if separate_reference:
            need += params * width
    return {"parameters": int(params), "bytes_lower_bound": int(need)}


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_fits(estimate: Mapping[str, Any], hw: Hardware, *, source: str) -> None:
    """Refuse early when the lower bound already exceeds the free memory of one device."""
    if os.environ.get("WORLD_SIZE", "1") != "1" or hw.memory_bytes is None:
        return  # sharded or unknown: the estimate per device is not known here
    need = int(estimate["bytes_lower_bound"])
    if need > hw.memory_bytes:
        raise TrainingError(
            f"{source} does not fit: training needs at least {_gib(need)} for weights, gradients "
            f"and optimizer state ({estimate['parameters']:,} parameters), and {hw.accelerator} "
            f"has {_gib(hw.memory_bytes)} free. Try LoRA (prefdata.full_finetune=false), "
            "QLoRA on a GPU (prefdata.quantization=4bit), precompute_ref_log_probs=true, bf16 "
            "weights (prefdata.model_dtype=bfloat16), or several GPUs with "
            "train/accelerate/zero3.yaml. Set prefdata.check_memory=false to try anyway."
        )


_OOM_ADVICE = (
    "lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the effective "
    "batch), lower max_length, set activation_checkpointing=true (gradient_checkpointing before "
    "transformers 5), keep LoRA "
    "(prefdata.full_finetune=false), set precompute_ref_log_probs=true, or shard the model over "
    "several GPUs with --launcher accelerate --accelerate-config train/accelerate/zero3.yaml"
)


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, MemoryError):
        return True
    text = str(err).lower()
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text


@contextlib.contextmanager
def friendly_oom() -> Iterator[None]:
    """Turn an out-of-memory error inside the block into a TrainingError with advice."""
    try:
        yield
    except (RuntimeError, MemoryError) as err:
        if _is_oom(err):
            raise TrainingError(
                f"out of memory during training ({err}). Try: {_OOM_ADVICE}"
            ) from err
        raise

"""Launching training on several GPUs or machines through `accelerate launch`.

`prefdata train METHOD ... --launcher accelerate --accelerate-config CONFIG` runs
`accelerate_command(...)`: the same training, started by accelerate in one process per GPU
(`python -m prefdata.train METHOD ...` in each). TRL's trainers handle the distribution (DDP,
DeepSpeed ZeRO, FSDP) from the accelerate config; only the main process writes the report
and the saved model. Configs for DDP, ZeRO-3 and FSDP2 are in train/accelerate/.

Before anything starts, `check_launch` reads the config and refuses, in one line, what cannot
work here: a GPU config asking for more processes than this machine has GPUs (accelerate
would otherwise start that many independent single-process runs, all writing the same output
folder), and a DeepSpeed config without DeepSpeed installed.

Multi-node: run the same command on every machine with the machine's rank, e.g.
`accelerate_args=["--num_machines", "2", "--machine_rank", "0", "--main_process_ip",
"10.0.0.1", "--main_process_port", "29500"]` on the first and `--machine_rank 1` on the second
(or put those keys in a copy of the config file); see train/README.md.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefdata.errors import InputError, MissingExtraError, TrainingError

__all__ = ["accelerate_command", "check_launch", "launch"]

_GPU_TYPES = ("MULTI_GPU", "DEEPSPEED", "FSDP")


def _read_config(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"cannot read the accelerate config: {err}", source=path) from None
    if not isinstance(data, dict):
        raise InputError("an accelerate config is a mapping of keys", source=path)
    return data


def _processes(config: dict[str, Any], accelerate_args: Sequence[str]) -> int:
    args = list(accelerate_args)
    for i, arg in enumerate(args):
        if arg == "--num_processes" and i + 1 < len(args):
            return int(args[i + 1])
        if arg.startswith("--num_processes="):
            return int(arg.split("=", 1)[1])
    return int(config.get("num_processes") or 1)


def check_launch(
    accelerate_config: str | Path | None,
    accelerate_args: Sequence[str] = (),
    *,
    gpus: int | None = None,
) -> dict[str, Any]:
    """Refuse a launch that cannot work on this machine (see the module doc); returns what it
    checked: distributed type, processes, GPUs. `gpus`: this machine's GPU count (default
    torch.cuda.device_count())."""
    if accelerate_config is None:
        return {"distributed_type": None}
    path = Path(accelerate_config)
    if not path.is_file():
        raise InputError("no such accelerate config file", source=str(path))
    config = _read_config(path)
    kind = str(config.get("distributed_type") or "NO")
    processes = _processes(config, accelerate_args) * int(config.get("num_machines") or 1)
    per_machine = _processes(config, accelerate_args)
    checked: dict[str, Any] = {"distributed_type": kind, "num_processes": processes}
    deepspeed = kind == "DEEPSPEED" or bool(config.get("deepspeed_config"))
    if deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise MissingExtraError(
            f"{path} is a DeepSpeed config and DeepSpeed is not installed: pip install "
            "deepspeed (or use train/accelerate/fsdp.yaml, which needs only PyTorch)"
        )
    if kind in _GPU_TYPES and not config.get("use_cpu"):
        if gpus is None:
            import torch

            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        checked["gpus"] = gpus
        if gpus < per_machine:
            raise TrainingError(
                f"{path} starts {per_machine} processes, one per GPU, and this machine has "
                f"{gpus} GPU(s). Set num_processes (or --num_processes) to at most {gpus}"
                + ("" if gpus else ", or train without --launcher accelerate")
            )
    return checked


def accelerate_command(
    method: str,
    *,
    recipe: str | Path | None,
    data: str | Path,
    out: str | Path,
    model: str | Path = "smollm2",
    overrides: Sequence[str] = (),
    accelerate_config: str | Path | None = None,
    accelerate_args: Sequence[str] = (),
    eval_data: str | Path | None = None,
    merge: bool = False,
) -> list[str]:
    """The argv that starts `prefdata.train` under `accelerate launch` with this interpreter,
    after `check_launch` (`recipe` None: the built-in recipe)."""
    check_launch(accelerate_config, accelerate_args)
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config is not None:
        command += ["--config_file", str(accelerate_config)]
    command += [*accelerate_args, "-m", "prefdata.train", method]
    if recipe is not None:
        command += ["--recipe", str(recipe)]
    command += ["--data", str(data), "--model", str(model), "-o", str(out)]
    if eval_data is not None:
        command += ["--eval-data", str(eval_data)]
    if merge:
        command.append("--merge")
    return command + list(overrides)


def launch(command: Sequence[str]) -> int:
    """Run a command from accelerate_command; returns its exit status."""
    return subprocess.call(list(command))

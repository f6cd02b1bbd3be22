"""Launching training on several GPUs or machines through `accelerate launch`.

`prefdata train METHOD ... --launcher accelerate --accelerate-config CONFIG` runs
`accelerate_command(...)`: the same training, started by accelerate in one process per GPU
(`python -m prefdata.train METHOD ...` in each). TRL's trainers handle the distribution (DDP,
DeepSpeed ZeRO, FSDP) from the accelerate config; only the main process writes the report
and the saved model. Configs for DDP, ZeRO-3 and FSDP2 are in train/accelerate/.

Multi-node: run the same command on every machine with the machine's rank, e.g.
`accelerate_args=["--num_machines", "2", "--machine_rank", "0", "--main_process_ip",
"10.0.0.1", "--main_process_port", "29500"]` on the first and `--machine_rank 1` on the second
(or put those keys in a copy of the config file); see train/README.md.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from prefdata.errors import InputError

__all__ = ["accelerate_command", "launch"]


def accelerate_command(
    method: str,
    *,
    recipe: str | Path,
    data: str | Path,
    out: str | Path,
    model: str | Path = "smollm2",
    overrides: Sequence[str] = (),
    accelerate_config: str | Path | None = None,
    accelerate_args: Sequence[str] = (),
    eval_data: str | Path | None = None,
) -> list[str]:
    """The argv that starts `prefdata.train` under `accelerate launch` with this interpreter."""
    if accelerate_config is not None and not Path(accelerate_config).is_file():
        raise InputError("no such accelerate config file", source=str(accelerate_config))
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config is not None:
        command += ["--config_file", str(accelerate_config)]
    command += [*accelerate_args, "-m", "prefdata.train", method]
    command += ["--recipe", str(recipe), "--data", str(data), "--model", str(model), "-o", str(out)]
    if eval_data is not None:
        command += ["--eval-data", str(eval_data)]
    return command + list(overrides)


def launch(command: Sequence[str]) -> int:
    """Run a command from accelerate_command; returns its exit status."""
    return subprocess.call(list(command))

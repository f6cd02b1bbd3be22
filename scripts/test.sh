#!/usr/bin/env bash
# Set up (with test tools) and run every check: ruff, mypy on prefdata/, the whole pytest suite.
# Usage: bash scripts/test.sh [pytest args]   e.g. bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/setup.sh --dev
# The annotation server's own venv (its pins clash with ours); idempotent, ~0.1 s when ready.
bash annotate/setup.sh
# vLLM's own venv, for the tests that start a real vLLM server; idempotent (<1 s when ready).
bash scripts/vllm-env.sh
echo "== ruff"; .venv/bin/ruff check prefdata tests bench annotate
echo "== mypy"; .venv/bin/mypy prefdata
echo "== pytest"
set +e
# One torch thread per xdist worker: two workers on two cores, each wanting both cores,
# made a decode step ~8x slower. The Argilla tests share one server (--dist loadgroup).
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
    echo "pytest collected no tests: that is a failure, not a pass" >&2
    exit 1
fi
exit $rc

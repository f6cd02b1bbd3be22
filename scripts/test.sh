#!/usr/bin/env bash
# Set up (with test tools) and run every check: ruff, mypy on prefdata/, the whole pytest suite.
# Usage: bash scripts/test.sh [pytest args]   e.g. bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/setup.sh --dev
echo "== ruff"; .venv/bin/ruff check prefdata tests bench
echo "== mypy"; .venv/bin/mypy prefdata
echo "== pytest"
set +e
.venv/bin/python -m pytest -n 2 "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
    echo "pytest collected no tests: that is a failure, not a pass" >&2
    exit 1
fi
exit $rc

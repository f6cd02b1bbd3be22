#!/usr/bin/env bash
# Create annotate/.venv: argilla-server 2.8.0 and its fixed dependencies (requirements.txt,
# exact versions in requirements.lock). Usage: bash annotate/setup.sh [--force]
# Idempotent and fast on re-runs: when the venv was built from the same requirements it only
# checks that the server imports (about a second). Needs Python 3.9+ (python3, or $PYTHON).
# Redis (redis-server) must be installed separately: Debian / Ubuntu `apt-get install redis-server`.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
stamp=.venv/.prefdata-requirements
want=$(cat requirements.txt requirements.lock | sha256sum | cut -d' ' -f1)

if [[ "${1:-}" != "--force" && -x .venv/bin/python && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && .venv/bin/python -c "import importlib.metadata as m; assert m.version('argilla-server') == '2.8.0'" 2>/dev/null; then
    echo "annotate/.venv is up to date (argilla-server 2.8.0)"
else
    [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
    .venv/bin/python -m pip --disable-pip-version-check -q install -r requirements.txt -c requirements.lock
    .venv/bin/python -m pip --disable-pip-version-check -q check
    echo "$want" > "$stamp"
    echo "annotate/.venv is set up (argilla-server 2.8.0)"
fi
if ! command -v redis-server >/dev/null 2>&1; then
    echo "warning: redis-server not found; the server needs it: apt-get install redis-server" >&2
fi

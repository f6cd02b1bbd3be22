#!/usr/bin/env bash
# Is the local Argilla server up? URL and credentials. Exit 0 running, 3 stopped. Usage: bash annotate/status.sh [--data-dir D] [--json]
exec python3 "$(dirname "$0")/service.py" status "$@"

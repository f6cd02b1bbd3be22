#!/usr/bin/env bash
# Stop the local Argilla server, its worker and its Redis (by PID). Usage: bash annotate/stop.sh [--data-dir D]
exec python3 "$(dirname "$0")/service.py" stop "$@"

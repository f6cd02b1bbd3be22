#!/usr/bin/env bash
# Start the local Argilla server (idempotent). Usage: bash annotate/start.sh [--port 6900] [--host H] [--data-dir D]
exec python3 "$(dirname "$0")/service.py" start "$@"

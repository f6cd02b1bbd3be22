#!/usr/bin/env bash
# Debian packages the tests use: chromium (report and annotation UI in a real browser) and
# redis-server (the Argilla annotation server). Installs only what is missing.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[[ ${#need[@]} -eq 0 ]] && exit 0
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 && SUDO="sudo" || {
        echo "missing Debian packages: ${need[*]}; install them as root: apt-get install ${need[*]}" >&2
        exit 1
    }
fi
echo "installing Debian packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null

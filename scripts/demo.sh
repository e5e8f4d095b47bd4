#!/usr/bin/env bash
# Installs meshnode (scripts/setup.sh) and runs `meshnode demo`: a local mesh on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/meshnode demo "$@"

#!/usr/bin/env bash
# Installs everything (scripts/setup.sh), then lints, type-checks and runs every test layer.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# --durations: the slowest tests, in every log, so the run stays within its time (docs/testing.md).
.venv/bin/python -m pytest -q -rs --durations=25 "$@"

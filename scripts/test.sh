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
if [ "$#" -gt 0 ]; then
    .venv/bin/python -m pytest -q -rs --durations=25 "$@"
else
    # The pure layers on every core, a test file per worker (a module's fixtures are made once);
    # then the layers of real processes one test at a time: they time agents that a second test
    # on the same cores would slow down.
    .venv/bin/python -m pytest -q -rs --durations=10 -n auto --dist loadfile tests/unit tests/sim
    .venv/bin/python -m pytest -q -rs --durations=25 tests/integration tests/netns
fi

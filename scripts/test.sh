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
    # the real agents on 127.0.0.1 two test files at a time (each draws its ports from a slice of
    # its own, and every mesh has its own id); the network namespaces one test at a time: their
    # faults (loss, partitions, frozen and killed hosts) are timed against the failure detector.
    .venv/bin/python -m pytest -q -rs --durations=10 -n auto --dist loadfile tests/unit tests/sim
    .venv/bin/python -m pytest -q -rs --durations=25 -n 2 --dist loadfile tests/integration
    .venv/bin/python -m pytest -q -rs --durations=25 tests/netns
fi

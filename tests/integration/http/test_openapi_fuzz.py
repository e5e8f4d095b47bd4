"""The HTTP API fuzzed from its own OpenAPI document by schemathesis, a real outside checker (issue 12).

A real agent with a replica serves its ``/openapi.json``; ``st run`` generates requests for every
operation from it (valid and invalid bodies, headers, paths) and checks every answer: never a 500,
only documented statuses, content types, headers and bodies that match the document, a correct
``Allow`` on 405. Bounded: a fixed seed and 25 examples per operation (a few seconds). The one check
left out, ``positive_data_acceptance``, expects every body the schema allows to succeed; a
declaration naming an app this node may not run is schema-valid and rightly refused (422). The one
operation left out, ``GET /v1/events``, is a stream that never ends (the dashboard's feed): a
fuzzer waiting for its end would only time out.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.agents import Mesh

EXAMPLES = 25
SEED = 20261204


def st_command() -> list[str]:
    """schemathesis's CLI from this environment (the test extra installs it)."""
    beside = Path(sys.executable).parent / "st"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("st")
    if found is None:
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'")
    return [found]


def test_schemathesis_finds_nothing_wrong(tmp_path: Path) -> None:
    with Mesh(tmp_path, 1, extra_args={0: ["--deploy", "echo=meshnode.apps.echo:Echo"]}) as mesh:
        agent = mesh.agents[0]
        command = [
            *st_command(), "run", f"{agent.url}/openapi.json",
            "--checks", "all", "--exclude-checks", "positive_data_acceptance",
            "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--request-timeout", "30",
            "--generation-deterministic", "--no-color", "--exclude-path", "/v1/events",
        ]  # fmt: skip
        # Its own working directory: st keeps a .schemathesis folder of run data there.
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
        assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
        assert "Traceback" not in agent.log_tail(100_000), agent.describe()

"""``meshnode doctor`` on a node whose process was paused: its stalls check, against real agents.

A paused agent's timers run late when it resumes; it counts each such stall
(``meshnode_stalls_total``) and its peers may have suspected it meanwhile. The doctor reads the
counter and says so, with what to look at.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.agents import AgentProcess, Mesh

FORM_TIMEOUT_S = 45.0
# Longer than the local profile's probe timeout (0.1 s) by far. A pause counts as a stall when the
# node's timers are the first thing it runs on resuming; when a peer's answer is read first, there
# is nothing late to count (mesh/stalls.py), so it takes a few pauses to see three.
PAUSE_S = 0.6
MAX_PAUSES = 20


def test_a_node_paused_three_times_is_told_it_stalls(
    start_mesh: Callable[..., Mesh],
) -> None:
    mesh = start_mesh(2)
    mesh.wait_formed(FORM_TIMEOUT_S)
    paused = mesh.agents[0]
    pauses = 0
    while stalls(paused) < 3:
        assert pauses < MAX_PAUSES, f"{pauses} pauses, {stalls(paused)} stalls\n{paused.describe()}"
        paused.send_signal(signal.SIGSTOP)
        time.sleep(PAUSE_S)  # the fault itself: a process that does not run for this long
        paused.send_signal(signal.SIGCONT)
        pauses += 1

    told = doctor(paused)
    assert told.returncode == 0, told.stdout + told.stderr  # a warning, not a failure
    line = next((line for line in told.stdout.splitlines() if "stalls" in line and "late" in line), None)
    assert line is not None and line.startswith("warn"), told.stdout
    since = re.search(r"(\d+) since it started", line)  # a pause may count twice (two timers due)
    assert since is not None and int(since.group(1)) >= 3, told.stdout
    assert "starved of CPU" in told.stdout and "throttling" in told.stdout, told.stdout


def stalls(agent: AgentProcess) -> float:
    """The agent's ``meshnode_stalls_total``."""
    for family in text_string_to_metric_families(agent.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "meshnode_stalls_total":
                return sample.value
    raise AssertionError("no meshnode_stalls_total on /metrics")


def doctor(agent: AgentProcess) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "meshnode", "doctor", "--node", agent.url]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

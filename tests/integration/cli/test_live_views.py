"""The CLI's live views with real agents: ``top``, ``deploy --wait``, predict's spinner, ``--json``.

One mesh of two agents for the module: n0 pins echo, both may host the test apps (``--app-dir``).
Every wait is a bounded poll of a condition (``wait_for``) or a command's own timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.agents import AgentProcess, Mesh, wait_for

MESHNODE = [sys.executable, "-m", "meshnode"]
ECHO = "meshnode.apps.echo:Echo"
APPS = Path(__file__).parents[1] / "serving_apps.py"
SLOW = f"{APPS}:SlowSetup"  # setup() sleeps 4 s, like a model loading
APP_DIR = ("--app-dir", str(APPS.parent))
# Agents and workers start side by side on two shared cores.
READY_TIMEOUT_S = 90.0
COMMAND_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    extra = {0: ["--deploy", f"echo={ECHO}", *APP_DIR], 1: list(APP_DIR)}
    with Mesh(tmp_path_factory.mktemp("live"), 2, extra_args=extra) as started:
        started.wait_formed(timeout=60)
        n1 = started.agents[1]
        wait_for(lambda: echo_ready(n1), READY_TIMEOUT_S, 0.2, lambda: n1.get("/v1/deployments").text)
        yield started


def echo_ready(agent: AgentProcess) -> bool:
    response = agent.get("/v1/deployments/echo")
    return response.status_code == 200 and response.json()["ready"] == 1


def meshnode(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHNODE, *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        env={**os.environ, **(env or {})},
    )


@contextlib.contextmanager
def traffic(url: str) -> Iterator[list[int]]:
    """Echo requests to `url`, one after another, until the block ends (bounded: 10000 at most)."""
    stop = threading.Event()
    codes: list[int] = []

    def send() -> None:
        with httpx.Client(timeout=10) as client:
            for i in range(10_000):
                if stop.is_set():
                    return
                codes.append(client.post(f"{url}/v1/predict/echo", json={"i": i}).status_code)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(codes) >= 5, 30, 0.05, "traffic to start")
        yield codes
    finally:
        stop.set()
        thread.join(timeout=15)


def test_top_once_shows_both_nodes_and_the_measured_rate(mesh: Mesh) -> None:
    n1 = mesh.agents[1]
    with traffic(n1.url):
        shown = meshnode("top", "--once", "--interval", "1", "--node", n1.url)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "\x1b[" not in text and "Traceback" not in text + shown.stderr
    assert text.startswith(f"meshnode top  n1's view ({n1.url})  2/2 nodes up"), text
    nodes = re.search(r"^NODES \(2 of 2 up\)\n(.*?)\n\n", text, re.S | re.M)
    assert nodes is not None, text
    rows = {
        line.split()[1] if line.startswith("*") else line.split()[0]: line
        for line in nodes[1].splitlines()[1:]
    }
    assert set(rows) == {"n0", "n1"} and rows["n1"].startswith("*"), text
    assert " alive " in rows["n0"] and "echo ready" in rows["n0"], text
    echo = re.search(r"^echo\s+1/1\s+([\d.]+)\s+([\d.]+)\s", text, re.M)
    assert echo is not None, text
    assert float(echo[1]) > 0 and float(echo[2]) == 0, text  # requests flowed, none failed
    assert re.search(r"^DEPLOYMENTS \(rates over [\d.]+ s\)$", text, re.M), text


def test_top_json_is_the_same_data(mesh: Mesh) -> None:
    n0 = mesh.agents[0]
    with traffic(n0.url):
        shown = meshnode("top", "--json", "--once", "--interval", "1", "--node", n0.url)
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert (body["self"], body["members"], body["rates"], body["error"]) == (
        "n0",
        {"total": 2, "alive": 2},
        "measured",
        None,
    )
    nodes = {node["name"]: node for node in body["nodes"]}
    assert nodes["n0"]["replicas"] == {"echo": "ready"} and nodes["n0"]["rps"] > 0
    echo = next(item for item in body["deployments"] if item["name"] == "echo")
    assert echo["ready"] == 1 and echo["rps"] > 0 and echo["errors_per_s"] == 0
    assert echo["mean_ms"] > 0 and echo["p99_ms"] >= echo["mean_ms"] * 0.5


def test_deploy_wait_shows_the_replicas_becoming_ready(mesh: Mesh) -> None:
    n0, _ = mesh.agents
    try:
        made = meshnode(
            *("deploy", "slow", SLOW, "--min-replicas", "2", "--max-replicas", "2"),
            *("--wait", "--timeout", str(READY_TIMEOUT_S), "--node", n0.url),
        )
        assert made.returncode == 0, made.stdout + made.stderr
        assert made.stdout.splitlines()[0] == f"declared slow: 2..2 replicas of {SLOW}"
        assert re.fullmatch(
            r"slow ready: 2 of 2 replicas \(n0, n1\) in [\d.]+ s", made.stdout.splitlines()[-1]
        )
        # Not a terminal: a line per step on stderr, each replica seen starting, then ready.
        steps = made.stderr.splitlines()
        for node in ("n0", "n1"):
            ready = steps.index(f"slow: {node} ready")
            assert any(line.startswith(f"slow: {node} starting") for line in steps[:ready]), steps
        again = meshnode("deploy", "slow", SLOW, "--min-replicas", "2", "--wait", "--json", "--node", n0.url)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["ready"] == 2  # already ready: at once
    finally:
        gone = meshnode("undeploy", "slow", "--json", "--node", n0.url)
    assert gone.returncode == 0 and isinstance(json.loads(gone.stdout), dict), gone.stderr


def test_deploy_wait_gives_up_with_the_reason(mesh: Mesh) -> None:
    n0, _ = mesh.agents
    try:
        # Long enough for a few placement rounds to find that no node has a GPU.
        stuck = meshnode(
            "deploy", "gpu", ECHO, "--device", "cuda", "--wait", "--timeout", "15", "--node", n0.url
        )
        assert stuck.returncode == 1, stuck.stdout + stuck.stderr
        error = [line for line in stuck.stderr.splitlines() if line.startswith("Error:")]
        assert len(error) == 1 and error[0].startswith("Error: not ready after 15 s: gpu: 0 of 1 ready"), (
            error
        )
        assert "cuda" in error[0]
    finally:
        meshnode("undeploy", "gpu", "--node", n0.url)


def run_in_terminal(args: list[str], timeout_s: float) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as its stdout and stderr: its exit code and output."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec, or exit at once
        try:
            os.execv(sys.executable, [sys.executable, "-m", "meshnode", *args])
        finally:
            os._exit(127)
    output = b""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the child closed the terminal: it has exited
                    break
                if not chunk:
                    break
                output += chunk
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_predict_shows_a_spinner_while_a_replica_cold_starts(mesh: Mesh) -> None:
    n0, _ = mesh.agents
    # Scaled to zero, with the quick autoscaling knobs of the placement tests.
    fast = {"window_s": 1.0, "scale_up_delay_s": 0.5, "scale_down_delay_s": 3.0, "idle_timeout_s": 3.0}
    spec = {"app": SLOW, "min_replicas": 0, "max_replicas": 1, "autoscaling": fast}
    assert httpx.put(f"{n0.url}/v1/deployments/cold", json=spec, timeout=10).status_code == 201
    try:
        code, output = run_in_terminal(["predict", "cold", "--node", n0.url, "--timeout", "90"], 120)
    finally:
        httpx.delete(f"{n0.url}/v1/deployments/cold", timeout=10)
    assert code == 0, output
    assert "cold: waiting for the answer" in output, output  # the spinner's words, on the terminal
    assert '"ready": true' in output, output
    assert "Traceback" not in output


def test_every_json_output_parses(mesh: Mesh, tmp_path: Path) -> None:
    n1 = mesh.agents[1]
    node = ("--node", n1.url)
    outputs: dict[str, Any] = {}
    for name, args in {
        "peers": ["peers", "--json", *node],
        "deployments": ["deployments", "--json", *node],
        "keys": ["keys", "list", "--json", *node],
        "jobs": ["jobs", "ls", "--json", *node],
        "predict": ["predict", "echo", '{"q": 1}', "--json", *node],
    }.items():
        result = meshnode(*args)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        outputs[name] = json.loads(result.stdout)
    assert {member["name"] for member in outputs["peers"]["members"]} == {"n0", "n1"}
    assert "echo" in {item["name"] for item in outputs["deployments"]["deployments"]}
    assert outputs["keys"] == {"keys": []} and outputs["jobs"] == {"jobs": [], "next_cursor": None}
    assert outputs["predict"]["data"] == {"echo": {"q": 1}} and outputs["predict"]["route"][0] == "n1"
    token = meshnode("token", "--json", env={"MESHNODE_HOME": str(tmp_path)})
    assert json.loads(token.stdout)["source"] == "created", token.stderr


def test_top_keeps_going_when_its_node_goes_away(mesh: Mesh) -> None:
    n0, n1 = mesh.agents
    command = [*MESHNODE, "top", "--json", "--interval", "0.5", "--node", n1.url]
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
            try:
                assert process.stdout is not None and process.stderr is not None
                first = json.loads(process.stdout.readline())
                assert first["answered_by"] == n1.url and first["error"] is None, first
                n1.kill()
                # A frame every 0.5 s whatever happens; bounded by count (and the pytest timeout).
                for _ in range(200):
                    frame = json.loads(process.stdout.readline())
                    if frame["answered_by"] == n0.url:
                        break
                assert frame["self"] == "n0", frame
                assert frame["notes"][0].startswith(f"{n1.url} does not answer"), frame
                process.send_signal(signal.SIGINT)
                assert process.wait(timeout=15) == 0
                assert "Traceback" not in process.stderr.read()
            finally:
                if process.poll() is None:
                    process.kill()
    finally:
        n1.restart()
        n1.wait_ready()

"""The command line with real agents on 127.0.0.1: `meshnode demo` and `meshnode peers`."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from meshnode.cli.demo.command import DEMO_FORM_TIMEOUT_S, DEMO_REFRESH_S
from tests.integration.agents import free_port_block, wait_for

DEADLINE_S = 30.0
# The demo's live view runs this long: a few of its refreshes (DEMO_REFRESH_S).
LIVE_S = 3 * DEMO_REFRESH_S + 1
# Graceful leave (AgentConfig.leave_timeout_s) plus shutdown, with slack for a slow machine.
STOP_TIMEOUT_S = 15.0
MESHNODE = [sys.executable, "-m", "meshnode"]


def is_meshnode_process(pid: int) -> bool:
    """Whether ``pid`` is still a running meshnode (a reused pid running something else is not)."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and "meshnode" in " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return False


def stop_process(process: subprocess.Popen[str]) -> None:
    """SIGTERM, a bounded wait, then SIGKILL; by pid, only for a process this test started."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def agent(tmp_path: Path, name: str, *extra: str) -> Iterator[str]:
    """One real agent on free ports; yields its HTTP URL once it answers /v1/mesh."""
    http_port = free_port_block(2)
    mesh_port = http_port + 1
    log_path = tmp_path / f"{name}.log"
    command = [*MESHNODE, "join", "--profile", "local", "--name", name, *(extra or ["--no-mdns"])]
    command += ["--http", f"127.0.0.1:{http_port}", "--mesh", f"127.0.0.1:{mesh_port}"]
    command += ["--data-dir", str(tmp_path / name)]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{http_port}"
    try:

        def serving() -> bool:
            assert process.poll() is None, f"agent exited early:\n{log_path.read_text()}"
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/v1/mesh", timeout=1.0).status_code == 200
            return False

        wait_for(
            serving, DEADLINE_S, interval=0.1, message=lambda: f"agent did not serve:\n{log_path.read_text()}"
        )
        yield url
    finally:
        stop_process(process)


def test_peers_shows_a_running_agent(tmp_path: Path) -> None:
    with agent(tmp_path, "itest-peer") as url:
        result = subprocess.run(
            [*MESHNODE, "peers", "--node", url], capture_output=True, text=True, timeout=DEADLINE_S
        )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "itest-peer" in line]
    assert len(rows) == 1, result.stdout
    assert rows[0].lstrip().startswith("*")  # the node marks itself
    assert " alive " in rows[0]
    assert url.removeprefix("http://") in rows[0]


def test_peers_discovers_an_agent_by_mdns(tmp_path: Path) -> None:
    mesh_id = f"itest-{uuid.uuid4().hex[:8]}"  # keeps other tests' nodes out of the answer
    with agent(tmp_path, "itest-mdns", "--mdns", "--interface", "127.0.0.1", "--mesh-id", mesh_id) as url:
        result = subprocess.run(
            [*MESHNODE, "peers", "--discover", "--interface", "127.0.0.1", "--mesh-id", mesh_id],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
        )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "itest-mdns" in line]
    assert len(rows) == 1, result.stdout
    assert url.removeprefix("http://") in rows[0]


def test_demo_forms_a_mesh_and_leaves_nothing_behind() -> None:
    base_port = free_port_block(6)
    result = subprocess.run(
        [*MESHNODE, "demo", "--nodes", "3", "--duration", str(LIVE_S), "--base-port", str(base_port)],
        capture_output=True,
        text=True,
        # Formation, failover (dead, rejoin), the wait for restarted replicas, the live view.
        timeout=3 * DEADLINE_S + DEMO_FORM_TIMEOUT_S + LIVE_S + STOP_TIMEOUT_S + 10,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    pids = [int(pid) for pid in re.findall(r"^started demo-\d \(pid (\d+)\)", result.stdout, re.MULTILINE)]
    assert len(pids) == 3, result.stdout
    # The failover show: the last agent is killed, seen dead by the others, restarted, back alive.
    assert re.search(r"every survivor marked demo-2 dead [\d.]+ s after SIGKILL", result.stdout), (
        result.stdout[-2000:]
    )
    assert re.search(r"back alive everywhere .* same id, incarnation (\d+) -> (\d+)", result.stdout)
    before, after = map(int, re.findall(r"incarnation (\d+) -> (\d+)", result.stdout)[0])
    assert after > before
    pids += [int(pid) for pid in re.findall(r"restarted demo-\d \(pid (\d+)\)", result.stdout)]
    assert len(pids) == 4, result.stdout
    # Requests went to every node; demo-0 hosts no echo replica, so the table's columns (who served)
    # are only the nodes with one, and demo-0's row was all forwarded.
    table = result.stdout.split("who served them (X-Mesh-Route):\n")[1].splitlines()
    assert set(table[0].split()[2:]) <= {"demo-1", "demo-2"}, table[:4]
    assert [row.split()[0] for row in table[1:4]] == ["demo-0", "demo-1", "demo-2"]
    assert sum(int(n) for n in table[1].split()[1:]) == 12
    # A chat completion streamed through the openai SDK, entering demo-0 and generated on demo-1.
    chat = re.search(r"chat +-> openai SDK, stream=True, entering \S+ +\[route demo-0,demo-1]", result.stdout)
    assert chat is not None, result.stdout[:4000]
    pieces = re.search(r"(\d+) pieces, first after \d+ ms", result.stdout)
    assert pieces is not None and int(pieces[1]) > 1, result.stdout[:4000]
    # The kill -9 happened under traffic, and no request failed.
    traffic = re.search(
        r"(\d+) echo requests sent to the survivors during the kill and restart: (\d+) failed", result.stdout
    )
    assert traffic is not None and int(traffic[1]) >= 20 and int(traffic[2]) == 0, result.stdout[-2000:]
    # One deployment declared on one node, placed on two by every node alike, and served again after
    # the kill and restart.
    assert re.search(r"placement chose demo-\d, demo-\d \(every node computed the same\)", result.stdout)
    # Re-converged is said only above a table that shows it: every replica ready, as many as desired.
    after_restart = result.stdout.split("after the kill and restart, placement re-converged")[1]
    table = after_restart.split("\nwatching every")[0].splitlines()[1:]
    header = table[0].split()
    assert header[:8] == ["NAME", "APP", "MIN", "MAX", "PINNED", "DESIRED", "READY", "REPLICAS"], table
    # Rows name an app (module:Class) second; the lines after them are reasons and notes.
    rows = [line.split(None, 7) for line in table[1:] if ":" in line.split()[1]]
    assert {row[0] for row in rows} == {"chat", "echo", "embeddings", "placed", "stream", "t2i"}, table
    for _name, _app, _min, _max, _pinned, desired, ready, replicas in rows:
        assert ready == desired and "starting" not in replicas, table
    assert re.search(
        r"^placed\s+meshnode.apps.echo:Echo\s+2\s+2\s+0\s+2\s+2\s", after_restart, re.MULTILINE
    ), after_restart
    # Not a terminal: the live view printed its table once, then only changes (none while it ran).
    live = result.stdout.split("not a terminal, so after this table only changes are printed")[1]
    assert len(re.findall(r"demo-0's view at", live)) == 1, live
    assert len([line for line in live.splitlines() if line.split()[:2] == ["NAME", "ID"]]) == 1, live
    # The first table, printed once the mesh formed: three demo rows, all alive.
    before_formed = result.stdout.split("mesh of 3 formed in")[0].splitlines()
    header = next(index for index, line in enumerate(before_formed) if line.split()[:2] == ["NAME", "ID"])
    rows = before_formed[header + 1 :]
    assert len(rows) == 3, result.stdout
    assert all(" alive " in row for row in rows), result.stdout
    assert re.search(r"mesh of 3 formed in \d+\.\d s", result.stdout)
    # Every agent left gracefully on SIGTERM; none needed the SIGKILL fallback.
    assert "killing it" not in result.stdout, result.stdout
    # The demo waited for its children, so they are gone already; allow only for reaping by init.
    wait_for(
        lambda: not any(is_meshnode_process(pid) for pid in pids),
        5.0,
        interval=0.1,
        message=lambda: f"still running: {[pid for pid in pids if is_meshnode_process(pid)]}",
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_demo_stops_its_agents_on_a_signal(signum: int) -> None:
    base_port = free_port_block(4)
    process = subprocess.Popen(
        [*MESHNODE, "demo", "--nodes", "2", "--base-port", str(base_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        # Reading blocks on the demo's output; the pytest timeout bounds a demo that hangs.
        for line in process.stdout:
            lines.append(line)
            if "formed in" in line:
                break
        assert any("formed in" in line for line in lines), "".join(lines)
        process.send_signal(signum)
        output, _ = process.communicate(timeout=STOP_TIMEOUT_S + 5)
    finally:
        stop_process(process)
    text = "".join(lines) + output
    assert process.returncode == 0, text
    assert "demo stopped" in text
    assert "killing it" not in text, text
    pids = [int(pid) for pid in re.findall(r"started demo-\d \(pid (\d+)\)", text)]
    assert len(pids) == 2
    assert not [pid for pid in pids if is_meshnode_process(pid)]


def test_join_on_a_data_port_in_use_exits_with_a_clear_error(tmp_path: Path) -> None:
    http_port = free_port_block(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", http_port + 2))
        taken.listen()
        command = [*MESHNODE, "join", "--profile", "local", "--name", "busy", "--no-mdns"]
        command += ["--http", f"127.0.0.1:{http_port}", "--mesh", f"127.0.0.1:{http_port + 1}"]
        command += ["--data", f"127.0.0.1:{http_port + 2}", "--data-dir", str(tmp_path / "busy")]
        result = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE_S)
    assert result.returncode != 0
    assert f"cannot bind the data plane on 127.0.0.1:{http_port + 2}" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr

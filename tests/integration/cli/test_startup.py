"""Start-up with real ``meshnode join`` processes: clear refusals, seeds that say why, clean workers.

- every port the agent binds (HTTP, mesh, data), when taken, ends the start with one line naming the
  flag and the address, and exit code 2;
- a ``meshnode.db`` that is there but unreadable stops the start (exit 2) and is left as it was;
- a seed that does not answer is named in a WARNING within seconds, with the reason, and the node
  says so (INFO) once one answers;
- a worker holds none of the agent's descriptors: not one the agent inherited (a lock of ``flock``,
  here a file the test passes with ``pass_fds``), not the agent's sockets;
- ``--advertise-mesh`` and ``--advertise-data`` are what the node tells peers (its own ``/v1/mesh``
  entry) while its sockets bind ``--mesh`` and ``--data``; an address peers could not dial (a
  wildcard, or loopback while a seed is on another machine), given or derived from a bind, is
  refused with one line and exit code 2.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from meshnode.config import AgentConfig
from meshnode.store import DB_FILENAME
from tests.integration.agents import HOST, AgentProcess, free_port, wait_for

# Python start-up and the agent's imports on a busy 2-core machine, then the refusal.
REFUSAL_TIMEOUT_S = 60.0
# The first seed warning comes after seed_warn_after_s; the rest is start-up on a busy machine.
FIRST_WARNING_S = AgentConfig(name="test").seed_warn_after_s
WARNING_TIMEOUT_S = FIRST_WARNING_S + 30.0
# The echo app's worker: Python start-up and imports, then setup().
REPLICA_TIMEOUT_S = 60.0


def join(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``meshnode join`` on free loopback ports (unless `args` name them) until it exits."""
    command = [sys.executable, "-m", "meshnode", "join", "--name", "startup", "--no-mdns"]
    command += ["--profile", "local", "--data-dir", str(tmp_path / "node")]
    for flag in ("--http", "--mesh", "--data"):
        if flag not in args:
            command += [flag, f"{HOST}:0"]
    env = {**os.environ, "MESHNODE_TOKEN": secrets.token_urlsafe(32)}
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=REFUSAL_TIMEOUT_S, env=env, check=False
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one ERROR line of a refused start; fails unless the exit code is 2 and nothing else broke."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1, output
    return errors[0]


ROLES = [("--http", "the HTTP API"), ("--mesh", "the mesh socket"), ("--data", "the data plane")]


@pytest.mark.parametrize(("flag", "role"), ROLES)
def test_every_port_in_use_is_one_clear_line_and_exit_code_2(tmp_path: Path, flag: str, role: str) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = join(tmp_path, flag, f"{HOST}:{port}")
    line = one_error_line(result)
    assert f"cannot bind {role} on {HOST}:{port} ({flag}): port {port} is in use there" in line, line
    assert f"give {flag} a free port" in line, line
    assert "Errno" not in line, line


def test_an_address_of_no_interface_here_says_so(tmp_path: Path) -> None:
    # TEST-NET-1 (RFC 5737): never an address of this machine, and binding sends nothing anywhere.
    line = one_error_line(join(tmp_path, "--http", "192.0.2.1:0"))
    assert "(--http): no interface of this machine has the address 192.0.2.1" in line, line


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty (0 bytes"),
        (b"\x00garbage\xff" * 500, "is unreadable (file is not a database)"),
    ],
)
def test_an_unreadable_node_database_stops_the_start_and_is_kept(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    database = tmp_path / "node" / DB_FILENAME
    database.parent.mkdir()
    database.write_bytes(content)
    line = one_error_line(join(tmp_path))
    assert f"node database {database} {problem}" in line, line
    assert f"move the file aside, e.g. mv {database} {database}.broken" in line, line
    assert database.read_bytes() == content
    # Nothing else happened in the data dir before the refusal (no new identity anywhere).
    assert sorted(path.name for path in database.parent.iterdir()) == [DB_FILENAME]


def seed_warnings(agent: AgentProcess, seed: str) -> list[str]:
    """The WARNING lines of `agent`'s log about `seed`."""
    lines = agent.log_tail(10_000).splitlines()
    return [line for line in lines if " WARNING " in line and f"seed {seed}:" in line]


def log_time(line: str) -> float:
    """Seconds since midnight of a log line's timestamp (``2026-12-04 00:49:07,507 ...``)."""
    clock = line.split()[1]
    hours, minutes, seconds = clock.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_a_seed_that_does_not_answer_is_named_with_why_until_one_answers(tmp_path: Path) -> None:
    mesh_id = f"test-{uuid.uuid4().hex[:12]}"
    token = secrets.token_urlsafe(32)
    # Planned first, started last: its mesh address is the seed nothing listens on yet.
    seed = AgentProcess("seed", tmp_path, mesh_id=mesh_id, token=token)
    joiner = AgentProcess("joiner", tmp_path, mesh_id=mesh_id, token=token, seeds=[seed.mesh])
    try:
        joiner.start()
        wait_for(
            lambda: seed_warnings(joiner, seed.mesh),
            WARNING_TIMEOUT_S,
            interval=0.1,
            message=lambda: f"no warning about the seed\n{joiner.describe()}",
        )
        warning = seed_warnings(joiner, seed.mesh)[0]
        assert "nothing listens on its port (connection refused)" in warning, warning
        said = rf"No answer from {re.escape(seed.mesh)} after \d+ s; still trying"
        assert re.search(said, warning), warning
        assert joiner.get("/ready").status_code == 503
        seed.start()
        joiner.wait_ready()
        wait_for(
            lambda: "joined the mesh: seed at" in joiner.log_tail(10_000),
            WARNING_TIMEOUT_S,
            interval=0.1,
            message=lambda: f"no INFO line on joining\n{joiner.describe()}",
        )
        # Reports come at doubling gaps (the first one twice the first wait), never once per join
        # retry: the local profile retries the seeds at least every 5 s.
        times = [log_time(line) for line in seed_warnings(joiner, seed.mesh)]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert all(gap >= 2 * FIRST_WARNING_S - 0.5 for gap in gaps), gaps
    finally:
        joiner.stop_all()
        seed.stop_all()


def test_a_worker_holds_none_of_the_agents_descriptors(tmp_path: Path) -> None:
    held = tmp_path / "held.lock"
    agent = AgentProcess(
        "fds",
        tmp_path,
        mesh_id=f"test-{uuid.uuid4().hex[:12]}",
        extra_args=["--deploy", "echo=meshnode.apps.echo:Echo"],
    )
    # What `flock held.lock meshnode join ...` does: the agent starts with the file open on a
    # descriptor above stderr, and every process it starts would hold it too.
    with held.open("w") as lock, agent.log_path.open("ab") as log:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MESHNODE_TOKEN": agent.token}
        agent.process = subprocess.Popen(
            agent.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            pass_fds=(lock.fileno(),), start_new_session=True,
        )  # fmt: skip
        agent.started.append(agent.process)
    try:
        agent.wait_ready()

        def echo_serves() -> bool:
            agent.check_running()
            response = httpx.post(f"{agent.url}/v1/predict/echo", json={"x": 1}, timeout=5.0, trust_env=False)
            return response.status_code == 200

        wait_for(echo_serves, REPLICA_TIMEOUT_S, interval=0.2, message=agent.describe)
        workers = [
            child
            for child in psutil.Process(agent.pid).children()
            if "meshnode.serving.worker" in " ".join(child.cmdline())
        ]
        assert len(workers) == 1, [child.cmdline() for child in psutil.Process(agent.pid).children()]
        agent_fds = descriptors(agent.pid)
        assert str(held) in agent_fds.values(), "the agent should still hold what it was started with"
        # uvloop, taking over the socket of the worker's link, points the Python socket object's
        # descriptor at /dev/null, close-on-exec: the worker's own, never one it inherited.
        worker_fds = {
            fd: target
            for fd, target in descriptors(workers[0].pid).items()
            if not (target == "/dev/null" and fd > 2 and close_on_exec(workers[0].pid, fd))
        }
        shared = {
            fd: target
            for fd, target in worker_fds.items()
            if fd > 2 and target in agent_fds.values() and not target.startswith("anon_inode:")
        }
        assert not shared, f"the worker holds the agent's {shared} (all of its: {worker_fds})"
        assert str(held) not in worker_fds.values()
        # Nor copies of its own standard streams (uvloop leaves those open): the echo app's worker
        # needs its link to the agent and the event loop's descriptors, no file.
        files = {fd: target for fd, target in worker_fds.items() if fd > 2 and target.startswith("/")}
        assert not files, f"the worker holds files above stderr: {files}"
    finally:
        agent.stop_all()


def close_on_exec(pid: int, fd: int) -> bool:
    """Whether descriptor `fd` of process `pid` is closed by an ``exec`` (O_CLOEXEC in its flags)."""
    with open(f"/proc/{pid}/fdinfo/{fd}") as info:
        flags = next(line.split()[1] for line in info if line.startswith("flags:"))
    return bool(int(flags, 8) & 0o2000000)


def descriptors(pid: int) -> dict[int, str]:
    """``{fd: what it points to}`` of a process (a path, ``socket:[inode]``, ``pipe:[inode]``)."""
    found = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:  # closed while we looked
            continue
    return found


def usage_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``Error:`` line of a command line refused before the agent starts (exit code 2)."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output
    return errors[0]


def listening_ports(pid: int) -> set[int]:
    """The TCP ports a process listens on."""
    connections = psutil.Process(pid).net_connections(kind="tcp")
    return {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}


def test_advertised_addresses_are_what_the_node_tells_while_it_binds_its_own(tmp_path: Path) -> None:
    # Nothing listens on the advertised ports: as behind NAT, they are another machine's to forward.
    advertised_mesh, advertised_data = f"{HOST}:{free_port()}", f"{HOST}:{free_port()}"
    agent = AgentProcess(
        "natted",
        tmp_path,
        mesh_id=f"test-{uuid.uuid4().hex[:12]}",
        extra_args=["--advertise-mesh", advertised_mesh, "--advertise-data", advertised_data],
    )
    try:
        agent.start().wait_ready()
        me = agent.members()[agent.node_id]
        assert (me["mesh"], me["data"]) == (advertised_mesh, advertised_data), me
        bound = listening_ports(agent.pid)
        assert int(agent.mesh.rpartition(":")[2]) in bound, (agent.mesh, bound)
        assert int(advertised_mesh.rpartition(":")[2]) not in bound
        # The "up" line is logged once the node serves: /ready may answer a moment before it is written.
        up = f"mesh {advertised_mesh}, data {advertised_data}"
        wait_for(lambda: up in agent.log_tail(10_000), 10, message=agent.describe)
    finally:
        agent.stop_all()


def test_a_wildcard_advertised_address_is_refused(tmp_path: Path) -> None:
    line = usage_error(join(tmp_path, "--advertise-mesh", "0.0.0.0:8471"))
    assert line == (
        "Error: --advertise-mesh 0.0.0.0:8471: peers cannot dial 0.0.0.0; "
        "give the address they reach this node at"
    )


def test_a_loopback_advertised_address_is_refused_with_a_seed_elsewhere(tmp_path: Path) -> None:
    # A private address: the refusal comes before anything is sent to it.
    line = usage_error(join(tmp_path, "--advertise-mesh", f"{HOST}:9", "--seed", "10.1.2.3:8471"))
    assert line == (
        f"Error: --advertise-mesh {HOST}:9 is a loopback address, but seed 10.1.2.3:8471 is on another "
        "machine: peers there would dial themselves; give the address they reach this node at"
    )


def test_a_loopback_bind_with_a_seed_elsewhere_is_refused_at_start(tmp_path: Path) -> None:
    # join() binds --mesh and --data to 127.0.0.1: peers on 10.1.2.3's machine could not dial it.
    line = one_error_line(join(tmp_path, "--seed", "10.1.2.3:8471"))
    assert f"--mesh {HOST}:0 would be advertised as {HOST}, a loopback address, but seed " in line, line
    assert "bind --mesh to an address they reach, or pass --advertise-mesh HOST:PORT" in line, line

"""Real meshnode agents as child processes on 127.0.0.1, for integration tests (not a test module).

- ``AgentProcess`` runs one ``python -m meshnode join`` on its own ports and data directory, with its
  output in a log file whose tail goes into every assertion message about it.
- ``Mesh`` starts N of them, the first one the seed of the others (or all on mDNS), and stops every
  process it started, by pid, when its ``with`` block ends, also when the test failed.
- ``wait_for`` polls a condition until a deadline: tests never sleep a fixed time.

Every mesh gets a fresh ``--mesh-id``, so agents of parallel test runs on this machine (mDNS on
127.0.0.1 included) ignore each other even when a port is reused.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from meshnode.cli.config_file import without_flag_vars
from meshnode.cli.join import join
from meshnode.config import AgentConfig

__all__ = ["HOST", "AgentProcess", "Mesh", "free_port", "metric", "statuses", "stop_processes", "wait_for"]

HOST = "127.0.0.1"
# /v1/mesh is served from memory; only an overloaded or hung agent takes seconds to answer.
VIEW_TIMEOUT_S = 3.0
# Python start-up plus the fastapi/zmq/zeroconf imports, for several agents at once on 2 busy cores.
READY_TIMEOUT_S = 60.0
# A graceful stop gossips `left` for at most leave_timeout_s, then closes HTTP and the sockets.
STOP_TIMEOUT_S = AgentConfig(name="test").leave_timeout_s + 12.0
# Cleanup after a test only asks politely once; an agent still running after this is SIGKILLed.
CLEANUP_GRACE_S = AgentConfig(name="test").leave_timeout_s + 5.0
LOG_TAIL_LINES = 25
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_handed_out: set[int] = set()


# Ports handed out come from below the kernel's ephemeral range, which it draws from for every
# outgoing connection and every bind to port 0: an agent's HTTP client, a link, a probe. A port of
# that range that is free when handed out can be taken by such a connection before the agent (a
# second later, once Python started) binds it: "port in use" then fails a test now and then.
_LOWEST_PORT = 20000
_picks = random.Random(os.getpid())  # parallel runs on one machine draw different ports


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; elsewhere a guess, checked by the bind below anyway


def free_port(host: str = HOST) -> int:
    """A TCP port free on ``host`` right now that no outgoing connection will take (see above), never
    the same one twice per run."""
    return free_port_block(1, host)


def free_port_block(size: int, host: str = HOST) -> int:
    """The first of `size` consecutive ports, each as ``free_port`` gives one (for a command that
    takes a base port and counts up from it, as ``meshnode demo`` does)."""
    lowest, highest = _worker_ports(size)
    for _ in range(1000):
        base = _picks.randint(lowest, highest) if highest > lowest else 0
        block = range(base, base + size)
        if base == 0 or any(port in _handed_out for port in block):
            continue  # another agent of this run may have one and not have bound it yet
        if all(_bindable(host, port) for port in block):
            _handed_out.update(block)
            return base
    raise RuntimeError(f"no {size} free ports in a row found below the ephemeral range")


def _worker_ports(size: int) -> tuple[int, int]:
    """The lowest and highest base port of a block of `size` for this test process: with pytest-xdist,
    each worker draws from a slice of its own, so two workers never hand out the same port."""
    lowest, end = _LOWEST_PORT, _ephemeral_start()
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 0:
        width = (end - lowest) // int(count)
        lowest += int(worker[2:]) * width
        end = lowest + width
    return lowest, end - size


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> float:
    """Poll ``predicate`` until it is true; return the seconds it took, or fail after ``timeout``.

    ``message`` may be a function so that expensive diagnostics (views, log tails) are only
    gathered on failure. The predicate gets one last look at the deadline itself.
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if predicate():
            return time.monotonic() - started
        now = time.monotonic()
        if now >= deadline:
            detail = message() if callable(message) else message
            raise AssertionError(f"not true within {timeout:g} s: {detail}")
        time.sleep(min(interval, deadline - now))


def statuses(view: Mapping[str, Any]) -> dict[str, str]:
    """``{node id: status}`` from a ``/v1/mesh`` body."""
    return {member["id"]: member["status"] for member in view["members"]}


def metric(agent: AgentProcess, name: str, label: str) -> dict[str, float]:
    """One counter family of ``GET /metrics``, by the value of `label`."""
    counts: dict[str, float] = {}
    for line in agent.get("/metrics").text.splitlines():
        if line.startswith(f"{name}{{"):
            value = line.split(f'{label}="', 1)[1].split('"', 1)[0]
            counts[value] = float(line.rsplit(" ", 1)[1])
    return counts


class AgentProcess:
    """One ``meshnode join`` child process with fixed ports and data dir, restartable in place."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        mesh_id: str,
        token: str | None = None,
        seeds: Sequence[str] = (),
        mdns: bool = False,
        profile: str = "local",
        extra_args: Sequence[str] = (),
        ca: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Plan the agent; nothing runs until ``start``.

        An agent whose ``extra_args`` hold ``--tls-cert`` serves HTTPS: the harness then talks to it
        over https://, verifying its certificate against the CA file ``ca``. ``env`` adds to (or
        replaces) the agent's environment variables.
        """
        self.name = name
        self.mesh_id = mesh_id
        # The mesh's join token (MESHNODE_TOKEN); a fresh one per agent when None. "" gives none: the
        # agent finds or makes its own (its data dir, then $MESHNODE_HOME; node/trust/token.py).
        self.token = secrets.token_urlsafe(32) if token is None else token
        self.env = dict(env or {})
        self.http = f"{HOST}:{free_port()}"
        self.mesh = f"{HOST}:{free_port()}"
        self.data_dir = workdir / name
        self.log_path = workdir / f"{name}.log"
        command = [sys.executable, "-m", "meshnode", "join", "--name", name, "--profile", profile]
        command += ["--http", self.http, "--mesh", self.mesh, "--data-dir", str(self.data_dir)]
        command += ["--mesh-id", mesh_id]
        command += ["--mdns", "--interface", HOST] if mdns else ["--no-mdns"]
        for seed in seeds:
            command += ["--seed", seed]
        self.command = [*command, *extra_args]
        self.scheme = "https" if "--tls-cert" in extra_args else "http"
        self.verify: ssl.SSLContext | bool = True if ca is None else ssl.create_default_context(cafile=ca)
        self.node_id = ""
        self.process: subprocess.Popen[bytes] | None = None
        # Every process ever started for this agent (restarts included): cleanup goes by these pids.
        self.started: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """Base URL of the agent's HTTP API."""
        return f"{self.scheme}://{self.http}"

    @property
    def pid(self) -> int:
        """The pid of the current process."""
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    @property
    def running(self) -> bool:
        """Whether the current process has not exited."""
        return self.process is not None and self.process.poll() is None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> AgentProcess:
        """Start the process (output appended to the log); does not wait for it to serve."""
        assert not self.running, f"{self.name} is already running"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # A tester's own $MESHNODE_SEED, $MESHNODE_CONFIG... must not reach the agents a test plans.
        env = {**without_flag_vars(os.environ, join), "PYTHONUNBUFFERED": "1", **self.env}
        # The token this agent was planned with (none for ""), never one from the test's environment.
        env.pop("MESHNODE_TOKEN", None)
        if self.token:
            env["MESHNODE_TOKEN"] = self.token
        with self.log_path.open("ab") as log:
            log.write(f"--- test harness: starting {' '.join(self.command)}\n".encode())
            log.flush()
            # The child keeps its own copy of the log descriptor; ours closes with this block.
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own session: a Ctrl-C reaches only pytest, whose cleanup then stops the agent.
                start_new_session=True,
                preexec_fn=_die_with_parent() if sys.platform.startswith("linux") else None,
            )
        self.started.append(self.process)
        return self

    def restart(self) -> AgentProcess:
        """Start again with the same arguments: same ports, same data dir (so the same node id)."""
        return self.start()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until ``/ready`` answers 200 (joined, or alone without seeds); learn the node id."""

        def ready() -> bool:
            self.check_running()
            with contextlib.suppress(httpx.HTTPError):
                return self.get("/ready").status_code == 200
            return False

        wait_for(ready, timeout, interval=0.1, message=lambda: f"{self.name} is not ready\n{self.describe()}")
        health = self.get("/health")
        assert health.status_code == 200, f"/health answered {health.status_code}\n{self.describe()}"
        self.node_id = health.json()["node"]

    def kill(self) -> None:
        """SIGKILL: the agent vanishes without a word, as in a crash."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def send_signal(self, signum: int) -> None:
        """Signal the current process without waiting."""
        assert self.running, f"{self.name} is not running\n{self.describe()}"
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Wait for the current process to exit and return its exit code."""
        assert self.process is not None, f"{self.name} was never started"
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout:g} s\n{self.describe()}"
            ) from None

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (a graceful leave) and wait; return the exit code."""
        self.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def stop_all(self) -> None:
        """Stop every process this agent ever started (restarts included)."""
        stop_processes(self.started)

    # -- observing ---------------------------------------------------------------------------

    def get(self, path: str, timeout: float = VIEW_TIMEOUT_S) -> httpx.Response:
        """GET a path of the agent's HTTP API (no proxies from the environment)."""
        return httpx.get(f"{self.url}{path}", timeout=timeout, trust_env=False, verify=self.verify)

    def view(self) -> dict[str, Any]:
        """The agent's ``/v1/mesh`` body; fails with its log tail if it cannot be read."""
        try:
            response = self.get("/v1/mesh")
        except httpx.HTTPError as exc:
            raise AssertionError(f"cannot read {self.name}'s view: {exc!r}\n{self.describe()}") from exc
        assert response.status_code == 200, f"/v1/mesh answered {response.status_code}\n{self.describe()}"
        body: dict[str, Any] = response.json()
        return body

    def statuses(self) -> dict[str, str]:
        """``{node id: status}`` in this agent's view, itself included."""
        return statuses(self.view())

    def members(self) -> dict[str, dict[str, Any]]:
        """``{node id: member}`` in this agent's view."""
        return {member["id"]: member for member in self.view()["members"]}

    def check_running(self) -> None:
        """Fail, with the log tail, if the agent has exited."""
        assert self.process is not None, f"{self.name} was never started"
        assert self.process.poll() is None, f"{self.name} exited\n{self.describe()}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the agent's output (all its runs)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"

    def describe(self) -> str:
        """Who the agent is, whether it runs, and its log tail: for assertion messages."""
        code = None if self.process is None else self.process.poll()
        state = "running" if self.process is not None and code is None else f"exit code {code}"
        pid = self.process.pid if self.process is not None else "-"
        header = f"--- {self.name} (id {self.node_id[:8] or '?'}, pid {pid}, {state}, http {self.http}, "
        return f"{header}mesh {self.mesh}), log {self.log_path}:\n{self.log_tail()}"


class Mesh:
    """N agents on 127.0.0.1 in one fresh mesh; a context manager that always stops them all."""

    def __init__(
        self,
        workdir: Path,
        size: int,
        *,
        mdns: bool = False,
        seeded: bool = True,
        profile: str = "local",
        mesh_id: str | None = None,
        token: str | None = None,
        extra_args: Mapping[int, Sequence[str]] | None = None,
        ca: Path | None = None,
    ) -> None:
        """Plan ``size`` agents; with ``seeded`` the first is the seed of the others.

        ``extra_args`` maps an agent's index to more ``meshnode join`` arguments (``--deploy ...``);
        ``ca`` is the CA file that agents given ``--tls-cert`` there are verified against.
        """
        if size < 1:
            raise ValueError("a mesh needs at least one agent")
        self.mesh_id = mesh_id or f"test-{uuid.uuid4().hex[:12]}"
        # Every mesh has a token of its own, as two meshes on one network segment would.
        self.token = token or secrets.token_urlsafe(32)
        self.agents: list[AgentProcess] = []
        for index in range(size):
            seeds = [self.agents[0].mesh] if seeded and index > 0 else []
            agent = AgentProcess(
                f"n{index}",
                workdir,
                mesh_id=self.mesh_id,
                token=self.token,
                seeds=seeds,
                mdns=mdns,
                profile=profile,
                extra_args=(extra_args or {}).get(index, ()),
                ca=ca,
            )
            self.agents.append(agent)

    def __enter__(self) -> Mesh:
        try:
            for agent in self.agents:
                agent.start()
            for agent in self.agents:
                agent.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every process any agent of this mesh started (restarts included)."""
        # One call for all, so their graceful leaves overlap instead of adding up.
        stop_processes([process for agent in self.agents for process in agent.started])

    @property
    def ids(self) -> list[str]:
        """Node ids of every agent (known once it was ready)."""
        return [agent.node_id for agent in self.agents]

    def views(self, observers: Iterable[AgentProcess] | None = None) -> dict[str, dict[str, str]]:
        """``{agent name: {node id: status}}`` for the running observers (all by default)."""
        chosen = self.agents if observers is None else list(observers)
        return {agent.name: agent.statuses() for agent in chosen if agent.running}

    def wait_all_see(
        self,
        expected: Mapping[str, str],
        *,
        observers: Iterable[AgentProcess] | None = None,
        exact: bool = False,
        timeout: float = 30.0,
    ) -> float:
        """Wait until every observer sees each node of ``expected`` in its status; return seconds.

        With ``exact`` the views must list exactly those nodes, no more.
        """
        chosen = self.agents if observers is None else list(observers)

        def seen(view: dict[str, str]) -> bool:
            if exact:
                return view == dict(expected)
            return all(view.get(node) == status for node, status in expected.items())

        def everyone() -> bool:
            for agent in chosen:
                agent.check_running()
            return all(seen(agent.statuses()) for agent in chosen)

        return wait_for(
            everyone,
            timeout,
            interval=0.1,
            message=lambda: f"every observer to see {self.named(expected)}\n{self.describe(chosen)}",
        )

    def wait_formed(self, timeout: float = 30.0) -> float:
        """Wait until every agent sees exactly every agent alive; return seconds."""
        return self.wait_all_see(dict.fromkeys(self.ids, "alive"), exact=True, timeout=timeout)

    def named(self, by_id: Mapping[str, Any]) -> dict[str, Any]:
        """Replace node ids by agent names (for readable messages)."""
        names = {agent.node_id: agent.name for agent in self.agents}
        return {names.get(node, node[:8]): value for node, value in by_id.items()}

    def describe(self, agents: Iterable[AgentProcess] | None = None) -> str:
        """Each agent's view (by name) and log tail: for assertion messages."""
        parts = []
        for agent in self.agents if agents is None else agents:
            try:
                view: object = self.named(agent.statuses()) if agent.running else "(not running)"
            except AssertionError:
                view = "(view unreadable)"
            parts.append(f"{agent.name} sees {view}\n{agent.describe()}")
        return "\n".join(parts)


def stop_processes(processes: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process still running, wait a bounded time, SIGKILL what is left; by pid only."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    deadline = time.monotonic() + CLEANUP_GRACE_S
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _die_with_parent() -> Callable[[], None]:
    """A preexec function: the child is SIGKILLed if the test run dies without cleaning up.

    PDEATHSIG fires when the forking *thread* exits, so agents must be started from the main thread
    (as pytest runs tests). libc is loaded here, before the fork, so the child only makes one call.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        # The parent may have died between fork and prctl, and then the signal would never come.
        if os.getppid() != parent:
            os._exit(1)

    return preexec

"""A local mesh for ``meshnode demo``: start N agents as child processes, watch them form, stop them all.

Children run ``python -m meshnode join --profile local --no-mdns`` on 127.0.0.1, every one seeded with
the first agent's mesh address, each with its own data directory inside one temporary directory.
They start in a session of their own, so a Ctrl-C in the terminal reaches only the demo, which then
stops them in order: SIGTERM to all (each agent gossips its leave), a bounded wait, SIGKILL only for
those still running, and the temporary directory is removed. On Linux each child also gets
``PR_SET_PDEATHSIG``, so even a demo killed with -9 does not leave agents behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

import httpx

from ...config import AgentConfig
from ...trust.token import TOKEN_ENV, make_token

__all__ = ["DemoError", "DemoMesh", "DemoNode", "FailoverReport", "find_free_ports", "sigterm_as_interrupt"]

HOST = "127.0.0.1"
# An agent's graceful stop gossips `left` for leave_timeout_s, then closes its sockets and HTTP.
STOP_GRACE_S = AgentConfig(name="demo").leave_timeout_s + 5.0
# How far above the base port to look for free ports before giving up.
PORT_SCAN_SPAN = 1000
POLL_INTERVAL_S = 0.2
LOG_TAIL_LINES = 15
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _quiet(_: str) -> None:
    """Progress nobody listens to."""


class DemoError(Exception):
    """The demo mesh could not start, form or keep running."""


@dataclass(frozen=True)
class FailoverReport:
    """What the demo's crash-and-rejoin showed."""

    name: str
    dead_after_s: float  # SIGKILL until every survivor marked it dead
    rejoined_after_s: float  # restart until every agent saw it alive (includes process start)
    incarnation_before: int
    incarnation_after: int
    restarted_pid: int


@dataclass
class DemoNode:
    """One agent the demo started."""

    name: str
    http: str
    mesh: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Base URL of the agent's HTTP API."""
        return f"http://{self.http}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines the agent wrote, to explain a failure."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def find_free_ports(count: int, start: int, host: str = HOST) -> list[int]:
    """The first ``count`` ports from ``start`` up that are free for both TCP and UDP on ``host``."""
    ports: list[int] = []
    for port in range(start, min(start + PORT_SCAN_SPAN, 65536)):
        if _is_free(host, port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise DemoError(f"found only {len(ports)} of {count} free ports in {start}..{start + PORT_SCAN_SPAN - 1}")


def _is_free(host: str, port: int) -> bool:
    # Checked for both protocols: the mesh transport may use either.
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


class DemoMesh:
    """N local agents in a temporary directory; a context manager that always cleans up."""

    def __init__(
        self,
        nodes: int,
        base_port: int,
        *,
        log: Callable[[str], Any] = lambda _: None,
        deploy: dict[int, list[str]] | None = None,
    ) -> None:
        """Plan ``nodes`` agents on free ports from ``base_port``; nothing starts until ``start``."""
        if nodes < 1:
            raise ValueError("a demo needs at least one node")
        self._deploy = deploy or {}
        # The demo's mesh is its own: a token of its own, kept nowhere, so it never joins (or
        # writes the token of) a mesh this machine already belongs to.
        self._token = make_token()
        self._count = nodes
        self._base_port = base_port
        self._log = log
        self._tempdir: Path | None = None
        self._log_files: list[IO[bytes]] = []
        self._started_at = 0.0
        self.nodes: list[DemoNode] = []

    def __enter__(self) -> DemoMesh:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start every agent; the first is the seed of the others."""
        ports = find_free_ports(2 * self._count, self._base_port)
        self._tempdir = Path(tempfile.mkdtemp(prefix="meshnode-demo-"))
        self._started_at = time.monotonic()
        seed = f"{HOST}:{ports[1]}"
        for index in range(self._count):
            http, mesh = f"{HOST}:{ports[2 * index]}", f"{HOST}:{ports[2 * index + 1]}"
            node = self._spawn(f"demo-{index}", http, mesh, seed if index else None)
            self.nodes.append(node)
            self._log(f"started {node.name} (pid {node.process.pid}): http {http}, mesh {mesh}")

    def crash_and_rejoin(
        self, index: int, timeout_s: float, progress: Callable[[str], Any] = _quiet
    ) -> FailoverReport:
        """SIGKILL one agent, time until every survivor sees it dead, restart it, time the rejoin.

        `progress` hears what is awaited at each step (the demo's spinner).
        """
        victim = self.nodes[index]
        survivors = [node for node in self.nodes if node is not victim]
        victim_id = self.view(index)["self"]
        before = _member(self.view(0), victim_id)
        killed_at = time.monotonic()
        victim.process.kill()
        victim.process.wait()
        progress(f"waiting until every survivor marks {victim.name} dead")
        self._wait_all(survivors, victim_id, "dead", timeout_s)
        dead_s = time.monotonic() - killed_at
        seed = self.nodes[0].mesh if index else None
        restarted_at = time.monotonic()
        self.nodes[index] = self._spawn(victim.name, victim.http, victim.mesh, seed, append_log=True)
        progress(f"restarted {victim.name}; waiting until every agent sees it alive")
        self._wait_all(self.nodes, victim_id, "alive", timeout_s)
        after = _member(self.view(0), victim_id)
        return FailoverReport(
            victim.name,
            dead_s,
            time.monotonic() - restarted_at,
            before["incarnation"],
            after["incarnation"],
            self.nodes[index].process.pid,
        )

    def wait_until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll `condition` while checking the agents run; DemoError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            self.check_running()
            if time.monotonic() >= deadline:
                raise DemoError(f"timed out after {timeout_s:g} s waiting for {what}")
            time.sleep(POLL_INTERVAL_S / 4)

    def _wait_all(self, observers: list[DemoNode], node_id: str, status: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            seen = []
            for observer in observers:
                with contextlib.suppress(DemoError, KeyError):
                    seen.append(_member(self.view(self.nodes.index(observer)), node_id)["status"])
            if len(seen) == len(observers) and all(s == status for s in seen):
                return
            if time.monotonic() >= deadline:
                raise DemoError(f"not every agent saw {node_id[:8]} {status} within {timeout_s:g} s")
            time.sleep(POLL_INTERVAL_S / 4)

    def _spawn(
        self, name: str, http: str, mesh: str, seed: str | None, *, append_log: bool = False
    ) -> DemoNode:
        assert self._tempdir is not None
        data_dir = self._tempdir / name
        log_path = self._tempdir / f"{name}.log"
        command = [sys.executable, "-m", "meshnode", "join", "--profile", "local", "--no-mdns"]
        command += ["--http", http, "--mesh", mesh, "--data-dir", str(data_dir), "--name", name]
        command += ["--seed", seed] if seed else []
        index = int(name.rsplit("-", 1)[1])
        for spec in self._deploy.get(index, []):
            command += ["--deploy", spec]
        log_file = log_path.open("ab" if append_log else "wb")
        self._log_files.append(log_file)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", TOKEN_ENV: self._token},
            start_new_session=True,
            preexec_fn=_exit_with_parent(os.getpid()) if sys.platform.startswith("linux") else None,
        )
        return DemoNode(name, http, mesh, data_dir, log_path, process)

    def check_running(self) -> None:
        """Raise ``DemoError`` with its log if any agent has exited."""
        for node in self.nodes:
            code = node.process.poll()
            if code is not None:
                raise DemoError(f"{node.name} exited with code {code}; its last output:\n{node.log_tail()}")

    def wait_formed(self, timeout_s: float, progress: Callable[[str], Any] = _quiet) -> float:
        """Wait until every agent sees every agent alive; return seconds since the agents started.

        `progress` hears how many each agent sees so far (the demo's spinner).
        """
        deadline = time.monotonic() + timeout_s
        seen: dict[str, int] = {}
        with httpx.Client(timeout=1.0) as client:
            while True:
                self.check_running()
                for node in self.nodes:
                    seen[node.name] = _alive_count(client, node.url)
                seeing = ", ".join(f"{name} sees {count}/{self._count}" for name, count in seen.items())
                progress(f"mesh forming: {seeing}")
                if all(count == self._count for count in seen.values()):
                    return time.monotonic() - self._started_at
                if time.monotonic() >= deadline:
                    counts = ", ".join(f"{name} sees {count}" for name, count in seen.items())
                    raise DemoError(
                        f"the mesh did not form within {timeout_s:g} s ({counts} of {self._count} alive); "
                        f"{self.nodes[-1].name}'s last output:\n{self.nodes[-1].log_tail()}"
                    )
                time.sleep(POLL_INTERVAL_S)

    def view(self, index: int = 0) -> dict[str, Any]:
        """One agent's ``/v1/mesh`` body."""
        node = self.nodes[index]
        try:
            response = httpx.get(f"{node.url}/v1/mesh", timeout=5.0)
            response.raise_for_status()
            view: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise DemoError(f"cannot read {node.name}'s view at {node.url}: {exc}") from exc
        return view

    def stop(self) -> None:
        """Stop every agent gracefully (SIGKILL only after ``STOP_GRACE_S``) and remove the temp dir."""
        # A second Ctrl-C must not cut the cleanup short; every wait below is bounded.
        with _signals_ignored():
            running = [node for node in self.nodes if node.process.poll() is None]
            if running:
                self._log(f"stopping {len(running)} agent(s)")
            for node in running:
                with contextlib.suppress(ProcessLookupError):
                    node.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            for node in running:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            for node in running:
                if node.process.poll() is None:
                    late = f"{node.name} (pid {node.process.pid}) did not stop within {STOP_GRACE_S:g} s"
                    self._log(f"{late}; killing it")
                    node.process.kill()
                    node.process.wait()
            for log_file in self._log_files:
                log_file.close()
            self._log_files.clear()
            if self._tempdir is not None:
                shutil.rmtree(self._tempdir, ignore_errors=True)
                self._tempdir = None


def _member(view: dict[str, Any], node_id: str) -> dict[str, Any]:
    """One member's row in a /v1/mesh body (KeyError if absent)."""
    for member in view["members"]:
        if member["id"] == node_id:
            return dict(member)
    raise KeyError(node_id)


def _alive_count(client: httpx.Client, url: str) -> int:
    try:
        view = client.get(f"{url}/v1/mesh").json()
    except (httpx.HTTPError, ValueError):
        return 0  # not serving yet
    alive = {member.get("id") for member in view.get("members", []) if member.get("status") == "alive"}
    # Count this node even if its view lists only the others.
    return len(alive | {view.get("self")})


def _exit_with_parent(parent_pid: int) -> Callable[[], None]:
    """A preexec function: the child gets SIGTERM when the demo dies, even by SIGKILL."""

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        # The demo may have died between fork and prctl, which would then never fire.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt, so it stops the demo as Ctrl-C does."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

"""Processes a benchmark starts: pinned to a core, logged to a file, stopped in order, waited for by condition."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

# Ports are drawn below the kernel's ephemeral range, which outgoing connections take their source
# ports from: one handed out from it could be taken by a connection before its server binds it.
_LOWEST_PORT = 20000
_picks = random.Random(os.getpid())
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, below the ephemeral range, not handed out before in this run."""
    highest = _ephemeral_start() - 1
    for _ in range(1000):
        port = _picks.randint(_LOWEST_PORT, highest)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found below the ephemeral range")


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; elsewhere a guess, checked by the bind anyway


@dataclass
class Started:
    """A process this benchmark started (pinned with taskset), with its log."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def processes(self) -> list[psutil.Process]:
        """It and its descendants (an agent's worker), for CPU accounting and cleanup."""
        try:
            proc = psutil.Process(self.process.pid)
            return [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


def start(name: str, args: list[str], cpu: int, root: Path, env: dict[str, str] | None = None) -> Started:
    log_path = root / f"{name.replace(' ', '-')}.log"
    with log_path.open("ab") as log:
        # Its own session: a Ctrl-C reaches only the script, whose finally stops everything in order.
        process = subprocess.Popen(
            ["taskset", "-c", str(cpu), *args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )  # fmt: skip
    return Started(name, process, log_path)


def stop(started: list[Started]) -> None:
    """SIGTERM every process (agents leave gracefully), SIGKILL what lingers, then its leftover children."""
    children = {s.name: s.processes()[1:] for s in started}
    for s in started:
        if s.process.poll() is None:
            s.process.send_signal(signal.SIGTERM)
    for s in started:
        try:
            s.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            s.process.kill()
            s.process.wait()
        for child in children[s.name]:
            try:
                child.wait(timeout=5)
            except psutil.TimeoutExpired:
                child.kill()
            except psutil.NoSuchProcess:
                pass


def wait(predicate: Callable[[], bool], timeout: float, what: str, started: list[Started]) -> None:
    """Poll `predicate` until it holds; fail early, with its log's tail, if a started process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in started:
            if s.process.poll() is not None:
                tail = s.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"{s.name} exited with {s.process.returncode} while waiting for {what}:\n{tail}"
                )
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


_STARTED = time.monotonic()
_ROOT = Path(__file__).resolve().parent.parent


def progress(line: str) -> None:
    """A line on standard error, stamped with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - _STARTED:6.0f} s] {line}", file=sys.stderr, flush=True)


def commit() -> str:
    """This checkout's commit, marked when the tree has changes."""
    head = subprocess.run(
        ["git", "-C", str(_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(["git", "-C", str(_ROOT), "status", "--porcelain"], capture_output=True, text=True)
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")

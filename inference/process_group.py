"""ProcessGroup: one shell command in its own process group, its output logged, stoppable as a whole.

External-server apps run user commands (``bootstrap``, ``job``) that may start children of their own
(a shell script that starts ``python server.py``, a server that forks workers). Each command gets a
new session, so its process group holds all of them and one ``killpg`` reaches every one: ``stop``
sends SIGTERM, waits ``grace_s``, then SIGKILLs whatever is left and reaps the leader.

On Linux the shell also gets SIGTERM if the thread that started it dies (PR_SET_PDEATHSIG), so a
worker killed with -9 does not leave its job behind; children of the shell are not covered.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

__all__ = ["ProcessGroup", "group_alive"]

log = logging.getLogger(__name__)

# A stopped group gets this long to exit after SIGTERM before it is SIGKILLed.
STOP_GRACE_S = 5.0
# Output lines kept for error messages (all of them go to the log).
TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class ProcessGroup:
    """A running shell command and every process it starts."""

    def __init__(self, command: str, *, cwd: Path, env: Mapping[str, str], label: str) -> None:
        shell = shutil.which("bash") or "/bin/sh"
        self.label = label
        self._lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._process = subprocess.Popen(
            [shell, "-c", command],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._reader = threading.Thread(target=self._read_output, name=f"output-{label}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """The shell's pid, which is also the group id."""
        return self._process.pid

    def poll(self) -> int | None:
        """The shell's exit code, or None while it runs."""
        return self._process.poll()

    def tail(self) -> str:
        """The last lines of output (waiting briefly for the rest once the shell has exited)."""
        if self._process.poll() is not None:
            self._reader.join(timeout=1.0)  # a grandchild may hold the pipe open: do not wait for it
        return "\n".join(self._lines) or "(no output)"

    def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM the group, SIGKILL it after ``grace_s`` (default STOP_GRACE_S), and reap the shell."""
        grace_s = STOP_GRACE_S if grace_s is None else grace_s
        if _signal_group(self.pid, signal.SIGTERM) and not self._wait_gone(grace_s):
            log.warning(
                "%s: pid %d ignored SIGTERM for %g s; killing its group", self.label, self.pid, grace_s
            )
            _signal_group(self.pid, signal.SIGKILL)
            self._wait_gone(grace_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=1.0)
        self._reader.join(timeout=1.0)

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._process.poll()  # reap the shell, or it would count as a member
            if not group_alive(self.pid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def _read_output(self) -> None:
        stream: IO[bytes] | None = self._process.stdout
        if stream is None:
            return
        with stream:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip()
                self._lines.append(line)
                log.info("[%s] %s", self.label, line)


def group_alive(group: int) -> bool:
    """Whether a process of the group still runs; zombies waiting for init to reap them do not count."""
    if not _signal_group(group, 0):
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True  # no procfs (macOS): killpg's answer is all we have
    # Orphans of the group are reaped by init, which in containers may take seconds; they run no code.
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # "pid (command) state ppid pgrp ...": the command may hold spaces and parentheses.
        state, _, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == group and state != "Z":
            return True
    return False


def _signal_group(group: int, sig: int) -> bool:
    """Send ``sig`` to the group (0 only asks); False when no process of it is left."""
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):  # PermissionError: the id was reused by someone else
        return False
    return True


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


# Looked up here, not in the forked child, which should do as little as possible before exec.
_prctl = _load_prctl()


def _die_with_parent() -> None:
    """Runs in the child between fork and exec."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

"""A replica's worker as an operating-system process: start it, stop it, read why it failed.

The worker is ``python -m meshnode.serving.worker`` with the app reference, its end of the link to
the agent (an inherited descriptor, ``pipe.py``) and the agent's frame limit; its output goes to a
log file per replica under the data dir, whose last line is the setup error the supervisor reports.
It dies with the agent (``--parent-pid``).

A worker holds only what it needs: its standard streams, and what it opens itself. Descriptors that
would pass through ``exec`` are the inheritable ones (``inheritable_fds``; Python opens every one of
its own non-inheritable, PEP 446), and they only come from outside: one the agent was started with
(the lock file of ``flock LOCK meshnode join``, held by every worker, was never released while the
mesh ran) or the duplicates uvloop makes of a child's standard streams, which it leaves open in the
child (uvloop ignores ``close_fds``). So ``meshnode join`` marks what it inherited close-on-exec as
it starts, and the worker closes whatever inheritable descriptor it still finds first thing, before
it starts anything of its own (an external server, for one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from ..load import SpeedMeter
from ..mesh.replica_state import MAX_ERROR_CHARS
from .handed_links import HandedLinks
from .pipe import FramePipe, open_pipe

__all__ = ["inheritable_fds", "last_line", "spawn_worker", "start_worker", "terminate"]

# A worker asked to stop (SIGTERM) that is still running after this long is killed.
_TERMINATE_GRACE_S = 5.0
# OpenMP's idle threads (torch's intra-op pool) sleep at once instead of spinning for a while after
# each operation, unless the node's owner set the policy: spinning threads of an idle worker took
# the cores from the agent and from other workers. Measured (bench/openai.py, two cores): a model's
# first token in a process beside a just-idle worker took 235 ms, 2.7 ms with this; batched
# throughput rose too. Each operation pays a thread wake-up instead, a few microseconds.
_WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


async def spawn_worker(
    app_ref: str,
    replica_id: str,
    link_fd: int,
    handoff_fd: int,
    data_dir: Path,
    log_path: Path,
    *,
    max_frame_bytes: int,
    env: Mapping[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """Start a worker process for one replica, its output appended to `log_path`.

    `link_fd` is the worker's end of its link to the agent, passed on to it and to nothing else;
    `env` is what the agent tells this replica's app (its model's folder), over the node's own.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meshnode.serving.worker",
            "--app", app_ref, "--replica", replica_id,
            "--link-fd", str(link_fd), "--handoff-fd", str(handoff_fd), "--data-dir", str(data_dir),
            "--max-frame-bytes", str(max_frame_bytes),
            "--parent-pid", str(os.getpid()),
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            close_fds=True,  # asyncio's default, said aloud; uvloop ignores it (see the docstring)
            pass_fds=(link_fd, handoff_fd),
            # The owner's own settings win; the replica id names an app's container (inference/container.py).
            env={**_WORKER_ENV, **os.environ, **(env or {}), "MESHNODE_REPLICA_ID": replica_id},
        )  # fmt: skip


async def start_worker(
    app_ref: str,
    replica_id: str,
    data_dir: Path,
    log_path: Path,
    max_frame_bytes: int,
    *,
    env: Mapping[str, str],
    on_frame: Callable[[bytes | bytearray], None],
    speed: SpeedMeter,
    deployment: str,
) -> tuple[asyncio.subprocess.Process, FramePipe, HandedLinks]:
    """Start a replica's worker with its two sockets: the pipe whose frames go to `on_frame`, and
    the handoff socket that gives it peers' links (``handed_links.py``; reports go to `speed`)."""
    ours, theirs = socket.socketpair()
    handoff, their_handoff = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pipe = await open_pipe(ours, on_frame, lambda: None, max_frame_bytes)
        process = await spawn_worker(
            app_ref, replica_id, theirs.fileno(), their_handoff.fileno(), data_dir, log_path,
            max_frame_bytes=max_frame_bytes, env=env,
        )  # fmt: skip
    except BaseException:
        ours.close()
        handoff.close()
        raise
    finally:
        theirs.close()  # the worker has its own copies; ours alone would keep its sockets open
        their_handoff.close()
    links = HandedLinks(handoff, speed, deployment)
    links.start()
    return process, pipe, links


async def terminate(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it is still running after a grace period; wait until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(_TERMINATE_GRACE_S):
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def last_line(path: Path, max_bytes: int = 4096) -> str:
    """The last non-empty line of a worker's log (its setup error), cut to gossip's error length."""
    try:
        with path.open("rb") as log_file:
            log_file.seek(max(0, path.stat().st_size - max_bytes))
            lines = log_file.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip()[:MAX_ERROR_CHARS] if lines else ""


def inheritable_fds() -> list[int]:
    """This process's descriptors above standard error that an ``exec`` would pass on, in order."""
    listing = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    found = []
    for name in os.listdir(listing):
        fd = int(name)
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            if fd > 2 and os.get_inheritable(fd):
                found.append(fd)
    return sorted(found)

"""The data plane's ZeroMQ contexts, and how the kernel schedules their I/O threads.

A ZeroMQ context runs its own I/O thread: it encrypts (CURVE) and writes what the event loop sends,
and reads and decrypts what arrives. Every send wakes it. Under the kernel's normal policy a woken
thread preempts the one running, so on a busy core each request's send switched from the event loop
to the I/O thread and back, one message at a time: at 32 requests in flight, forwarding spent more
CPU on those switches and the cold caches after them than on the requests.

- ``serving_context``: I/O thread under ``SCHED_BATCH``. It gets the same fair share of the CPU as
  any thread (nothing can starve it, unlike ``SCHED_IDLE``), but a wakeup does not preempt the event
  loop: the loop finishes its turn, then the I/O thread sends what the turn queued, all at once. On
  an idle core it runs at once, so a lone request waits no longer. Measured with one entry node and
  one serving node on one core (wrk at c = 32): forwarded requests/s 1.8x, CPU per request 309 ->
  170 µs over both agents and the worker; at c = 1 unchanged.
- ``bulk_context``: I/O thread at the kernel's idle priority (``SCHED_IDLE``), for a model pull's
  megabytes, which may wait for any serving work on the core (``links.py``).

Both policies are Linux's; elsewhere, or where the kernel or a sandbox refuses the policy, the
contexts keep the default. libzmq aborts the process when its I/O thread cannot take the policy it
was given, so a policy is first tried on a thread of our own that ends at once.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable

import zmq

__all__ = ["ContextMaker", "allowed", "bulk_context", "serving_context"]

ContextMaker = Callable[[], "zmq.Context[zmq.Socket[bytes]]"]


def serving_context() -> zmq.Context[zmq.Socket[bytes]]:
    """A context for requests: its I/O thread never preempts the event loop that wakes it."""
    return _context(getattr(os, "SCHED_BATCH", None))


def bulk_context() -> zmq.Context[zmq.Socket[bytes]]:
    """A context for bulk transfers: its I/O thread runs only when the core has nothing else."""
    return _context(getattr(os, "SCHED_IDLE", None))


def _context(policy: int | None) -> zmq.Context[zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    if policy is not None and allowed(policy):  # before the I/O thread starts (the first socket)
        ctx.set(zmq.THREAD_SCHED_POLICY, policy)
    return ctx


@functools.cache
def allowed(policy: int) -> bool:
    """Whether a thread of this process may take the scheduling `policy` (tried on a thread of its own)."""
    taken: list[bool] = []

    def attempt() -> None:
        try:
            os.sched_setscheduler(0, policy, os.sched_param(0))  # 0: the calling thread, on Linux
            taken.append(True)
        except OSError:
            taken.append(False)

    thread = threading.Thread(target=attempt, name="meshnode-sched-probe", daemon=True)
    thread.start()
    thread.join()
    return taken == [True]

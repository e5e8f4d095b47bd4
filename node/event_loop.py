"""How a meshnode process runs its event loop: the agent's (``agent_run.py``) and a worker's.

Kept apart from the agent so that a replica worker, which starts for every replica, imports no more
than it needs.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["GC_YOUNG_THRESHOLD", "run_event_loop", "settle_heap"]

log = logging.getLogger(__name__)


def run_event_loop(main: Coroutine[Any, Any, int], use_uvloop: bool) -> int:
    """Run `main` on uvloop when installed and wanted (less CPU per request), else on asyncio."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            log.debug("uvloop is not installed; using the asyncio event loop")
        else:
            return uvloop.run(main)
    return asyncio.run(main)


# Young objects collected after this many more allocations than frees (Python's default: 700). A
# request allocates a few hundred objects, so the default collects every few requests; the objects
# a request makes die with it, and reference counting frees them without the collector.
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """After start-up: what exists now lives as long as the process, so collections skip it.

    ``gc.freeze`` moves every object made so far (modules, the app, a model's Python objects) out
    of the collector's generations, so an occasional full collection scans what requests made, not
    the whole heap: a full collection of a loaded model's heap takes milliseconds, and a request
    that meets one waits that long (the tail latency of bench/forwarding.py).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)

"""How a meshnode process runs its event loop: the agent's (``agent_run.py``) and a worker's.

Kept apart from the agent so that a replica worker, which starts for every replica, imports no more
than it needs.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Coroutine
from typing import Any

__all__ = ["GC_YOUNG_THRESHOLD", "REFREEZE_AFTER_S", "run_event_loop", "settle_heap"]

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


# A full collection slower than this freezes what survived it (``settle_heap``).
REFREEZE_AFTER_S = 0.005


def settle_heap(refreeze_after_s: float = REFREEZE_AFTER_S) -> None:
    """After start-up: what exists now lives as long as the process, so collections skip it.

    Call it before the process answers anyone: its full collection holds the thread for tens of
    milliseconds (an agent's, 50-70 ms here; a few times that on a busy machine).

    ``gc.freeze`` moves every object made so far (modules, the app, a model's Python objects) out
    of the collector's generations, so an occasional full collection scans what requests made, not
    the whole heap: a full collection of a loaded model's heap takes milliseconds, and a request
    that meets one waits that long (the tail latency of bench/forwarding.py).

    The heap also grows after start-up and then stays: an agent learns 1,000 members and 1,000
    deployments, and every full collection scanned all of them again (65-84 ms on the event loop
    every 15-25 s, bench/scale.py part b). So a full collection that took longer than
    `refreeze_after_s` freezes what survived it (all of it live at that moment, and young
    generations empty): the next one scans only what came since. The price: an object frozen this
    way that later dies in a reference cycle is never collected (reference counting still frees
    the rest); a slow full collection means a large settled heap, which is rare, so little is
    frozen that way.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    _refreezer.after_s = refreeze_after_s
    if _refreezer not in gc.callbacks:
        gc.callbacks.append(_refreezer)


class _Refreezer:
    """A ``gc.callbacks`` entry: after a full collection slower than ``after_s``, freeze its survivors."""

    def __init__(self) -> None:
        self.after_s = REFREEZE_AFTER_S
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
        elif time.perf_counter() - self._began >= self.after_s:
            gc.freeze()  # in "stop": the collection is over, and every survivor is in the oldest generation


_refreezer = _Refreezer()

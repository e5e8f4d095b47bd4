"""Which ``predict`` calls a worker runs on its event loop instead of handing them to a thread.

A sync ``predict`` normally runs in the worker's thread pool, so the loop stays free to take the
next call and to read a ``Cancel``. The hand-over costs two thread wake-ups and a future (measured
here: about 40 µs of CPU per call on a busy core, more than an echo app's whole ``predict``). For a
predictor that returns in microseconds that is pure overhead, so the worker runs it inline once it
has shown it is fast:

- A replica starts on the pool. After ``probation`` calls in a row that each took under ``max_s``,
  calls run inline.
- Any call, inline or not, that takes ``max_s`` or longer sends the replica back to the pool, and
  the probation before it runs inline again doubles (up to ``MAX_PROBATION``), so a predictor whose
  calls are only sometimes slow settles on the pool instead of flapping.

What running inline gives up, and why that is bounded: while ``predict`` runs the loop reads
nothing, so a ``Cancel`` waits for the call to end, which is at most about ``max_s`` for a replica
that earned inline calls (a sync ``predict`` on a thread cannot be interrupted either, except at its
``report_progress``, and a call that asks for progress never runs inline). A call runs inline only
while no other call of the replica is being answered, so calls still run in the order they came and
never beside a pool thread. An app that runs calls side by side (``max_concurrency`` above 1) loses
that only for the first slow call after a fast spell: it holds the calls behind it until it returns,
and an app that cannot afford that says ``inline_calls = False``.

Pure: durations come in as arguments (``record``), the worker's shell times the calls.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_S", "DEFAULT_PROBATION", "MAX_PROBATION", "InlinePolicy"]

# Ten times the hand-over's cost: a slower call gains little from skipping it, and inline it would
# hold the loop (answers going out, cancels coming in) for longer.
DEFAULT_MAX_S = 0.0005
# Calls in a row under the limit before the first inline one: a warm-up's slow first calls show.
DEFAULT_PROBATION = 16
# The probation's ceiling after repeated slow calls: such a predictor is tried again only rarely.
MAX_PROBATION = 4096


class InlinePolicy:
    """Learns from each call's duration whether the next one may run inline on the event loop."""

    def __init__(self, *, max_s: float = DEFAULT_MAX_S, probation: int = DEFAULT_PROBATION) -> None:
        if max_s <= 0 or probation < 1:
            raise ValueError("max_s must be > 0 and probation >= 1")
        self.max_s = max_s
        self.probation = probation
        self._fast_in_a_row = 0

    @property
    def inline(self) -> bool:
        """Whether the next call may run inline."""
        return self._fast_in_a_row >= self.probation

    def record(self, seconds: float) -> None:
        """Note how long one call's ``predict`` took (inline or on the pool)."""
        if seconds < self.max_s:
            self._fast_in_a_row += 1
            return
        if self.inline:
            self.probation = min(MAX_PROBATION, self.probation * 2)
        self._fast_in_a_row = 0

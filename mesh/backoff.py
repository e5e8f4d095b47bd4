"""Restart backoff: how long to wait before starting again something that keeps exiting.

One policy for every supervisor (a replica's worker process in ``node/serving/replica.py``, an
external server's job in ``inference/external.py``): the first restart waits ``initial_s``, each
further one twice as long as the one before, up to ``max_s``. A run that lasted at least
``reset_after_s`` was not a crash loop, so the wait after it starts over at ``initial_s``.

The policy only returns delays; the supervisor sleeps and restarts. No clock is read here:
``after_exit`` takes the run's start and end times, in whatever monotonic clock the caller uses.
"""

from __future__ import annotations

__all__ = ["RESET_AFTER_S", "Backoff"]

# A run this long counts as healthy: it is the shortest interval between crashes that is not treated
# as a crash loop (a minute: longer than any setup or warm-up failure, short enough that a replica
# that crashes once an hour always restarts at once).
RESET_AFTER_S = 60.0


class Backoff:
    """Exponential restart delays with a cap, reset by a long enough run."""

    def __init__(self, initial_s: float, max_s: float, reset_after_s: float = RESET_AFTER_S) -> None:
        if min(initial_s, max_s, reset_after_s) < 0:
            raise ValueError(
                f"backoff times must not be negative: initial_s={initial_s}, max_s={max_s}, "
                f"reset_after_s={reset_after_s}"
            )
        self.initial_s = initial_s
        self.max_s = max_s
        self.reset_after_s = reset_after_s
        self._next_s = initial_s

    def after_exit(self, started: float, exited: float) -> float:
        """The wait before the next start of something that ran from `started` until `exited`."""
        if exited - started >= self.reset_after_s:
            self._next_s = self.initial_s
        delay = self._next_s
        self._next_s = min(delay * 2, self.max_s)
        return delay

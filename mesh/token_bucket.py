"""A token bucket that bounds a byte rate: how long to wait before moving the next bytes.

Tokens (bytes) accrue at ``rate`` per second up to ``burst``. ``reserve(n, now)`` takes `n` tokens at
once and returns how long the caller must wait before moving those bytes: zero while the bucket
holds enough, else the time the rate needs to earn the shortfall. The balance may go below zero
(a debt the following reservations wait out in turn), so a reservation larger than ``burst`` (a
chunk bigger than a second's worth of bytes) still works, and callers that reserve one after
another are spaced out in order, never starved. Over any interval the bytes reserved are at most
``burst + rate * interval``.

A rate of 0 means no limit. Time comes in as ``now`` (any monotonic clock, in seconds).
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """Bounds a byte rate; ``reserve`` says how long to wait (see the module docstring)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate < 0 or burst < 0:
            raise ValueError("a token bucket needs rate >= 0 and burst >= 0")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def reserve(self, amount: int, now: float) -> float:
        """Take `amount` tokens; the seconds to wait before moving that many bytes (0: at once)."""
        if self.rate <= 0:
            return 0.0
        elapsed = max(0.0, now - self._at)
        self._at = max(self._at, now)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate) - amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

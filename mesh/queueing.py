"""A replica's queue: how long a new request would wait, and whether it can still meet its deadline.

The replica is the one place that knows its queue exactly (its own in-flight count, its measured
service time), so it is where a request is admitted or refused under its deadline; a router's
copy of that queue (gossip, the queue an answer reported) can be seconds old. The rule:

- a request is refused at once when the replica is full (``capacity`` admitted), or when it would
  *finish* after its deadline: expected start (the requests ahead of it, over ``slots``) plus one
  service time, plus a margin (``margin_s``) for the answer's way back. An admitted request then
  misses its deadline only if the service time itself changes, and a refused one costs its caller
  one round trip instead of a wait that ends in 504;
- a request that finds a slot free is admitted whatever its deadline: it starts at once, which is
  the best it can get anywhere, and it measures the service time. Refusing it when the estimate
  says it would be late could refuse everything for good on an estimate that a busy spell
  inflated, since only admitted requests correct it. Before the first measurement the wait is
  unknown and the request is admitted (the capacity still bounds how many);
- the wait is predicted for the worst case the replica cannot rule out: the requests running now
  all started a moment ago, so the ``ahead`` requests before this one finish in waves of ``slots``,
  one service time each (``ceil(ahead / slots)`` waves). An average (``ahead / slots``) would admit
  requests that a burst of simultaneous arrivals then makes late;
- the service time it uses is measured on requests that found a free slot, whose time in the
  replica is all service (``counts_as_service``): a time that included a queue would count the
  queue twice, once in the sample and again in every prediction made from it;
- ``Retry-After`` says when the queue ahead will have drained: the expected start wait, rounded up
  to whole seconds (HTTP's unit), at least 1.

Time comes in as numbers; nothing here reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

# Room left before the deadline for what the replica does not time: the answer's way back through the
# data plane and HTTP, and the jitter of a busy machine. A share of the service time, at least a few ms.
MARGIN_SHARE = 0.1
MARGIN_MIN_S = 0.005

__all__ = [
    "QueueState",
    "Refusal",
    "RefusalReason",
    "admit",
    "counts_as_service",
    "retry_after_s",
    "start_wait_s",
]


@dataclass(frozen=True)
class QueueState:
    """A replica's queue as the replica itself sees it."""

    in_flight: int  # admitted and not finished: running and queued
    slots: int  # requests the worker runs at once
    capacity: int  # requests admitted at once (slots plus the bounded queue)
    service_s: float | None  # smoothed time to serve one request; None before the first


class RefusalReason(Enum):
    FULL = "full"
    DEADLINE = "deadline"


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused, and when to try again."""

    reason: RefusalReason
    retry_after_s: float
    wait_s: float = 0.0  # the predicted start wait it was refused on
    time_left_s: float = 0.0  # the request's time until its deadline

    def explain(self, deployment: str, queue: QueueState) -> str:
        """The refusal in words, for the client's error message."""
        if self.reason is RefusalReason.FULL:
            return f"{deployment} has {queue.in_flight} requests in flight (capacity {queue.capacity})"
        return (
            f"{deployment} would start this request in {self.wait_s:.3f} s and finish it after its "
            f"deadline ({self.time_left_s:.3f} s left)"
        )


def start_wait_s(state: QueueState) -> float:
    """Longest expected seconds before one more request starts running (0 while a slot is free)."""
    slots = max(state.slots, 1)
    ahead = state.in_flight - slots + 1
    if ahead <= 0 or state.service_s is None:
        return 0.0
    return state.service_s * math.ceil(ahead / slots)


def retry_after_s(wait_s: float) -> float:
    """A Retry-After for a queue whose next start is `wait_s` away: whole seconds, at least 1."""
    return max(1.0, float(math.ceil(wait_s)))


def admit(state: QueueState, time_left_s: float) -> Refusal | None:
    """None to admit a request with `time_left_s` until its deadline, else the refusal."""
    wait = start_wait_s(state)
    if state.in_flight >= state.capacity:
        return Refusal(RefusalReason.FULL, retry_after_s(wait), wait, time_left_s)
    if (
        wait > 0
        and state.service_s is not None
        and wait + state.service_s + margin_s(state.service_s) > time_left_s
    ):
        return Refusal(RefusalReason.DEADLINE, retry_after_s(wait), wait, time_left_s)
    return None


def counts_as_service(in_flight_at_admission: int, slots: int) -> bool:
    """Whether a request's time in the replica measures its service time: it found a slot free."""
    return in_flight_at_admission < max(slots, 1)


def margin_s(service_s: float) -> float:
    """Time kept free before the deadline of a request admitted with this service time."""
    return max(MARGIN_SHARE * service_s, MARGIN_MIN_S)

"""When to try a job's webhook again: exponential backoff with jitter, and when to give up.

A pure policy (no clock, no I/O): the node delivering a webhook asks ``next_delay_s`` after each
failed try and sleeps, or gives up on None; ``outcome`` says what a receiver's answer means. The
delivering node keeps the count of tries in the job's record, so a node that takes a delivery over
from a dead one continues the same schedule instead of starting it again.

The schedule (``WebhookSchedule()``): up to 10 tries, the first at once, each with a 15 s timeout;
the waits between them start at 15 s and double, capped at an hour:

    try        1    2     3     4    5    6     7      8      9     10
    wait (s)   -   15    30    60  120  240   480    960   1920   3600
    since 1st  0   15    45   105  225  465   945   1905   3825   7425   (2 h 3 min 45 s)

Each wait is multiplied by a factor drawn uniformly from ``[1 - jitter, 1 + jitter]`` (0.1), so the
last try starts between 1 h 51 min and 2 h 16 min after the first whatever the draw, and the
webhooks of many jobs that failed together (a receiver's outage) do not all come back in the same
second. A receiver's ``Retry-After`` can only lengthen a wait, up to the cap.

The numbers follow the issue (10 tries over about 2 hours, 15 s timeouts) and Standard Webhooks'
guidance (standardwebhooks.com: exponential backoff with jitter; 2xx is success, a redirect is a
failure, ``410 Gone`` means stop; a timeout of 15 to 30 s).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFAULT_SCHEDULE", "Outcome", "WebhookSchedule", "delays_s", "next_delay_s", "outcome"]

Outcome = Literal["delivered", "retry", "gone"]


@dataclass(frozen=True)
class WebhookSchedule:
    """The retry knobs of webhook delivery; units are in the names."""

    # Tries in all, the first included. More reaches a receiver that is down longer, at the cost of
    # the delivering node's attention to a job for longer. 10: the number.
    tries: int = 10
    # The wait after the first failed try. Short, because most failures are a blip (a restart, a
    # deploy); 15 s with doubling and the cap makes the 10 tries span about 2 hours.
    first_delay_s: float = 15.0
    # Each wait is this many times the one before. 2: the usual exponential backoff; larger reaches
    # the cap sooner and leaves long gaps early on.
    factor: float = 2.0
    # No wait is longer than this before jitter, so a receiver that is back up is reached within
    # about the cap. An hour: the last wait of the schedule, which then spans about two hours.
    max_delay_s: float = 3600.0
    # Each wait is scaled by a random factor in [1 - jitter, 1 + jitter], so failures that happened
    # together retry apart. 0.1 spreads them without moving the schedule's span by more than 10%.
    jitter: float = 0.1
    # How long one try waits for the receiver's answer before it counts as failed. 15 s: the issue's
    # number, and the low end of what Standard Webhooks recommends (receivers should answer fast).
    timeout_s: float = 15.0

    def __post_init__(self) -> None:
        if self.tries < 1:
            raise ValueError(f"a webhook is tried at least once, not {self.tries} times")
        if not 0 < self.first_delay_s <= self.max_delay_s or self.factor < 1 or self.timeout_s <= 0:
            raise ValueError(
                "webhook retry delays need 0 < first_delay_s <= max_delay_s, factor >= 1, timeout_s > 0"
            )
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter is a fraction in [0, 1), not {self.jitter}")


DEFAULT_SCHEDULE = WebhookSchedule()


def next_delay_s(
    attempt: int,
    rng: random.Random,
    schedule: WebhookSchedule = DEFAULT_SCHEDULE,
    *,
    retry_after_s: float | None = None,
) -> float | None:
    """The wait after failed try number `attempt` (1 for the first) before the next; None: give up."""
    if attempt < 1:
        raise ValueError(f"tries are counted from 1, not {attempt}")
    if attempt >= schedule.tries:
        return None
    nominal = min(schedule.first_delay_s * schedule.factor ** _steps(attempt, schedule), schedule.max_delay_s)
    delay = nominal * rng.uniform(1 - schedule.jitter, 1 + schedule.jitter)
    if retry_after_s is not None and retry_after_s > delay:
        # The receiver asked for longer (429, 503): wait that long, but never past the cap, so a
        # bogus Retry-After of days cannot silently end the schedule.
        delay = min(retry_after_s, schedule.max_delay_s)
    return delay


def delays_s(rng: random.Random, schedule: WebhookSchedule = DEFAULT_SCHEDULE) -> list[float]:
    """Every wait of one delivery that never succeeds: ``tries - 1`` of them, in order."""
    waits = []
    attempt = 1
    while (delay := next_delay_s(attempt, rng, schedule)) is not None:
        waits.append(delay)
        attempt += 1
    return waits


def _steps(attempt: int, schedule: WebhookSchedule) -> int:
    """How many times the first delay is multiplied by the factor after try `attempt`."""
    # No more times than reach the cap: a float power of thousands of steps would overflow, and
    # ``tries`` has no upper bound.
    if schedule.factor == 1:
        return 0
    to_cap = math.ceil(math.log(schedule.max_delay_s / schedule.first_delay_s, schedule.factor))
    return min(attempt - 1, to_cap)


def outcome(status: int | None) -> Outcome:
    """What a try's HTTP status means (None: no answer, a timeout or a refused connection)."""
    if status is not None and 200 <= status <= 299:
        return "delivered"
    if status == 410:  # Gone: the receiver says it wants no more of these
        return "gone"
    return "retry"  # redirects are not followed: a moved receiver updates its URL

"""The autoscaler: how many replicas a deployment wants, from gossiped demand, the same on every node.

Every node runs one ``Autoscaler`` per deployment and feeds it the same gossiped numbers: requests in
flight at every replica plus requests held by routers waiting for a cold start. The decision
follows Ray Serve's policy (``ray.serve.autoscaling_policy``), as state in and state out:

- Proposal: ``ceil(mean concurrency over the last window_s / target_concurrency)``, bounded by
  ``min_replicas`` and ``max_replicas``.
- Up: only after every proposal for ``scale_up_delay_s`` asked for more than the current ``desired``
  (then to the smallest of those proposals, so one spike does not overshoot).
- Down: likewise after ``scale_down_delay_s``, to the largest proposal of that span. Never below one
  replica while requests arrive.
- Zero: with ``min_replicas`` 0, after ``idle_timeout_s`` without any demand. From zero, the first
  waiting request brings ``desired`` to one at once: a cold start must not wait for a delay. Never
  above ``max_replicas``: a deployment with max 0 (declared only by ``--deploy``, served by its
  pinned replicas alone) stays at zero whatever its demand, so placement never adds a replica of it.

No clock is read here: ``observe`` takes ``now``. Nodes that saw the same gossip at about the same
time agree; a brief disagreement only means one node starts (or stops) a replica a moment early,
and placement's make-before-break keeps serving meanwhile.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .deployment import DeploymentSpec

__all__ = ["Autoscaler", "Decision"]


@dataclass(frozen=True)
class Decision:
    """What the autoscaler wants now and why (shown by ``GET /v1/deployments``)."""

    desired: int
    proposal: int
    mean_concurrency: float


class Autoscaler:
    """Desired replicas of one deployment, from a stream of concurrency samples."""

    def __init__(self, spec: DeploymentSpec, now: float, current: int | None = None) -> None:
        """Start at `current` within the bounds, or at ``min_replicas``.

        `current` is what the mesh runs now: a node that joins a scaled-up mesh must not pull the
        count back down while its own window fills.
        """
        self.spec = spec
        start = spec.min_replicas if current is None else current
        self.desired = min(max(start, spec.min_replicas), spec.max_replicas)
        self._samples: deque[tuple[float, float]] = deque()
        # Samples in the window that are not 0: while there are none, the mean is 0 without a sum
        # (an idle deployment's round costs O(1), whatever the window holds).
        self._nonzero = 0
        self._proposals: deque[tuple[float, int]] = deque()
        self._last_demand_at = now
        self._since = now
        # When the proposals started asking to move the way they ask now (+1 up, -1 down), or None:
        # a delay counts from the first sample that asked, however sparse the samples are.
        self._asking: tuple[int, float] | None = None

    def respec(self, spec: DeploymentSpec) -> None:
        """The deployment changed: keep the history, re-bound ``desired`` at once."""
        self.spec = spec
        self.desired = min(max(self.desired, spec.min_replicas), spec.max_replicas)

    def observe(self, now: float, concurrency: float, waiting: int = 0) -> Decision:
        """Take one sample (total requests in flight, and requests held for a cold start)."""
        spec, knobs = self.spec, self.spec.autoscaling
        demand = concurrency + waiting
        if demand > 0:
            self._last_demand_at = now
        self._samples.append((now, demand))
        self._nonzero += demand != 0
        while self._samples and self._samples[0][0] < now - knobs.window_s:
            self._nonzero -= self._samples.popleft()[1] != 0
        mean = sum(value for _, value in self._samples) / len(self._samples) if self._nonzero else 0.0
        proposal = min(
            max(math.ceil(mean / knobs.target_concurrency - 1e-9), spec.min_replicas), spec.max_replicas
        )
        self._proposals.append((now, proposal))
        horizon = max(knobs.scale_up_delay_s, knobs.scale_down_delay_s)
        while self._proposals and self._proposals[0][0] < now - horizon:
            self._proposals.popleft()
        way = (proposal > self.desired) - (proposal < self.desired)
        if not way:
            self._asking = None
        elif self._asking is None or self._asking[0] != way:
            self._asking = (way, now)

        if self.desired == 0 and demand > 0 and spec.max_replicas > 0:
            self._move(max(proposal, 1), now)
        elif proposal > self.desired and self._held_for(knobs.scale_up_delay_s, now, above=True):
            self._move(min(p for t, p in self._proposals if t >= now - knobs.scale_up_delay_s), now)
        elif proposal < self.desired and self._held_for(knobs.scale_down_delay_s, now, above=False):
            lowest = max(p for t, p in self._proposals if t >= now - knobs.scale_down_delay_s)
            idle = now - self._last_demand_at >= knobs.idle_timeout_s
            self._move(lowest if lowest > 0 or idle else 1, now)
        elif self.desired > 0 and spec.scales_to_zero and now - self._last_demand_at >= knobs.idle_timeout_s:
            self._move(0, now)
        return Decision(self.desired, proposal, mean)

    def idle(self) -> bool:
        """Whether an ``observe`` of no demand now would change nothing but the window's samples.

        So: every sample in the window is 0, and ``desired`` is already what no demand proposes.
        Then ``idle_observe`` does all that ``observe(now, 0)`` would (placement skips the rest).
        """
        spec = self.spec
        return self._nonzero == 0 and self.desired == min(max(0, spec.min_replicas), spec.max_replicas)

    def idle_observe(self, now: float) -> None:
        """``observe(now, 0)`` while ``idle()``: the zero sample and proposal go into the windows."""
        knobs = self.spec.autoscaling
        self._samples.append((now, 0))
        while self._samples and self._samples[0][0] < now - knobs.window_s:
            self._samples.popleft()
        self._proposals.append((now, self.desired))
        horizon = max(knobs.scale_up_delay_s, knobs.scale_down_delay_s)
        while self._proposals and self._proposals[0][0] < now - horizon:
            self._proposals.popleft()
        self._asking = None

    def _held_for(self, delay_s: float, now: float, *, above: bool) -> bool:
        """Whether every proposal of the last `delay_s` asked to move the same way, for that long."""
        if now - self._since < delay_s:
            return False
        asking = self._asking
        if asking is None or asking[0] != (1 if above else -1) or now - asking[1] < delay_s:
            return False  # with samples a second apart, the last window alone may be short of it
        recent = [p for t, p in self._proposals if t >= now - delay_s]
        return bool(recent) and all(p > self.desired if above else p < self.desired for p in recent)

    def _move(self, desired: int, now: float) -> None:
        if desired != self.desired:
            self.desired = desired
            self._since = now

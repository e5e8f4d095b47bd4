"""Pre-warming: load the replica the autoscaler is about to want before it asks, from gossiped demand.

The autoscaler (``autoscale.py``) acts late by design: its proposal follows the mean concurrency of
the last ``window_s``, which lags a rising load by half a window, it then waits ``scale_up_delay_s``,
and only then does a replica start loading, which takes a model's load time. Every node sees the
same demand in gossip, so every node can also see it rising and tell when the autoscaler will want
one more replica; with ``autoscaling.prewarm`` the next node in rank loads that replica early, as a
warm backup (``standby``: loaded, not routed to). When the autoscaler does raise ``desired``,
placement makes that node a host and it serves at once (``Action.PROMOTE``) instead of starting
cold. This is fal's buffer of warm runners, sized by a forecast instead of kept at all times.

The predictor, one per deployment (``Prewarmer.observe``, with ``now`` a parameter):

- Series: the same demand the autoscaler sees (requests in flight at every replica plus requests
  held for a cold start), sampled every placement round, kept over the last ``LOOKBACK_WINDOWS``
  (2) windows; samples closer than ``window_s / SAMPLES_PER_WINDOW`` to the previous one are
  dropped, so a burst of rounds (triggers arrive many times a second) does not count one gossiped
  value many times. Two windows, because a trend is the harder thing to see through noise: within
  one window a slow ramp rises less than requests in flight jitter.
- Trend: a least-squares line through the series. Demand ``a + b t`` has a mean over the window
  ending at ``t`` of ``a + b (t - window_s / 2)``, so the autoscaler's mean at ``now + horizon`` is
  predicted by the line at ``now + horizon - window_s / 2``.
- Crossing: the forecast calls for the next replica when demand rises (a positive slope) and the
  prediction, less ``CONFIDENCE`` (2) of its standard errors (the regression's prediction error,
  which grows with the distance extrapolated and with the series' scatter), crosses the autoscaler's
  own test: ``ceil(low / target_concurrency) > desired``. So a steady line calls early, a noisy one
  only once the rise is beyond doubt, and a level that is high but flat never calls: the
  autoscaler is on it already.
- Horizon: how long a replica takes from start to serving. Measured (``LoadClock``): each node
  watches the gossiped states of the deployment's replicas and times each from its first
  ``loading``/``starting`` to its first ``ready``/``standby``; the median of the last
  ``LOAD_SAMPLES``. ``autoscaling.prewarm_horizon_s`` is the floor (and the whole horizon before any
  start was seen): ``horizon = max(prewarm_horizon_s, measured)``.

Not on noise: besides the confidence bound, the forecast needs ``MIN_SAMPLES`` samples spanning at
least one window, and it must call on every round for ``scale_up_delay_s / 4`` (two rounds at least)
before the replica is loaded. Simulated with the default knobs and one sample a second (the unit
tests): random demand at 50-60 % of the threshold never fired in 40,000 s; Poisson demand at 65 %
fired once in 20,000 s, where the autoscaler alone already scales up on noise at 75 %. The price
is a slow noisy ramp (+0.05 requests in flight a second) that is often seen no sooner than the
autoscaler sees it; a steady ramp is seen a horizon early. One replica ahead at most, never beyond
``max_replicas``, and only for a deployment that serves (``desired`` at least 1: from zero, the first
waiting request already starts a replica at once).

Hysteresis in time: once fired, the pre-warm holds while the forecast keeps calling for it and for
``horizon + scale_up_delay_s`` after its last call (time for the predicted demand to arrive and the
autoscaler to act on it); then the warm backup is released (placement drains and stops it). It
ends at once when the autoscaler reaches the count: the backup has become a host.

Every node computes the same answer from the same gossip (the demand and the replicas' states are
gossiped, the knobs are in the spec); where two nodes disagree for a moment, only the next node in
rank acts on it, by loading or releasing a replica nobody routes to.

What it costs: the memory of one more loaded model on an idle node while the pre-warm holds, and a
replica started for nothing when a trend stops short of the threshold. Hence off by default.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from .deployment import DeploymentSpec
from .replica_state import ReplicaState
from .types import NodeId

__all__ = [
    "CONFIDENCE",
    "LOAD_SAMPLES",
    "MIN_SAMPLES",
    "Forecast",
    "LoadClock",
    "Prewarmer",
    "Trend",
    "flat_zero",
    "trend",
]

# Samples the trend needs before it may fire (a line through fewer is guesswork).
MIN_SAMPLES = 5
# The trend is fitted over this many autoscaler windows of samples.
LOOKBACK_WINDOWS = 2.0
# Samples kept per window at most; closer ones are dropped (module docstring).
SAMPLES_PER_WINDOW = 20
# Standard errors of the prediction the threshold must lie below (one-sided: 2 is 97.7 %).
CONFIDENCE = 2.0
# Start-to-ready times remembered per deployment; their median is the measured load time.
LOAD_SAMPLES = 5
# A start-to-ready time above this is not believed (a replica stuck, a clock jump).
MAX_LOAD_S = 3600.0
_LOADING = (ReplicaState.LOADING, ReplicaState.STARTING)
_LOADED = (ReplicaState.READY, ReplicaState.STANDBY)


@dataclass(frozen=True)
class Trend:
    """A least-squares line through a demand series, with what its fit says about its error."""

    level: float  # the line's value at `now`
    slope: float  # demand per second
    mean: float  # the series' plain mean
    samples: int
    mean_x: float = 0.0  # the samples' mean time, relative to `now`
    sxx: float = 0.0  # the sum of squared time deviations
    residual: float = 0.0  # the residuals' standard deviation

    def at(self, offset_s: float) -> float:
        """The line's value `offset_s` seconds from `now`."""
        return self.level + self.slope * offset_s

    def error_at(self, offset_s: float) -> float:
        """The standard error of the line's value `offset_s` seconds from `now` (inf with < 3 samples)."""
        if self.samples < 3 or self.sxx <= 0:
            return math.inf
        return self.residual * math.sqrt(1 / self.samples + (offset_s - self.mean_x) ** 2 / self.sxx)


def flat_zero(samples: int) -> Trend:
    """What ``trend`` finds for `samples` values that are all 0: the line at 0, with no scatter."""
    return Trend(0.0, 0.0, 0.0, samples, residual=0.0)


def trend(samples: list[tuple[float, float]], now: float) -> Trend:
    """The least-squares line through (time, value) `samples`, times taken relative to `now`."""
    n = len(samples)
    mean_y = sum(value for _, value in samples) / n if n else 0.0
    mean_x = sum(at - now for at, _ in samples) / n if n else 0.0
    sxx = sum((at - now - mean_x) ** 2 for at, _ in samples)
    if n < 3 or sxx <= 0:
        return Trend(mean_y, 0.0, mean_y, n)
    slope = sum((at - now - mean_x) * (value - mean_y) for at, value in samples) / sxx
    residuals = sum((value - mean_y - slope * (at - now - mean_x)) ** 2 for at, value in samples)
    return Trend(mean_y - slope * mean_x, slope, mean_y, n, mean_x, sxx, math.sqrt(residuals / (n - 2)))


@dataclass(frozen=True)
class Forecast:
    """What the predictor says now (``GET /v1/deployments`` shows it)."""

    replicas: int  # replicas to keep loaded: `desired`, plus one while a pre-warm holds
    desired: int  # the autoscaler's count it was computed against
    predicted: float  # the autoscaler's mean concurrency predicted at now + horizon
    slope: float  # demand per second, 0 when not significant
    horizon_s: float
    reason: str | None  # why a replica is pre-warmed; None when none is

    @property
    def extra(self) -> int:
        """Warm backups to add for the pre-warm: 0 or 1."""
        return max(self.replicas - self.desired, 0)


class Prewarmer:
    """The pre-warm forecast of one deployment, from a stream of demand samples."""

    def __init__(self, spec: DeploymentSpec) -> None:
        self.spec = spec
        self._samples: deque[tuple[float, float]] = deque()
        # Samples kept that are not 0: with none, the line is flat at 0 (``ZERO``), no fit needed.
        self._nonzero = 0
        self._calling_since: float | None = None
        self._calls = 0
        self._target: int | None = None  # the replica count pre-warmed for, while the pre-warm holds
        self._last_call = 0.0
        self._reason: str | None = None

    def observe(self, now: float, demand: float, desired: int, horizon_s: float) -> Forecast:
        """Take one demand sample and the autoscaler's `desired`; what to keep loaded now."""
        knobs, spec = self.spec.autoscaling, self.spec
        window = knobs.window_s
        lookback = window * LOOKBACK_WINDOWS
        if not self._samples or now - self._samples[-1][0] >= window / SAMPLES_PER_WINDOW:
            self._samples.append((now, demand))
            self._nonzero += demand != 0
        while self._samples and self._samples[0][0] < now - lookback:
            self._nonzero -= self._samples.popleft()[1] != 0
        # A series of zeros fits the flat line at 0 exactly, as ``trend`` would find it in O(samples).
        fit = trend(list(self._samples), now) if self._nonzero else flat_zero(len(self._samples))
        # The autoscaler's mean over the window that ends a horizon from now: the line at its middle.
        offset = horizon_s - window / 2
        predicted = max(fit.at(offset), 0.0)
        low = predicted - CONFIDENCE * fit.error_at(offset)
        slope = fit.slope
        enough = fit.samples >= MIN_SAMPLES and now - self._samples[0][0] >= lookback / 2
        ahead = min(desired + 1, spec.max_replicas)
        calling = (
            knobs.prewarm
            and enough
            and slope > 0
            and 1 <= desired < spec.max_replicas
            and math.ceil(low / knobs.target_concurrency - 1e-9) > desired
        )
        if calling:
            if self._calling_since is None:
                self._calling_since, self._calls = now, 0
            self._calls += 1
            confirmed = self._calls >= 2 and now - self._calling_since >= knobs.scale_up_delay_s / 4
            if confirmed and (self._target is None or self._target < ahead):
                self._target = ahead
                self._reason = (
                    f"demand rising {slope:.3g}/s: {predicted:.3g} in flight predicted in "
                    f"{horizon_s:.3g} s, above {desired} x {knobs.target_concurrency:g}"
                )
            if confirmed:
                self._last_call = now
        else:
            self._calling_since = None
        if self._target is not None:
            expired = now - self._last_call > horizon_s + knobs.scale_up_delay_s
            if not knobs.prewarm or desired >= self._target or desired < 1 or expired:
                self._target, self._reason = None, None
        replicas = min(max(self._target or desired, desired), spec.max_replicas)
        return Forecast(replicas, desired, predicted, slope, horizon_s, self._reason)

    def respec(self, spec: DeploymentSpec) -> None:
        """The deployment changed: keep the series, apply the new knobs from the next sample."""
        self.spec = spec

    def idle(self) -> bool:
        """Whether an ``observe`` of no demand now changes nothing but the series (which holds only 0s).

        No pre-warm holds and none is being called for; ``idle_observe`` then does all that
        ``observe(now, 0, ...)`` would, and its forecast is the last one.
        """
        return self._nonzero == 0 and self._target is None and self._calling_since is None

    def idle_observe(self, now: float) -> None:
        """``observe(now, 0, ...)`` while ``idle()``: a zero sample when one is due, old ones dropped."""
        window = self.spec.autoscaling.window_s
        if not self._samples or now - self._samples[-1][0] >= window / SAMPLES_PER_WINDOW:
            self._samples.append((now, 0.0))
        while self._samples and self._samples[0][0] < now - window * LOOKBACK_WINDOWS:
            self._samples.popleft()


class LoadClock:
    """How long a deployment's replicas take from start to serving, as watched in gossip."""

    def __init__(self) -> None:
        self._started: dict[NodeId, float] = {}
        self._times: deque[float] = deque(maxlen=LOAD_SAMPLES)

    def observe(self, now: float, states: Mapping[NodeId, ReplicaState]) -> None:
        """The replicas' states now, by node: time each one from first loading to first loaded.

        A replica first seen already loaded is not timed; one first seen halfway through its load
        is timed from then (an underestimate, which the horizon's floor covers).
        """
        for node, state in states.items():
            if state in _LOADING:
                self._started.setdefault(node, now)
            elif state in _LOADED and node in self._started:
                took = now - self._started.pop(node)
                if 0 <= took <= MAX_LOAD_S:
                    self._times.append(took)
        for node in [node for node in self._started if states.get(node) not in _LOADING]:
            del self._started[node]  # failed, stopped or gone before it was ready

    def idle(self) -> bool:
        """Whether no start is being timed: then an ``observe`` of no replicas changes nothing."""
        return not self._started

    def load_s(self) -> float | None:
        """The median of the last start-to-ready times, or None before any was seen."""
        return statistics.median(self._times) if self._times else None

    def horizon_s(self, spec: DeploymentSpec) -> float:
        """How far ahead the forecast looks: the measured load time, at least ``prewarm_horizon_s``."""
        return max(spec.autoscaling.prewarm_horizon_s, self.load_s() or 0.0)

"""What ``meshnode top`` shows, as data: a node's answers in, rows out (``top_draw.py`` draws them).

``summarize`` turns a ``GET /v1/mesh`` body and a ``GET /v1/deployments`` body into ``TopData``:
a row per member (status, where it is, its device, CPU, memory, requests in flight, how it is
reached, the replicas it hosts, the requests per second clients send it) and a row per deployment
(ready of desired, why it is short, its requests and errors per second, mean and 99th percentile
latency over the mesh). A ``Frame`` is what one refresh shows: the data, when it was asked, and the
latest failure; ``to_json`` is the frame for ``--json``. Nothing here does I/O or reads a clock.

Rates come from one of two places, and ``TopData.rates`` says which:

- ``"measured"``: the deltas of every node's request counters between two scrapes of its
  ``/metrics`` (``top_rates.py``), exact over the last refresh interval;
- ``"gossiped"``, before there are two scrapes or where ``/metrics`` cannot be read: each member's
  gossiped ``traffic``, the requests clients sent it over its last 10 s window
  (``mesh/traffic.py``): rates and errors add up, the 99th percentile is read from the summed
  histograms. From members of older versions, which gossip no traffic, their ``speeds``
  (``{deployment: {"service_ms", "rps"}}``) instead: a rate measured where the replicas run, and
  re-gossiped only when the service time moves, so it can be minutes old.

``member_rates`` is the one place that reads ``speeds``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..mesh.traffic import mesh_traffic
from .deploy_wait import reason_of
from .peers import device_summary, reach_summary
from .top_rates import Measured, Traffic

__all__ = [
    "LIVE",
    "DeploymentRow",
    "Frame",
    "NodeRow",
    "Rate",
    "TopData",
    "member_rates",
    "summarize",
    "to_json",
]

# States of a member that still serves, as far as the node asked knows.
LIVE = ("alive", "suspect")


@dataclass(frozen=True)
class Rate:
    """One deployment's measured speed on one node (or summed over the mesh)."""

    rps: float
    service_ms: float | None = None


@dataclass(frozen=True)
class NodeRow:
    """One member as ``top`` shows it."""

    id: str
    name: str
    status: str
    is_self: bool
    region: str
    zone: str
    device: str
    cpu_percent: float | None
    memory_percent: float | None
    in_flight: int | None
    reach: str
    # Deployment -> the state of its replica here (starting, ready, standby, failed...).
    replicas: dict[str, str]
    # Requests per second clients sent to it (measured rates only; None before).
    rps: float | None
    # The member's gossiped ``traffic``, as it came, when it has one (not drawn yet).
    traffic: Any = None


@dataclass(frozen=True)
class DeploymentRow:
    """One deployment as ``top`` shows it."""

    name: str
    app: str
    ready: int
    desired: int
    min_replicas: int
    max_replicas: int
    # Why it cannot be placed or is short, in the node's words (``deploy_wait.reason_of``).
    reason: str | None
    rps: float
    # Errors per second and the 99th percentile: measured rates only (None when gossiped).
    errors_per_s: float | None
    # Mean latency: of the whole request where measured, of the replica's service where gossiped.
    mean_ms: float | None
    p99_ms: float | None
    # (node, state) of every replica, by node name.
    replicas: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TopData:
    """The mesh as one node sees it: its members and the deployments."""

    self_name: str
    nodes: tuple[NodeRow, ...]
    deployments: tuple[DeploymentRow, ...]
    # Where the rates come from (module docstring), and over how long they were measured.
    rates: str = "gossiped"
    measured_s: float | None = None

    @property
    def alive(self) -> int:
        """Members alive or suspect (still serving as far as this node knows)."""
        return sum(1 for node in self.nodes if node.status in LIVE)

    @property
    def rps(self) -> float:
        """Requests per second over the whole mesh."""
        return sum(deployment.rps for deployment in self.deployments)

    @property
    def rates_in_words(self) -> str:
        """Where the rates come from, for the deployments table's title."""
        if self.rates == "measured" and self.measured_s is not None:
            return f"rates over {self.measured_s:.1f} s"
        if self.rates == "traffic":
            return "rates over the nodes' last 10 s, as gossiped"
        return "rates as last gossiped"


@dataclass(frozen=True)
class Frame:
    """What one refresh shows: the data (the last that arrived), where from, and any failure."""

    asked: str  # the --node URL
    answered_by: str | None  # the URL that answered last (another member's when the asked one failed)
    data: TopData | None
    at: float  # wall-clock time the data arrived
    error: str | None = None  # the latest refresh's failure; the data is then older
    interval_s: float | None = None  # None for a single frame (--once)
    notes: tuple[str, ...] = field(default_factory=tuple)


def member_rates(member: Mapping[str, Any]) -> dict[str, Rate]:
    """A member's measured rate per deployment, from its gossiped ``speeds`` (leniently: peers' data)."""
    speeds = member.get("speeds")
    rates = {}
    for name, speed in speeds.items() if isinstance(speeds, Mapping) else ():
        if not isinstance(speed, Mapping):
            continue
        rps, service_ms = _float(speed.get("rps")), _float(speed.get("service_ms"))
        rates[str(name)] = Rate(
            rps if rps is not None and rps >= 0 else 0.0,
            service_ms if service_ms is not None and service_ms >= 0 else None,
        )
    return rates


def summarize(
    mesh: Mapping[str, Any], deployments: Mapping[str, Any], measured: Measured | None = None
) -> TopData:
    """``TopData`` from a ``/v1/mesh`` and a ``/v1/deployments`` body of the same node.

    With `measured` (``top_rates.measure``) the rates are those; without, the gossiped speeds.
    """
    self_id = mesh.get("self")
    listed = mesh.get("members")
    members = [m for m in (listed if isinstance(listed, list) else []) if isinstance(m, Mapping)]
    members.sort(key=lambda m: (m.get("id") != self_id, str(m.get("name", "")), str(m.get("id", ""))))
    names = {member.get("id"): str(member.get("name") or member.get("id") or "-") for member in members}
    live = [m for m in members if m.get("status") in LIVE]
    rates = {str(m.get("id")): member_rates(m) for m in live}
    entered = measured.nodes if measured is not None else {}
    if measured is None and any(isinstance(m.get("traffic"), Mapping) and m.get("traffic") for m in live):
        gossiped = mesh_traffic((str(m.get("id")), m.get("traffic")) for m in live)
        entered = {str(m.get("id")): _window_rps(m.get("traffic")) for m in live}
        seen = {name: _seen(row) for name, row in gossiped["deployments"].items()}
        measured = Measured(0.0, seen, entered)
    nodes = tuple(_node_row(member, member.get("id") == self_id, names, entered) for member in members)
    items = deployments.get("deployments")
    rows = tuple(
        _deployment_row(item, rates.values(), measured)
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, Mapping)
    )
    self_name = next((node.name for node in nodes if node.is_self), "?")
    if measured is None:
        return TopData(self_name, nodes, rows)
    if not measured.seconds:  # read from the gossiped traffic windows
        return TopData(self_name, nodes, rows, "traffic")
    return TopData(self_name, nodes, rows, "measured", measured.seconds)


def to_json(frame: Frame) -> dict[str, Any]:
    """The frame's data for ``--json``: plain types only."""
    data = frame.data
    return {
        "node": frame.asked,
        "answered_by": frame.answered_by,
        "time": frame.at,
        "error": frame.error,
        "notes": list(frame.notes),
        "self": data.self_name if data else None,
        "members": {"total": len(data.nodes), "alive": data.alive} if data else None,
        "rps": round(data.rps, 3) if data else None,
        "rates": data.rates if data else None,
        "measured_s": data.measured_s if data else None,
        "nodes": [asdict(node) for node in data.nodes] if data else [],
        "deployments": [
            {**asdict(row), "replicas": [{"node": n, "status": s} for n, s in row.replicas]}
            for row in (data.deployments if data else ())
        ],
    }


def _node_row(
    member: Mapping[str, Any], is_self: bool, names: Mapping[Any, str], entered: Mapping[str, float]
) -> NodeRow:
    load = member.get("load")
    load = load if isinstance(load, Mapping) else {}
    cpu, used, total = (_float(load.get(key)) for key in ("cpu", "mem_used", "mem_total"))
    in_flight = load.get("in_flight")
    replicas = member.get("replicas")
    states = {
        str(name): str(entry.get("state") or "?")
        for name, entry in (replicas.items() if isinstance(replicas, Mapping) else ())
        if isinstance(entry, Mapping)
    }
    node_id = str(member.get("id") or "")
    return NodeRow(
        id=node_id,
        name=str(member.get("name") or node_id[:8] or "-"),
        status=str(member.get("status") or "-"),
        is_self=is_self,
        region=str(member.get("region") or ""),
        zone=str(member.get("zone") or ""),
        device=device_summary(member.get("device")),
        cpu_percent=cpu,
        memory_percent=100.0 * used / total if used is not None and total else None,
        in_flight=in_flight if isinstance(in_flight, int) and not isinstance(in_flight, bool) else None,
        reach=reach_summary(member, names),
        replicas=states,
        rps=entered.get(node_id),
        traffic=member.get("traffic"),
    )


def _deployment_row(
    item: Mapping[str, Any], rates: Iterable[Mapping[str, Rate]], measured: Measured | None
) -> DeploymentRow:
    name = str(item.get("name") or "?")
    replicas = item.get("replicas")
    listed = tuple(
        (str(r.get("node") or "?"), str(r.get("status") or "?"))
        for r in (replicas if isinstance(replicas, list) else [])
        if isinstance(r, Mapping)
    )
    row = DeploymentRow(
        name=name,
        app=str(item.get("app") or "-"),
        ready=_count(item.get("ready")),
        desired=_count(item.get("desired")),
        min_replicas=_count(item.get("min_replicas")),
        max_replicas=_count(item.get("max_replicas")),
        reason=reason_of(item),
        rps=0.0,
        errors_per_s=None,
        mean_ms=None,
        p99_ms=None,
        replicas=listed,
    )
    if measured is not None:
        seen = measured.deployments.get(name)
        if seen is None:  # no request entered anywhere during the interval
            return replace(row, errors_per_s=0.0)
        return replace(
            row, rps=seen.rps, errors_per_s=seen.errors_per_s, mean_ms=seen.mean_ms, p99_ms=seen.p99_ms
        )
    gossiped = [per_node[name] for per_node in rates if name in per_node]
    timed = [(rate.service_ms, rate.rps) for rate in gossiped if rate.service_ms is not None]
    mean_ms: float | None = None
    if timed:
        # Weighted by rate: the mean a request sees; a plain mean while nothing is flowing.
        weights = [weight for _, weight in timed]
        if sum(weights) <= 0:
            weights = [1.0] * len(timed)
        mean_ms = sum(ms * weight for (ms, _), weight in zip(timed, weights, strict=True)) / sum(weights)
    return replace(row, rps=sum(rate.rps for rate in gossiped), mean_ms=mean_ms)


def _window_rps(traffic: Any) -> float:
    """Requests per second a member's gossiped traffic window says clients sent it."""
    totals = mesh_traffic([("", traffic)])["deployments"]
    return sum(row["rps"] for row in totals.values())


def _seen(row: Mapping[str, Any]) -> Traffic:
    """A deployment's mesh-wide numbers from the gossiped windows, as a measured sample."""
    return Traffic(row["rps"], row["errors_ps"], None, row["p50_ms"], row["p99_ms"])


def _float(value: object) -> float | None:
    """A number from a peer's data, or None for anything else (booleans and NaN included)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

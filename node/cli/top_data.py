"""What ``meshnode top`` shows, as pure functions: two answers of a node in, one frame out.

``summarize`` turns a ``GET /v1/mesh`` body and a ``GET /v1/deployments`` body into ``TopData``:
a row per member (status, where it is, its device, CPU, memory, requests in flight, how it is
reached, the replicas it hosts, the requests per second it serves) and a row per deployment (ready
of desired, why it is short, its rate and mean service time over the mesh). ``render`` draws a
``Frame`` (the data, when it was asked, and the latest failure) as rich renderables; ``to_json``
is the same data for ``--json``. Nothing here does I/O or reads a clock.

Rates come from each member's gossiped ``speeds`` (``{deployment: {"service_ms", "rps"}}``,
``load.SpeedMeter``: completions per second over the last 10 s, and a smoothed mean service time),
measured where the replicas run, so one view holds the whole mesh's rates without asking every node:
a deployment's rate is the sum over its replicas, its latency their mean weighted by rate.
``member_rates`` is the one place that reads them: when members gossip richer ``traffic`` (errors,
percentiles), that is where it is read, and its raw value already travels in ``NodeRow.traffic``
and the JSON.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .deploy_wait import reason_of
from .peers import device_summary, reach_summary
from .text_table import state_style, styled, table

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.text import Text

__all__ = [
    "DeploymentRow",
    "Frame",
    "NodeRow",
    "Rate",
    "TopData",
    "member_rates",
    "render",
    "summarize",
    "to_json",
]

_LIVE = ("alive", "suspect")


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
    # Requests per second its replicas complete, all deployments together.
    rps: float
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
    service_ms: float | None
    # (node, state) of every replica, by node name.
    replicas: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TopData:
    """The mesh as one node sees it: its members and the deployments."""

    self_name: str
    nodes: tuple[NodeRow, ...]
    deployments: tuple[DeploymentRow, ...]

    @property
    def alive(self) -> int:
        """Members alive or suspect (still serving as far as this node knows)."""
        return sum(1 for node in self.nodes if node.status in _LIVE)

    @property
    def rps(self) -> float:
        """Requests per second over the whole mesh."""
        return sum(deployment.rps for deployment in self.deployments)


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


def summarize(mesh: Mapping[str, Any], deployments: Mapping[str, Any]) -> TopData:
    """``TopData`` from a ``/v1/mesh`` and a ``/v1/deployments`` body of the same node."""
    self_id = mesh.get("self")
    listed = mesh.get("members")
    members = [m for m in (listed if isinstance(listed, list) else []) if isinstance(m, Mapping)]
    members.sort(key=lambda m: (m.get("id") != self_id, str(m.get("name", "")), str(m.get("id", ""))))
    names = {member.get("id"): str(member.get("name") or member.get("id") or "-") for member in members}
    rates = {str(m.get("id")): member_rates(m) for m in members if m.get("status") in _LIVE}
    nodes = tuple(_node_row(member, member.get("id") == self_id, names, rates) for member in members)
    items = deployments.get("deployments")
    rows = tuple(
        _deployment_row(item, rates.values())
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, Mapping)
    )
    self_name = next((node.name for node in nodes if node.is_self), "?")
    return TopData(self_name, nodes, rows)


def to_json(frame: Frame) -> dict[str, Any]:
    """The frame's data for ``--json``: plain types only."""
    data = frame.data
    return {
        "node": frame.asked,
        "answered_by": frame.answered_by,
        "time": frame.at,
        "error": frame.error,
        "self": data.self_name if data else None,
        "members": {"total": len(data.nodes), "alive": data.alive} if data else None,
        "rps": round(data.rps, 3) if data else None,
        "nodes": [asdict(node) for node in data.nodes] if data else [],
        "deployments": [
            {**asdict(row), "replicas": [{"node": n, "status": s} for n, s in row.replicas]}
            for row in (data.deployments if data else ())
        ],
    }


def render(frame: Frame) -> RenderableType:
    """The frame drawn: a headline, the failure if any, the nodes table, the deployments table."""
    from rich.console import Group

    parts: list[RenderableType] = [_headline(frame)]
    if frame.error:
        shown = "" if frame.data is None else f"; showing the view of {_clock(frame.at)}"
        retry = f", retrying every {frame.interval_s:g} s" if frame.interval_s else ""
        parts.append(styled(f"{frame.error}{retry}{shown}", "bold red"))
    parts += [styled(note, "yellow") for note in frame.notes]
    if frame.data is not None:
        parts += [styled(""), nodes_table(frame.data.nodes), styled(""), deployments_table(frame.data)]
    return Group(*parts)


def nodes_table(nodes: Sequence[NodeRow]) -> RenderableType:
    """A row per member; this node first, marked ``*``."""
    header = (
        "",
        "NODE",
        "STATUS",
        "REGION/ZONE",
        "DEVICE",
        "CPU",
        "MEM",
        "IN FLIGHT",
        "REQ/S",
        "REACH",
        "REPLICAS",
    )
    rows = [
        (
            "*" if node.is_self else "",
            node.name,
            styled(node.status, state_style(node.status)),
            "/".join(part for part in (node.region, node.zone) if part) or "-",
            node.device,
            _percent(node.cpu_percent),
            _percent(node.memory_percent),
            "-" if node.in_flight is None else str(node.in_flight),
            _rate(node.rps) if node.status in _LIVE else "-",
            node.reach,
            _replicas_text(sorted(node.replicas.items())),
        )
        for node in nodes
    ]
    return table(
        header,
        rows,
        wrap={10},
        right={5, 6, 7, 8},
        # Narrow: where it runs and what it is go before what it is doing.
        drop=(9, 3, 4, 6, 7),
        title=f"NODES ({sum(1 for n in nodes if n.status in _LIVE)} of {len(nodes)} up)",
    )


def deployments_table(data: TopData) -> RenderableType:
    """A row per deployment: ready of desired, rate, latency, replicas, and why it is short."""
    from rich.console import Group

    if not data.deployments:
        return styled("no deployments (meshnode deploy NAME APP)", "dim")
    header = ("DEPLOYMENT", "READY", "REQ/S", "LATENCY", "REPLICAS", "APP")
    rows = [
        (
            row.name,
            styled(f"{row.ready}/{row.desired}", "green" if row.ready >= row.desired else "yellow"),
            _rate(row.rps),
            "-" if row.service_ms is None else _milliseconds(row.service_ms),
            _replicas_text(row.replicas),
            row.app,
        )
        for row in data.deployments
    ]
    drawn = table(header, rows, wrap={4, 5}, right={1, 2, 3}, drop=(5, 3), title="DEPLOYMENTS")
    reasons = [styled(f"{row.name}: {row.reason}", "yellow") for row in data.deployments if row.reason]
    return Group(drawn, *reasons)


def _headline(frame: Frame) -> Text:
    from rich.text import Text

    line = Text("meshnode top", style="bold")
    data = frame.data
    where = frame.answered_by or frame.asked
    if data is not None:
        line.append(f"  {data.self_name}'s view ({where})")
        line.append(f"  {data.alive}/{len(data.nodes)} nodes up  {len(data.deployments)} deployments")
        line.append(f"  {_rate(data.rps)} req/s", style="bold")
    else:
        line.append(f"  {where}")
    line.append(f"  {_clock(frame.at)}")
    if frame.interval_s:
        line.append(f"  every {frame.interval_s:g} s, Ctrl-C quits", style="dim")
    return line


def _node_row(
    member: Mapping[str, Any], is_self: bool, names: Mapping[Any, str], rates: Mapping[str, dict[str, Rate]]
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
        rps=sum(rate.rps for rate in rates.get(node_id, {}).values()),
        traffic=member.get("traffic"),
    )


def _deployment_row(item: Mapping[str, Any], rates: Iterable[Mapping[str, Rate]]) -> DeploymentRow:
    name = str(item.get("name") or "?")
    measured = [per_node[name] for per_node in rates if name in per_node]
    rps = sum(rate.rps for rate in measured)
    timed = [(rate.service_ms, rate.rps) for rate in measured if rate.service_ms is not None]
    service_ms: float | None = None
    if timed:
        # Weighted by rate: the mean a request sees; a plain mean while nothing is flowing.
        weights = [weight for _, weight in timed]
        if sum(weights) <= 0:
            weights = [1.0] * len(timed)
        service_ms = sum(ms * weight for (ms, _), weight in zip(timed, weights, strict=True)) / sum(weights)
    replicas = item.get("replicas")
    listed = tuple(
        (str(r.get("node") or "?"), str(r.get("status") or "?"))
        for r in (replicas if isinstance(replicas, list) else [])
        if isinstance(r, Mapping)
    )
    return DeploymentRow(
        name=name,
        app=str(item.get("app") or "-"),
        ready=_count(item.get("ready")),
        desired=_count(item.get("desired")),
        min_replicas=_count(item.get("min_replicas")),
        max_replicas=_count(item.get("max_replicas")),
        reason=reason_of(item),
        rps=rps,
        service_ms=service_ms,
        replicas=listed,
    )


def _replicas_text(replicas: Sequence[tuple[str, str]]) -> Text:
    from rich.text import Text

    text = Text()
    for name, state in replicas:
        if text:
            text.append(", ")
        text.append(f"{name} ")
        text.append(state, style=state_style(state))
    return text if text else Text("-")


def _float(value: object) -> float | None:
    """A number from a peer's data, or None for anything else (booleans and NaN included)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _rate(rps: float) -> str:
    return "0" if rps == 0 else f"{rps:.1f}" if rps >= 10 else f"{rps:.2f}"


def _milliseconds(ms: float) -> str:
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))

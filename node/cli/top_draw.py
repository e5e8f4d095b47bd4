"""How ``meshnode top`` draws a frame: rich renderables from ``top_data``'s rows, nothing else.

``render`` stacks a headline (whose view, how many nodes are up, the mesh's request rate, the time),
the latest failure in red, notes in yellow, then the nodes table and the deployments table (with
the reasons a deployment is short under it). The tables are the CLI's (``text_table.table``): on a
narrow terminal their least useful columns go first; in a pipe they are plain text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .text_table import state_style, styled, table
from .top_data import LIVE, Frame, NodeRow, TopData

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.text import Text

__all__ = ["deployments_table", "nodes_table", "render"]


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
            "-" if node.rps is None else _rate(node.rps),
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
        title=f"NODES ({sum(1 for n in nodes if n.status in LIVE)} of {len(nodes)} up)",
    )


def deployments_table(data: TopData) -> RenderableType:
    """A row per deployment: ready of desired, rate, latency, replicas, and why it is short."""
    from rich.console import Group

    if not data.deployments:
        return styled("no deployments (meshnode deploy NAME APP)", "dim")
    header = ("DEPLOYMENT", "READY", "REQ/S", "ERR/S", "LATENCY", "P99", "REPLICAS", "APP")
    rows = [
        (
            row.name,
            styled(f"{row.ready}/{row.desired}", "green" if row.ready >= row.desired else "yellow"),
            _rate(row.rps),
            styled(_rate(row.errors_per_s), "bold red" if row.errors_per_s else "")
            if row.errors_per_s is not None
            else "-",
            _milliseconds(row.mean_ms),
            _milliseconds(row.p99_ms),
            _replicas_text(row.replicas),
            row.app,
        )
        for row in data.deployments
    ]
    drawn = table(
        header,
        rows,
        wrap={6, 7},
        right={1, 2, 3, 4, 5},
        drop=(7, 5, 3, 4),
        title=f"DEPLOYMENTS ({data.rates_in_words})",
    )
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


def _replicas_text(replicas: Sequence[tuple[str, str]]) -> Text:
    from rich.text import Text

    text = Text()
    for name, state in replicas:
        if text:
            text.append(", ")
        text.append(f"{name} ")
        text.append(state, style=state_style(state))
    return text if text else Text("-")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _rate(rps: float) -> str:
    """Requests per second in about three digits."""
    return "0" if rps == 0 else f"{rps:.1f}" if rps >= 10 else f"{rps:.2f}"


def _milliseconds(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))

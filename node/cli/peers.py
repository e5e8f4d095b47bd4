"""``meshnode peers``: the members of the mesh as one node sees them, as a table or JSON.

``peers_table`` draws a ``/v1/mesh`` body (styled on a terminal, plain text in a pipe:
``text_table.py``); ``format_peers_table`` is its plain text, shared with ``meshnode demo``, as is
``peer_changes``, the lines a live view prints instead of the whole table where stdout is not a
terminal. The cell summaries (device, load, reach, models) are shared with ``meshnode top``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import click

from ..config import DEFAULT_NODE_URL
from .node_http import NodeAccess, access_options, discover_options, request_node
from .params import NodeURL
from .text_table import FitTable, plain, show, state_style, styled, table

__all__ = [
    "device_summary",
    "discover_node",
    "fetch_mesh",
    "format_peers_table",
    "load_summary",
    "models_summary",
    "peer_changes",
    "peers",
    "peers_table",
    "reach_summary",
]

# A node answers /v1/mesh from memory; 5 s only ever expires for a hung or unreachable node.
PEERS_TIMEOUT_S = 5.0
# Long enough for mDNS announcements of every node on a quiet LAN to arrive.
DISCOVER_TIMEOUT_S = 2.0


@click.command()
@click.option(
    "--node",
    "node_url",
    type=NodeURL(),
    default=None,
    show_default=DEFAULT_NODE_URL,
    help="Any node's HTTP address (https://HOST:PORT for a node with a certificate).",
)
@access_options
@click.option("--json", "as_json", is_flag=True, help="Print the raw /v1/mesh body.")
@discover_options
def peers(
    node_url: str | None,
    access: NodeAccess,
    as_json: bool,
    discover: bool,
    interfaces: tuple[str, ...],
    mesh_id: str,
) -> None:
    """Show the members of the mesh as one node sees them."""
    if node_url is None:
        node_url = discover_node(interfaces, mesh_id) if discover else DEFAULT_NODE_URL
    view = fetch_mesh(node_url, access=access)
    if as_json:
        click.echo(json.dumps(view, indent=2))
    else:
        show(peers_table(view))


def discover_node(interfaces: Sequence[str], mesh_id: str) -> str:
    """The HTTP URL of a node of `mesh_id` that answers mDNS on `interfaces`; a ClickException if none."""
    if not interfaces:
        raise click.UsageError("--discover needs at least one --interface to browse mDNS on")
    from ..membership.discovery import browse_once

    try:
        found = asyncio.run(browse_once(list(interfaces), mesh_id, DISCOVER_TIMEOUT_S))
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc
    if not found:
        raise click.ClickException(
            f"no node of mesh {mesh_id!r} answered mDNS on {', '.join(interfaces)} "
            f"within {DISCOVER_TIMEOUT_S:g} s; name any node of the mesh with --node URL instead"
        )
    return found[0].http_url


def fetch_mesh(
    node_url: str, timeout_s: float = PEERS_TIMEOUT_S, *, access: NodeAccess | None = None
) -> dict[str, Any]:
    """GET ``/v1/mesh`` from a node; a ``ClickException`` naming the URL if that fails."""
    response = request_node("GET", node_url, "/v1/mesh", access or NodeAccess(), timeout_s=timeout_s)
    try:
        view = response.json()
    except ValueError as exc:
        raise click.ClickException(f"{node_url} did not answer JSON; is it a meshnode?") from exc
    if not isinstance(view, dict) or not isinstance(view.get("members"), list):
        raise click.ClickException(f"{node_url} answered an unexpected body; is it a meshnode?")
    return view


def format_peers_table(view: Mapping[str, Any]) -> str:
    """A ``/v1/mesh`` body as a plain-text table, this node first and marked with ``*``."""
    return plain(peers_table(view))


def peers_table(view: Mapping[str, Any]) -> FitTable:
    """A ``/v1/mesh`` body as a table, this node first and marked with ``*``, states in colour."""
    self_id = view.get("self")
    members = [member for member in view.get("members", []) if isinstance(member, Mapping)]
    members.sort(key=lambda m: (m.get("id") != self_id, str(m.get("name", "")), str(m.get("id", ""))))
    header = ("", "NAME", "ID", "STATUS", "REACH", "HTTP", "DEVICE", "LOAD", "MODELS")
    names = {member.get("id"): str(member.get("name") or member.get("id") or "-") for member in members}
    rows = [
        (
            "*" if member.get("id") == self_id else "",
            str(member.get("name") or "-"),
            str(member.get("id") or "-")[:8],
            styled(member.get("status") or "-", state_style(member.get("status"))),
            reach_summary(member, names),
            str(member.get("http") or "-"),
            device_summary(member.get("device")),
            load_summary(member.get("load")),
            models_summary(member.get("models")),
        )
        for member in members
    ]
    # On a narrow terminal the id, address and reach go first; name and status always stay.
    return table(header, rows, wrap={8}, drop=(2, 5, 4, 6, 8))


def reach_summary(member: Mapping[str, Any], names: Mapping[Any, str]) -> str:
    """How peers reach the member (docs/edge.md): "direct", "via RELAY,...", or "-" while unknown."""
    reach = member.get("reach")
    if reach == "relayed":
        relays = member.get("relays")
        listed = [names.get(relay, str(relay)[:8]) for relay in relays] if isinstance(relays, list) else []
        return "via " + ",".join(listed) if listed else "no relay"
    return "direct" if reach == "direct" else "-"


def peer_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """One line per member that joined, went, changed status or changed models between two views.

    Load is left out: it moves every few seconds, and a line per move would be the whole table again.
    """
    old, new = _members_by_id(before), _members_by_id(after)
    lines = []
    for node_id, member in new.items():
        name = str(member.get("name") or node_id[:8])
        previous = old.get(node_id)
        if previous is None:
            lines.append(f"{name} joined ({member.get('status') or '-'})")
            continue
        if previous.get("status") != member.get("status"):
            lines.append(f"{name}: {previous.get('status') or '-'} -> {member.get('status') or '-'}")
        models, were = models_summary(member.get("models")), models_summary(previous.get("models"))
        if models != were:
            lines.append(f"{name}: models {were} -> {models}")
    lines += [
        f"{member.get('name') or node_id[:8]} no longer listed"
        for node_id, member in old.items()
        if node_id not in new
    ]
    return lines


def _members_by_id(view: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    members = view.get("members")
    return {
        str(member["id"]): member
        for member in (members if isinstance(members, list) else [])
        if isinstance(member, Mapping) and member.get("id")
    }


def device_summary(device: object) -> str:
    """A member's device in a few characters: its accelerator(s), else kind, cores and memory."""
    if not isinstance(device, Mapping):
        return "-"
    listed = device.get("accelerators")
    accelerators = [item for item in listed if isinstance(item, Mapping)] if isinstance(listed, list) else []
    if accelerators:
        name = str(accelerators[0].get("name") or accelerators[0].get("kind") or "accelerator")
        return name if len(accelerators) == 1 else f"{len(accelerators)}x {name}"
    kind, cores, memory = device.get("kind"), device.get("cores"), device.get("memory")
    parts = [str(kind)] if isinstance(kind, str) and kind else []
    if isinstance(cores, int):
        parts.append(f"{cores}c")
    if isinstance(memory, int | float):
        parts.append(f"{memory / 2**30:.1f}G")
    return " ".join(parts) or "-"


def load_summary(load: object) -> str:
    """CPU percent and requests in flight, from a member's gossiped load."""
    if not isinstance(load, Mapping):
        return "-"
    parts = []
    cpu, in_flight = load.get("cpu"), load.get("in_flight")
    if isinstance(cpu, int | float):
        parts.append(f"{cpu:.0f}%")
    if isinstance(in_flight, int):
        parts.append(f"{in_flight} in flight")
    return " ".join(parts) or "-"


def models_summary(models: object, shown: int = 3) -> str:
    """The first `shown` model names, and how many more."""
    if not isinstance(models, list | tuple) or not models:
        return "-"
    names = [str(model) for model in models]
    more = f" +{len(names) - shown}" if len(names) > shown else ""
    return ",".join(names[:shown]) + more

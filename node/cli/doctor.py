"""``meshnode doctor``: why a node sees no one, or no one can reach it, each cause named with a fix.

It asks a node (``--node``, the local one by default) for its view and reads it: whether it sees
anyone, which members it suspects or holds dead, whether peers can dial it or reach it through
relays (docs/edge.md), and whether it advertises an address its peers cannot use. With ``--seed``
it also tries each seed as the agent would (a name lookup, one TCP connection: ``probe_seed``).
Each check prints what it looked at and, when something is wrong, what to do; the exit status is
1 when a check failed.

The checks are pure functions from what was observed to ``Finding``s, so they are tested without
a network; the command only gathers and prints.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import click

from ..addresses import parse_host_port
from ..config import DEFAULT_NODE_URL
from ..errors import ConfigError
from .node_http import NodeAccess, access_options
from .params import HostPort, NodeURL
from .peers import fetch_mesh

__all__ = ["Finding", "doctor", "seed_finding", "view_findings"]

_SEED_PROBE_TIMEOUT_S = 3.0
_SEED_ANSWERS = "it takes TCP connections"  # probe_seed's reason when something listens there

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    """One check's outcome: how it went, what it looked at, and what to do when it went wrong."""

    level: Level
    check: str
    detail: str


def view_findings(view: Mapping[str, Any]) -> list[Finding]:
    """What a node's ``GET /v1/mesh`` body says about its membership and reachability."""
    members = [m for m in view.get("members", []) if isinstance(m, Mapping)]
    names = {m.get("id"): str(m.get("name") or str(m.get("id"))[:8]) for m in members}
    me = next((m for m in members if m.get("id") == view.get("self")), None)
    if me is None:
        return [Finding("fail", "view", "the node's view does not list the node itself: is it a meshnode?")]
    others = [m for m in members if m is not me]
    found = [_peers_finding(me, others)]
    found += [
        Finding("warn", "members", f"{names[m.get('id')]} is {m.get('status')}: {_why(str(m.get('status')))}")
        for m in others
        if m.get("status") in ("suspect", "dead")
    ]
    found.append(_reach_finding(me, names))
    found += [
        Finding(
            "warn", "reach", f"{names[m.get('id')]} is behind NAT and has no relay alive: nobody reaches it"
        )
        for m in others
        if m.get("reach") == "relayed" and m.get("status") == "alive" and not m.get("relays")
    ]
    address = _address_finding(me, others)
    return found + ([address] if address is not None else [])


def seed_finding(seed: str, reason: str) -> Finding:
    """What trying a seed found: `reason` as ``probe_seed`` tells it."""
    if reason.startswith(_SEED_ANSWERS):
        return Finding(
            "ok",
            "seed",
            f"{seed} resolves and takes TCP connections; if this node still sees no one, check that it "
            "runs a meshnode with this node's --mesh-id and token",
        )
    return Finding("fail", "seed", f"{seed}: {reason}")


def _peers_finding(me: Mapping[str, Any], others: Sequence[Mapping[str, Any]]) -> Finding:
    alive = [m for m in others if m.get("status") == "alive"]
    if alive:
        return Finding("ok", "peers", f"this node sees {len(alive)} other member(s) alive")
    if others:
        return Finding("fail", "peers", "no other member is alive in this node's view (see below)")
    return Finding(
        "fail",
        "peers",
        "this node sees no other member: give it --seed HOST:PORT of a node of the mesh (or mDNS on an "
        "interface the others share), the same --mesh-id and token; `meshnode doctor --seed HOST:PORT` "
        "tries a seed",
    )


def _reach_finding(me: Mapping[str, Any], names: Mapping[Any, str]) -> Finding:
    mesh = me.get("mesh") or "?"
    match me.get("reach"):
        case "direct":
            return Finding(
                "ok", "reach", f"peers can dial this node at {mesh} (mesh) and {me.get('data')} (data)"
            )
        case "relayed":
            relays = sorted(names.get(relay, str(relay)[:8]) for relay in me.get("relays") or [])
            if not relays:
                return Finding(
                    "fail",
                    "reach",
                    f"no peer could dial this node at {mesh} and it has no relay: it needs a peer that "
                    "peers can dial (docs/edge.md)",
                )
            return Finding(
                "ok",
                "reach",
                f"no peer could dial this node at {mesh}; it is reached through {', '.join(relays)} "
                "(docs/edge.md). To be dialed directly, open or forward its mesh and data ports and "
                "pass --advertise-mesh/--advertise-data with the address peers reach",
            )
    return Finding("warn", "reach", "not known yet: peers are asked to dial this node once it has some")


def _address_finding(me: Mapping[str, Any], others: Sequence[Mapping[str, Any]]) -> Finding | None:
    """A loopback or wildcard address advertised to peers on other machines."""
    host = _host(str(me.get("mesh") or ""))
    remote = [m for m in others if not _loopback(_host(str(m.get("mesh") or "")))]
    if host in ("0.0.0.0", "::", ""):
        return Finding("fail", "address", f"this node advertises {me.get('mesh')!r}, which no peer can dial")
    if _loopback(host) and remote:
        return Finding(
            "fail",
            "address",
            f"this node advertises {me.get('mesh')}, a loopback address, to peers on other machines: "
            "bind --mesh/--data to an address they reach, or pass --advertise-mesh/--advertise-data",
        )
    return None


def _why(status: str) -> str:
    if status == "dead":
        return "its probes went unanswered past the suspicion timeout (stopped, crashed, or cut off)"
    return "its probes go unanswered now (overloaded, paused, or the network between is losing packets)"


def _host(addr: str) -> str:
    try:
        return parse_host_port(addr, default_host="")[0]
    except ConfigError:
        return ""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option(
    "--node",
    "node_url",
    type=NodeURL(),
    default=DEFAULT_NODE_URL,
    show_default=True,
    help="The node to examine (its HTTP address).",
)
@access_options
@click.option(
    "--seed", "seeds", type=HostPort(seed=True), multiple=True, help="A seed to try, HOST:PORT; repeatable."
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(node_url: str, access: NodeAccess, seeds: tuple[tuple[str, int], ...], as_json: bool) -> None:
    """Explain why a node sees no one, or no one can reach it; exit 1 when a check failed."""
    from ..membership.seed_watch import probe_seed

    found: list[Finding] = []
    try:
        found += view_findings(fetch_mesh(node_url, access=access))
    except click.ClickException as exc:
        found.append(Finding("fail", "node", f"{exc.message}: is `meshnode join` running there?"))
    addresses = [f"{host}:{port}" for host, port in seeds]
    reasons = asyncio.run(_probe_all(addresses, probe_seed))
    found += [seed_finding(seed, reason) for seed, reason in zip(addresses, reasons, strict=True)]
    if as_json:
        click.echo(json.dumps([asdict(finding) for finding in found], indent=2))
    else:
        for finding in found:
            click.echo(f"{finding.level:<4}  {finding.check:<8} {finding.detail}")
    if any(finding.level == "fail" for finding in found):
        raise SystemExit(1)


async def _probe_all(seeds: list[str], probe: Any) -> list[str]:
    return list(await asyncio.gather(*(probe(seed, _SEED_PROBE_TIMEOUT_S) for seed in seeds)))

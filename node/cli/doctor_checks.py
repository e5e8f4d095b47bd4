"""``meshnode doctor``'s checks of the node itself: its view, its address, its token, its counters.

Pure functions from what was observed (``doctor_facts.py``) to ``Finding``s:

- ``view_findings``: from ``GET /v1/mesh``: whether the node sees anyone, the members it suspects
  or holds dead, whether peers can dial it (its dial check, docs/edge.md) or reach it through
  relays, members of a release before load news (a mesh mid-upgrade), and an address advertised
  that peers cannot use (wildcard, loopback to other machines, not an address of the machine the
  node runs on).
- ``token_finding``: whether the doctor's own token is one the node holds (the doctor seals its
  probes with it).
- ``drop_findings``: gossip and data-plane traffic the node dropped because it was not sealed by
  its keys: evidence that a node with another token or mesh id talks to it.

Why peers doubt the node itself (a duplicate id, its own stalls) is ``doctor_suspicions.py``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ..addresses import parse_host_port
from ..errors import ConfigError
from ..mesh.load_news import LOAD_NEWS
from .doctor_facts import Counters, Finding, Level

__all__ = ["drop_findings", "token_finding", "view_findings"]

_VIEW = "this node's view (GET /v1/mesh)"


def view_findings(view: Mapping[str, Any], local_addresses: Collection[str] | None = None) -> list[Finding]:
    """What a node's ``GET /v1/mesh`` body says; `local_addresses`: the node's machine's, when known."""
    members = [m for m in view.get("members", []) if isinstance(m, Mapping)]
    names = {m.get("id"): name_of(m) for m in members}
    me = next((m for m in members if m.get("id") == view.get("self")), None)
    if me is None:
        return [
            Finding("fail", "view", "the node's view does not list the node itself: is it a meshnode?", _VIEW)
        ]
    others = [m for m in members if m is not me]
    found = [_peers_finding(others)]
    found += [
        Finding(
            "warn",
            "members",
            f"{names[m.get('id')]} is {m.get('status')}: {_why(str(m.get('status')))}",
            _VIEW,
        )
        for m in others
        if m.get("status") in ("suspect", "dead")
    ]
    found.append(_reach_finding(me, names))
    found += [
        Finding(
            "warn",
            "reach",
            f"{names[m.get('id')]} is behind NAT and has no relay alive: nobody reaches it",
            _VIEW,
            "it needs a peer that peers can dial (docs/edge.md)",
        )
        for m in others
        if m.get("reach") == "relayed" and m.get("status") == "alive" and not m.get("relays")
    ]
    earlier = [
        names[m.get("id")]
        for m in others
        if m.get("status") in ("alive", "suspect") and LOAD_NEWS not in m.get("features", [LOAD_NEWS])
    ]  # no "features" at all: the view of a node of that release, which cannot tell
    if earlier:
        found.append(
            Finding(
                "warn",
                "releases",
                f"{', '.join(sorted(earlier))} run(s) a release before load news: every node gossips "
                "its whole metadata for each change of load until they are upgraded",
                _VIEW,
                "finish the upgrade (docs/deploy.md, rolling upgrades); a large busy mesh's load "
                'views lag meanwhile (docs/membership.md, "Load goes as a delta")',
            )
        )
    address = _address_finding(me, others, local_addresses)
    return found + ([address] if address is not None else [])


def token_finding(doctor_keys: Sequence[str], node_keys: Sequence[str], source: str, mesh_id: str) -> Finding:
    """Whether the doctor's keys (fingerprints, from `source`) include the node's primary one."""
    tried = "the doctor's token fingerprint against the node's key_ids (GET /v1/mesh)"
    fix = "give the doctor this node's token: --token-file PATH, $MESHNODE_TOKEN or --data-dir of the node"
    if not doctor_keys:
        return Finding(
            "warn", "token", "the doctor found no token, so it cannot speak gossip to the seeds", tried, fix
        )
    if node_keys and not set(doctor_keys) & set(node_keys):
        return Finding(
            "warn",
            "token",
            f"the token the doctor found ({source}, key {doctor_keys[0]}) is not one this node holds "
            f"({', '.join(node_keys)}): its gossip probes speak for another mesh",
            tried,
            fix,
        )
    return Finding(
        "ok",
        "token",
        f"the doctor seals its probes like this node: key {doctor_keys[0]}, mesh id {mesh_id!r}",
        tried,
    )


# reason -> (what arriving packets of that kind mean, what to do)
_GOSSIP_DROPS = {
    "unknown_key": (
        "gossip sealed with a key this node does not hold arrives: a node with another token sends to it",
        "give that node this mesh's token (`meshnode token` prints it), or take this node out of its "
        "--seed list; two meshes may share a LAN only with different --mesh-id",
    ),
    "forged": (
        "gossip sealed with this mesh's token but for another mesh id arrives (or it was altered on "
        "the way): a node with the same token and another --mesh-id sends to it",
        "give both nodes the same --mesh-id",
    ),
    "unsealed": (
        "traffic that is not sealed meshnode gossip arrives on the mesh port: another program, a "
        "port scanner, or a meshnode too old to seal",
        "point that program elsewhere; upgrade old meshnodes",
    ),
}
_DATA_DROPS = {
    "unauthenticated": (
        "connections to the data port fail its handshake: a node with another token tries to forward "
        "here, or another program (a port scanner) talks to the port",
        "give that node this mesh's token; point any other program elsewhere",
    ),
}


def drop_findings(before: Counters, after: Counters, window_s: float) -> list[Finding]:
    """Traffic dropped as not of this mesh: `after` is read `window_s` seconds after `before`."""
    tried = f"the node's drop counters (GET /metrics), read twice {window_s:.0f} s apart"
    found = []
    for kind, table, was, now in (
        ("gossip packet(s)", _GOSSIP_DROPS, before.gossip_dropped, after.gossip_dropped),
        ("data connection(s)", _DATA_DROPS, before.data_dropped, after.data_dropped),
    ):
        for reason, (meaning, fix) in table.items():
            total = now.get(reason, 0.0)
            if total <= 0:
                continue
            recent = total - was.get(reason, 0.0)
            when = f"{recent:.0f} in the last {window_s:.0f} s" if recent > 0 else "none lately"
            level: Level = "fail" if recent > 0 else "warn"
            detail = f"{meaning} ({total:.0f} {kind} dropped as {reason} since it started, {when})"
            found.append(Finding(level, "trust", detail, tried, fix))
    if not found:
        found.append(
            Finding(
                "ok", "trust", "nothing dropped as not of this mesh (no other token or mesh id seen)", tried
            )
        )
    return found


def name_of(member: Mapping[str, Any]) -> str:
    """A member's name, else the start of its id."""
    return str(member.get("name") or str(member.get("id"))[:8])


def _peers_finding(others: Sequence[Mapping[str, Any]]) -> Finding:
    alive = [m for m in others if m.get("status") == "alive"]
    if alive:
        return Finding("ok", "peers", f"this node sees {len(alive)} other member(s) alive", _VIEW)
    if others:
        return Finding("fail", "peers", "no other member is alive in this node's view (see below)", _VIEW)
    return Finding(
        "fail",
        "peers",
        "this node sees no other member",
        _VIEW,
        "give it --seed HOST:PORT of a node of the mesh (or mDNS on an interface the others share), the "
        "same --mesh-id and token; `meshnode doctor --seed HOST:PORT` tries a seed",
    )


def _reach_finding(me: Mapping[str, Any], names: Mapping[Any, str]) -> Finding:
    mesh = me.get("mesh") or "?"
    tried = "the node's dial check: peers asked to dial its mesh address (docs/edge.md)"
    match me.get("reach"):
        case "direct":
            return Finding(
                "ok", "reach", f"peers can dial this node at {mesh} (mesh) and {me.get('data')} (data)", tried
            )
        case "relayed":
            relays = sorted(names.get(relay, str(relay)[:8]) for relay in me.get("relays") or [])
            inbound = (
                f"no peer could dial this node at {mesh}: inbound TCP to its mesh port is dropped (a "
                "firewall here) or the address is not reachable from them (NAT)"
            )
            fix = (
                "open its mesh and data ports (or forward them on the NAT router) and pass "
                "--advertise-mesh/--advertise-data with the address peers reach"
            )
            if not relays:
                return Finding(
                    "fail",
                    "reach",
                    f"{inbound}, and it has no relay",
                    tried,
                    f"{fix}; or give it a peer that peers can dial (docs/edge.md)",
                )
            return Finding(
                "ok",
                "reach",
                f"{inbound}; it is reached through {', '.join(relays)} (docs/edge.md)",
                tried,
                f"to be dialed directly, {fix}",
            )
    return Finding(
        "warn", "reach", "not known yet: peers are asked to dial this node once it has some", tried
    )


def _address_finding(
    me: Mapping[str, Any], others: Sequence[Mapping[str, Any]], local: Collection[str] | None
) -> Finding | None:
    """A wildcard or loopback address advertised to peers on other machines, or one not of this machine."""
    host = _host(str(me.get("mesh") or ""))
    remote = [m for m in others if not _loopback(_host(str(m.get("mesh") or "")))]
    tried = "the mesh address this node advertises, against its peers' and its machine's addresses"
    if host in ("0.0.0.0", "::", ""):
        return Finding(
            "fail",
            "address",
            f"this node advertises {me.get('mesh')!r}, which no peer can dial",
            tried,
            "bind --mesh to an address peers reach, or pass --advertise-mesh HOST:PORT",
        )
    if _loopback(host) and remote:
        return Finding(
            "fail",
            "address",
            f"this node advertises {me.get('mesh')}, a loopback address, to peers on other machines",
            tried,
            "bind --mesh/--data to an address they reach, or pass --advertise-mesh/--advertise-data",
        )
    if local is not None and _is_ip(host) and host not in local and not _loopback(host):
        return Finding(
            "warn",
            "address",
            f"this node advertises {me.get('mesh')}, which is not an address of its machine",
            tried,
            "right behind NAT with the port forwarded (--advertise-mesh); otherwise peers dial a machine "
            "that is not this one: drop --advertise-mesh or fix it",
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


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

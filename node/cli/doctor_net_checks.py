"""``meshnode doctor``'s checks of the network around a node: seeds, ports both ways, clocks, mDNS.

Pure functions from observations (``doctor_facts.py``) to ``Finding``s:

- ``seed_findings``: a seed resolves, takes TCP, and answers gossip sealed with this mesh's token
  and mesh id (a meshnode of another token or mesh id answers TCP and then stays silent).
- ``firewall_findings``: for each peer, the node's TCP connections to the peer's mesh and data
  ports and the peer's to the node's: which port, which direction, and where the drop likely is.
- ``clock_findings``: each peer's wall clock against the node's, against ``max_clock_offset_s``.
- ``mdns_findings``: each mDNS interface (present, up, multicast, the group joinable) and whom
  browsing on it found: nodes of this mesh, of another mesh id, only this node, or nobody at all.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from .doctor_facts import ClockSample, Finding, MdnsProbe, NodeFacts, PeerProbe, SeedProbe, Tried

__all__ = [
    "SEED_ANSWERS",
    "clock_findings",
    "firewall_findings",
    "mdns_findings",
    "seed_findings",
    "view_asymmetry_findings",
]

SEED_ANSWERS = "it takes TCP connections"  # how probe_seed's reason starts when something listens
# Clocks this far apart (a fraction of the bound) are not synchronised, though still accepted.
_CLOCK_WARN_FRACTION = 0.1


def seed_findings(
    probe: SeedProbe, mesh_id: str, node_seeds: Sequence[str] | None, alive: Collection[str] = ()
) -> list[Finding]:
    """What trying `probe.seed` found; `node_seeds`: the node's --seed list; `alive`: its live peers."""
    seed = probe.seed
    tried = "a name lookup and one TCP connection"
    if not probe.reason.startswith(SEED_ANSWERS):
        return [Finding("fail", "seed", f"{seed}: {probe.reason}", tried, _seed_fix(probe.reason))]
    tried += ", then one full-state exchange sealed with this node's token and mesh id"
    if probe.answered is None:
        return [
            Finding(
                "warn",
                "seed",
                f"{seed} takes TCP connections; whether it answers this mesh's gossip was not tried",
                tried,
                "give the doctor the mesh token (--token-file, $MESHNODE_TOKEN, --data-dir)",
            )
        ]
    if not probe.answered or probe.answer is None:
        return [
            Finding(
                "fail",
                "seed",
                f"{seed} takes TCP connections but does not answer gossip sealed with this mesh's token for "
                f"mesh id {mesh_id!r}: it runs with another token or --mesh-id, or is not a meshnode",
                tried,
                "give both nodes the same --mesh-id and token (`meshnode token` prints this one's; the "
                "trust line says which differs when that node sends here); if it is of this mesh, a "
                "firewall drops what it sends back",
            )
        ]
    answer = probe.answer
    found = [
        Finding(
            "ok",
            "seed",
            f"{seed} is a meshnode of this mesh: {answer.name} ({answer.node[:8]}) answered, holding "
            f"{len(probe.members)} member(s)",
            tried,
        )
    ]
    if node_seeds is not None and seed not in node_seeds and answer.node not in alive:
        found.append(
            Finding(
                "warn",
                "seed",
                f"this node was not started with --seed {seed} "
                f"(its seeds: {', '.join(node_seeds) or 'none'})",
                "the node's GET /v1/doctor",
                f"restart it with --seed {seed}",
            )
        )
    return found


def firewall_findings(probes: Sequence[PeerProbe], node_name: str, relayed: bool = False) -> list[Finding]:
    """Ports tried both ways between the node and each peer: which port fails in which direction.

    `relayed`: the node is reached through relays (nobody can dial it, and it knows): peers failing
    to dial it is then the known cause, not a fault that stops the mesh (a warning, not a failure).
    """
    found: list[Finding] = []
    live = [p for p in probes if p.status != "left"]
    for port in ("mesh", "data"):
        # Out: the node dials each peer (relayed peers cannot be dialed, by design: not tried).
        outs = [(p, getattr(p.out, port)) for p in live if p.out is not None and p.reach != "relayed"]
        failed = [(p, t) for p, t in outs if not t.ok]
        everyone = len(outs) >= 2 and len(failed) == len(outs)
        for peer, tried in failed:
            where = (
                f"on {node_name}'s machine, outbound: every peer fails from it"
                if everyone
                else f"{node_name}'s outbound or {peer.name}'s inbound"
            )
            found.append(
                Finding(
                    "fail",
                    "firewall",
                    f"{node_name} → {peer.name}: TCP to {peer.name}'s {port} port {tried.addr}: "
                    f"{tried.detail}",
                    f"{node_name} dialed {peer.name}'s advertised {port} address (GET /v1/doctor/dial)",
                    _dial_fix(tried, port, where, peer.name),
                )
            )
        # Back: each peer dials the node; they all dial one address, so failures of a kind group.
        backs = [(p, getattr(p.back, port)) for p in live if p.back is not None]
        by_outcome: dict[tuple[str, str, str], list[str]] = {}
        for peer, tried in backs:
            if not tried.ok:
                by_outcome.setdefault((tried.addr, tried.outcome, tried.detail), []).append(peer.name)
        for (addr, outcome, detail), names in by_outcome.items():
            where = (
                f"on {node_name}'s machine, inbound: no peer reaches it"
                if len(names) == len(backs) and len(backs) >= 2
                else f"{', '.join(names)}'s outbound or {node_name}'s inbound"
            )
            who = ", ".join(names)
            found.append(
                Finding(
                    "warn" if relayed else "fail",
                    "firewall",
                    f"{who} → {node_name}: TCP to {node_name}'s {port} port {addr}: {detail}",
                    f"{who} dialed {node_name}'s advertised {port} address (GET /v1/doctor/dial)",
                    _dial_fix(Tried(addr, outcome, detail), port, where, node_name),
                )
            )
    found += [
        Finding(
            "warn",
            "firewall",
            f"{p.name} → {node_name} not tried: {p.asked_error}",
            f"asking {p.name} over HTTP to dial {node_name}",
            "give --api-key (an invoke key) to ask peers on other machines, or run `meshnode doctor` "
            f"on {p.name}",
        )
        for p in live
        if p.asked_error and p.status in ("alive", "suspect")
    ]
    both = [
        p
        for p in live
        if p.out is not None
        and p.back is not None
        and all(t.ok for t in (p.out.mesh, p.out.data, p.back.mesh, p.back.data))
    ]
    if both:
        found.append(
            Finding(
                "ok",
                "firewall",
                f"mesh and data ports open both ways between {node_name} and {len(both)} peer(s)",
                "each side dialed the other's advertised mesh and data addresses (GET /v1/doctor/dial)",
            )
        )
    return found


def _dial_fix(tried: Tried, port: str, where: str, owner: str) -> str:
    """What to do about a failed dial of `owner`'s `port` port, by how it failed."""
    number = _port(tried.addr)
    match tried.outcome:
        case "timeout":
            return (
                f"a firewall drops it ({where}): allow TCP port {number} (nft list ruleset; ufw allow "
                f"{number}/tcp)"
            )
        case "refused":
            return (
                f"nothing listens at {tried.addr}, or a firewall rejects it: is {owner}'s agent bound there "
                f"(--{port}, --advertise-{port})?"
            )
        case "unreachable":
            return (
                f"nothing answers at {tried.addr} from there: {owner} advertises an address of another "
                f"network, or sits behind NAT (forward port {number} and pass --advertise-{port})"
            )
    return f"check the route and the firewalls between them for TCP port {number}"


def view_asymmetry_findings(probes: Sequence[PeerProbe], node_name: str) -> list[Finding]:
    """Peers that hold the node suspect or dead while the node holds them alive: lost one way."""
    return [
        Finding(
            "warn",
            "views",
            f"{p.name} holds {node_name} {p.holds_node.status} while {node_name} holds {p.name} alive: "
            f"packets get lost one way between them",
            f"{p.name}'s view (GET /v1/mesh)",
            "see the firewall lines for the direction",
        )
        for p in probes
        if p.status == "alive" and p.holds_node is not None and p.holds_node.status in ("suspect", "dead")
    ]


def clock_findings(
    samples: Sequence[tuple[str, ClockSample]], node_name: str, bound_s: float
) -> list[Finding]:
    """Each peer's clock against the node's; `bound_s`: the mesh's ``max_clock_offset_s``."""
    tried = f"each peer's wall clock (GET /v1/doctor) against {node_name}'s, allowing for the round trip"
    fix = "synchronise the clocks (NTP: `timedatectl set-ntp true`, or chrony)"
    found = []
    for name, sample in samples:
        apart = abs(sample.offset_s) - sample.uncertainty_s
        way = "ahead of" if sample.offset_s > 0 else "behind"
        said = f"{name}'s clock is {abs(sample.offset_s):.1f} s {way} {node_name}'s"
        if apart > bound_s:
            found.append(
                Finding(
                    "fail",
                    "clock",
                    f"{said}, past the mesh's bound of {bound_s:g} s: deployments it declares are refused "
                    "(stamp_ahead) and its stamps win over later writes",
                    tried,
                    fix,
                )
            )
        elif apart > bound_s * _CLOCK_WARN_FRACTION:
            found.append(Finding("warn", "clock", f"{said} (the bound is {bound_s:g} s)", tried, fix))
    if samples and not found:
        found.append(
            Finding("ok", "clock", f"the clocks of {len(samples)} peer(s) agree with {node_name}'s", tried)
        )
    return found


def mdns_findings(probes: Sequence[MdnsProbe], facts: NodeFacts, local: bool) -> list[Finding]:
    """Each mDNS interface; `local`: the node runs on this machine and announces on these interfaces."""
    if not facts.mdns:
        return [
            Finding(
                "ok" if facts.seeds else "warn",
                "mdns",
                "mDNS is off on this node (--no-mdns): it finds others only through --seed",
                "the node's GET /v1/doctor",
                "" if facts.seeds else "pass --seed, or drop --no-mdns on a LAN",
            )
        ]
    if not probes:
        return [
            Finding(
                "warn",
                "mdns",
                "mDNS not checked: the node runs on another machine, and no --interface was given",
                "nothing",
                "run `meshnode doctor` on the node's machine, or give --interface IP of this one",
            )
        ]
    found = []
    for probe in probes:
        interface = probe.interface
        ip = interface.address
        tried = (
            f"the interface with {ip} (ip link), joining 224.0.0.251 there, browsing "
            f"_meshnode._tcp.local. for {probe.browse_s:g} s"
        )
        if not interface.device:
            found.append(
                Finding(
                    "fail",
                    "mdns",
                    f"{ip} is not an address of this machine",
                    tried,
                    "--interface takes an address of one of its interfaces (ip -brief addr)",
                )
            )
            continue
        device = interface.device
        if not interface.up:
            found.append(
                Finding("fail", "mdns", f"{device} ({ip}) is down", tried, f"ip link set {device} up")
            )
            continue
        if not interface.multicast:
            found.append(
                Finding(
                    "fail",
                    "mdns",
                    f"{device} ({ip}) has no MULTICAST flag: mDNS needs multicast on it",
                    tried,
                    f"ip link set {device} multicast on",
                )
            )
        if interface.join_error:
            found.append(
                Finding(
                    "fail",
                    "mdns",
                    f"cannot join the mDNS group on {device} ({ip}): {interface.join_error}",
                    tried,
                    f"check {device}'s multicast setup (ip maddr show dev {device})",
                )
            )
        if probe.error:
            found.append(Finding("fail", "mdns", f"cannot browse mDNS on {ip}: {probe.error}", tried))
            continue
        found += _browse_findings(probe, facts, local, tried)
    return found


def _browse_findings(probe: MdnsProbe, facts: NodeFacts, local: bool, tried: str) -> list[Finding]:
    ip = probe.interface.address
    others = [a for a in probe.seen if a.node != facts.node]
    ours = [a for a in others if a.mesh_id == facts.mesh_id]
    foreign = [a for a in others if a.mesh_id != facts.mesh_id]
    found = [
        Finding(
            "warn",
            "mdns",
            f"mDNS on {ip} finds {a.name} ({a.mesh_addr}) of mesh id {a.mesh_id!r}, not this node's "
            f"{facts.mesh_id!r}: the two never join",
            tried,
            "start both with the same --mesh-id if they belong together",
        )
        for a in foreign
    ]
    if ours:
        names = ", ".join(sorted(a.name for a in ours))
        found.append(
            Finding(
                "ok", "mdns", f"mDNS on {ip} finds {len(ours)} other node(s) of this mesh: {names}", tried
            )
        )
    elif local and ip in facts.mdns_interfaces and not any(a.node == facts.node for a in probe.seen):
        found.append(
            Finding(
                "fail",
                "mdns",
                f"mDNS on {ip} does not even find this node, which announces there: something on this "
                "machine drops mDNS (UDP port 5353)",
                tried,
                "allow UDP 5353 in the firewall (nft list ruleset; ufw allow 5353/udp)",
            )
        )
    elif not foreign:
        found.append(
            Finding(
                "warn",
                "mdns",
                f"mDNS on {ip} finds no other node: none announces on this network segment, or UDP 5353 is "
                "dropped on the way (their firewall, a switch filtering multicast, another VLAN)",
                tried,
                "allow UDP 5353 on the other machines, or join with --seed HOST:PORT",
            )
        )
    return found


def _seed_fix(reason: str) -> str:
    if "resolve" in reason:
        return "check the name (DNS, /etc/hosts) or give the seed's IP address"
    if "refused" in reason:
        return "start the agent there, or give the port its --mesh binds"
    return (
        "check that the host is up and that no firewall drops TCP to that port (there inbound, here outbound)"
    )


def _port(addr: str) -> str:
    return addr.rpartition(":")[2] or "?"

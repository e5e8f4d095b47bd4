"""``meshnode doctor``: why a node sees no one, or no one can reach it, each cause named with a fix.

It examines a node (``--node``, the local one by default) and the network around it, and names
each cause it finds (docs/doctor.md lists every check):

- the node's view: whether it sees anyone, members it suspects or holds dead, whether peers can
  dial it or reach it through relays, an address advertised that peers cannot use;
- trust: traffic it dropped as sealed by another token or for another mesh id; whether the
  doctor's own token is the node's;
- a duplicate node id: peers or seeds holding its id at another address, refutations piling up;
- stalls: its failure detector running late (a paused or starved process, which peers suspect);
- ports both ways: the node dials each peer's mesh and data ports, each peer dials the node's;
- clocks: each peer's wall clock against the node's, against the mesh's bound;
- each ``--seed``: resolves, takes TCP, answers gossip sealed with this mesh's token and mesh id;
- mDNS on each interface: present, up, multicast, the group joinable, and whom a browse finds.

Gathering is ``doctor_probe.py``; every conclusion is a pure check (``doctor_checks.py``,
``doctor_net_checks.py``) from the observations (``doctor_facts.py``). Each finding prints what
was tried and what to do; the exit status is 1 when a check failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import psutil

from ..config import DEFAULT_NODE_URL, default_data_dir
from ..errors import ConfigError
from ..trust.keyring import Keyring
from ..trust.rotation import load_ring, ring_at_start
from ..trust.token import MeshToken, resolve_token
from .doctor_checks import drop_findings, name_of, token_finding, view_findings
from .doctor_facts import ClockSample, Finding, Seen
from .doctor_net_checks import (
    clock_findings,
    firewall_findings,
    mdns_findings,
    seed_findings,
    view_asymmetry_findings,
)
from .doctor_probe import Observed, observe
from .doctor_suspicions import duplicate_findings, stall_findings
from .node_http import NodeAccess, access_options
from .params import HostPort, IPAddress, NodeURL, agent_default

__all__ = ["doctor", "findings"]


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
@click.option(
    "--interface",
    "interfaces",
    type=IPAddress(),
    multiple=True,
    help="Interface address to check mDNS on; repeatable [default: the node's, when it runs here].",
)
@click.option(
    "--mesh-id",
    default=None,
    show_default="the node's",
    help=f"Mesh id to seal probes for when the node does not say [{agent_default('mesh_id')}].",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The mesh token, to speak gossip to seeds [default: as `meshnode join` finds it].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    show_default="$MESHNODE_HOME or ~/.meshnode",
    help="The node's data dir, whose token (and rotated keyring) the doctor uses.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(
    node_url: str,
    access: NodeAccess,
    seeds: tuple[tuple[str, int], ...],
    interfaces: tuple[str, ...],
    mesh_id: str | None,
    token_file: Path | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Explain why a node sees no one, or no one can reach it; exit 1 when a check failed."""
    from ..membership.seed_watch import probe_seed

    token, token_problem = _token(token_file, data_dir)
    local = _is_local(node_url)

    def keyring_for(mesh: str) -> Keyring | None:
        if token is None:
            return None
        try:
            return Keyring(ring_at_start(token.value, load_ring(data_dir or default_data_dir())), mesh)
        except (ConfigError, ValueError):
            return Keyring([token.value], mesh)

    addresses = [f"{host}:{port}" for host, port in seeds]
    default_mesh = mesh_id or agent_default("mesh_id")
    seen, keyring = asyncio.run(
        observe(node_url, access, addresses, interfaces, keyring_for, probe_seed, default_mesh, local)
    )
    machine = _local_addresses() if local else None
    found = findings(seen, keyring.key_ids if keyring else [], _source(token, token_problem), machine)
    if as_json:
        click.echo(json.dumps([asdict(finding) for finding in found], indent=2))
    else:
        for finding in found:
            click.echo(f"{finding.level:<4}  {finding.check:<8}  {finding.detail}")
            if finding.tried:
                click.echo(f"{'':16}tried: {finding.tried}")
            if finding.fix:
                click.echo(f"{'':16}do: {finding.fix}")
    if any(finding.level == "fail" for finding in found):
        raise SystemExit(1)


def findings(
    seen: Observed, doctor_keys: list[str], token_source: str, machine: set[str] | None
) -> list[Finding]:
    """Every check on what one run observed, in the order they print.

    `doctor_keys`: the fingerprints of the doctor's tokens, found in `token_source`; `machine`: the
    addresses of the node's machine when the doctor runs on it, else None.
    """
    view, facts, local = seen.view, seen.facts, machine is not None
    if view is None:
        found = [
            Finding("fail", "node", f"{seen.view_error}: is `meshnode join` running there?", "GET /v1/mesh")
        ]
    else:
        found = view_findings(view, machine)
    me = _me(view)
    mesh_id = facts.mesh_id if facts is not None else "?"
    if me is not None:
        assert view is not None
        self_entry = next(m for m in view["members"] if m.get("id") == me.node)
        node_keys = self_entry.get("key_ids") or []
        found.append(token_finding(doctor_keys, node_keys, token_source, mesh_id))
        if seen.before is not None and seen.after is not None:
            found += drop_findings(seen.before, seen.after, seen.window_s)
            held = [(p.name, p.holds_node) for p in seen.peers if p.holds_node is not None]
            held += [(f"seed {s.seed}", m) for s in seen.seeds for m in s.members if m.node == me.node]
            refuted = seen.after.refutations - seen.before.refutations
            uptime_s = facts.uptime_s if facts is not None else 0.0
            found += duplicate_findings(me, refuted, seen.window_s, held, seen.after.refutations, uptime_s)
            found += stall_findings(seen.before, seen.after, seen.window_s, uptime_s)
        relayed = self_entry.get("reach") == "relayed" and bool(self_entry.get("relays"))
        found += firewall_findings(seen.peers, me.name, relayed)
        found += view_asymmetry_findings(seen.peers, me.name)
        if facts is not None:
            samples = [
                (p.name, _relative(p.clock, seen.node_clock)) for p in seen.peers if p.clock is not None
            ]
            found += clock_findings(samples, me.name, facts.max_clock_offset_s)
    alive = (
        {m.get("id") for m in view["members"] if m.get("status") == "alive"} if view is not None else set()
    )
    for probe in seen.seeds:
        found += seed_findings(probe, mesh_id, list(facts.seeds) if facts is not None else None, alive)
    if facts is not None:
        found += mdns_findings(seen.mdns, facts, local)
    return found


def _me(view: dict[str, Any] | None) -> Seen | None:
    """The examined node as its own view lists it."""
    members = view.get("members") if view is not None else None
    if view is None or not isinstance(members, list):
        return None
    me = next((m for m in members if isinstance(m, dict) and m.get("id") == view.get("self")), None)
    if me is None:
        return None
    return Seen(str(me["id"]), name_of(me), str(me.get("mesh")), str(me.get("status")))


def _relative(sample: ClockSample, reference: ClockSample | None) -> ClockSample:
    """A clock measured against this machine's, made relative to the node's (when it was measured)."""
    if reference is None:
        return sample
    return ClockSample(sample.offset_s - reference.offset_s, sample.uncertainty_s + reference.uncertainty_s)


def _token(token_file: Path | None, data_dir: Path | None) -> tuple[MeshToken | None, str]:
    home = default_data_dir()
    try:
        found = resolve_token(
            token=None,
            token_file=token_file,
            environ=os.environ,
            data_dir=data_dir or home,
            home=home,
            create=False,
        )
    except ConfigError as exc:
        return None, exc.message
    return found, "" if found is not None else "none found"


def _source(token: MeshToken | None, problem: str) -> str:
    if token is None:
        return problem
    return f"{token.source.value}" + (f" {token.path}" if token.path is not None else "")


def _is_local(node_url: str) -> bool:
    """Whether the node's URL names this machine (the node's interfaces are then this machine's)."""
    host = urlsplit(node_url if "://" in node_url else f"http://{node_url}").hostname or ""
    return host == "localhost" or host in _local_addresses() or host.startswith("127.")


def _local_addresses() -> set[str]:
    return {
        address.address.split("%")[0]
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
        if address.family in (socket.AF_INET, socket.AF_INET6)
    }

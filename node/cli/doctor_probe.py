"""What ``meshnode doctor`` gathers before any check runs: the node, its peers, the seeds, mDNS.

``observe`` asks the node for its view (``/v1/mesh``), its facts (``/v1/doctor``) and its counters
(``/metrics``, read at the start and again at the end, so a count that grows while the doctor looks
is told apart from an old one). Then, all at once:

- for each peer in the view (at most ``MAX_PEERS``, members in trouble first): the node dials the
  peer's mesh and data ports (``/v1/doctor/dial``), and the peer, asked over its own HTTP address,
  dials the node's; the peer's view says how it holds the node, its clock how far apart they are;
- each ``--seed``: a name lookup and a TCP connection (``probe_seed``), then one sealed exchange
  (``doctor_gossip.py``);
- each mDNS interface: inspected and browsed (``doctor_mdns.py``).

Nothing here decides anything: every conclusion is drawn by the pure checks from ``Observed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..client.tls import describe_failure
from ..trust.keyring import Keyring
from .doctor_facts import ClockSample, Counters, DialPair, MdnsProbe, NodeFacts, PeerProbe, SeedProbe, Seen
from .doctor_gossip import ask_gossip
from .doctor_mdns import probe_mdns
from .doctor_net_checks import SEED_ANSWERS
from .node_http import NodeAccess

__all__ = ["MAX_PEERS", "Observed", "observe", "parse_counters"]

# Peers asked in one run: enough to tell one bad peer from a bad node, few enough to stay quick.
MAX_PEERS = 8
HTTP_TIMEOUT_S = 5.0
SEED_TIMEOUT_S = 2.0
BROWSE_S = 2.0
# The counters are read this far apart at least, so a growing count shows.
MIN_WINDOW_S = 2.0


@dataclass
class Observed:
    """Everything one doctor run saw; None or empty where it could not look."""

    view: dict[str, Any] | None = None
    view_error: str = ""
    facts: NodeFacts | None = None
    node_clock: ClockSample | None = None  # the node's clock against this machine's
    before: Counters | None = None
    after: Counters | None = None
    window_s: float = 0.0
    peers: list[PeerProbe] = field(default_factory=list)
    seeds: list[SeedProbe] = field(default_factory=list)
    mdns: list[MdnsProbe] = field(default_factory=list)


ProbeSeed = Callable[[str, float], Awaitable[str]]
MakeKeyring = Callable[[str], Keyring | None]


async def observe(
    node_url: str,
    access: NodeAccess,
    seeds: Sequence[str],
    interfaces: Sequence[str],
    keyring_for: MakeKeyring,
    probe_seed: ProbeSeed,
    default_mesh_id: str,
    local: bool,
) -> tuple[Observed, Keyring | None]:
    """Gather; `keyring_for(mesh_id)`: the doctor's keys for that mesh id (None without a token).

    mDNS is looked at on `interfaces`, else, for a node on this machine (`local`), on the node's own.
    """
    seen = Observed()
    base = _base(node_url)
    async with httpx.AsyncClient(
        verify=access.verify, headers=access.headers, timeout=HTTP_TIMEOUT_S
    ) as http:
        try:
            seen.view = (await _get(http, f"{base}/v1/mesh")).json()
        except _Unanswered as exc:
            seen.view_error = str(exc)
        if seen.view is not None:
            try:
                response, clock = await _timed(http, f"{base}/v1/doctor")
                seen.facts, seen.node_clock = NodeFacts.from_body(response.json()), clock
            except (_Unanswered, KeyError, TypeError, ValueError):
                pass  # an older node: no facts, the checks that need them say so
            seen.before = await _counters(http, base)
        started = time.monotonic()
        keyring = keyring_for(seen.facts.mesh_id if seen.facts else default_mesh_id)
        mesh_id = seen.facts.mesh_id if seen.facts else default_mesh_id
        peer_tasks = [_peer(http, base, seen.view, member) for member in _peers_to_ask(seen.view)]
        seed_tasks = [_seed(seed, keyring, mesh_id, probe_seed) for seed in seeds]
        facts = seen.facts
        if not interfaces and local and facts is not None and facts.mdns:
            interfaces = facts.mdns_interfaces
        mdns_tasks = [probe_mdns(ip, BROWSE_S) for ip in interfaces]
        peers, seed_probes, mdns = await asyncio.gather(
            asyncio.gather(*peer_tasks), asyncio.gather(*seed_tasks), asyncio.gather(*mdns_tasks)
        )
        seen.peers, seen.seeds, seen.mdns = list(peers), list(seed_probes), list(mdns)
        if seen.before is not None:
            await asyncio.sleep(max(0.0, MIN_WINDOW_S - (time.monotonic() - started)))
            seen.after = await _counters(http, base)
            seen.window_s = time.monotonic() - started
    return seen, keyring


def parse_counters(text: str) -> Counters:
    """The counters a diagnosis reads, from a ``/metrics`` body (Prometheus text format)."""
    gossip: dict[str, float] = {}
    data: dict[str, float] = {}
    refutations = stalls = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            match sample.name:
                case "meshnode_gossip_dropped_total":
                    gossip[sample.labels.get("reason", "")] = sample.value
                case "meshnode_data_dropped_total":
                    data[sample.labels.get("reason", "")] = sample.value
                case "meshnode_refutations_total":
                    refutations = sample.value
                case "meshnode_stalls_total":
                    stalls = sample.value
    return Counters(gossip, data, refutations, stalls)


class _Unanswered(Exception):
    """A request that got no usable answer; the message says why."""


def _base(url: str) -> str:
    url = url.rstrip("/")
    return url if "://" in url else f"http://{url}"


async def _get(http: httpx.AsyncClient, url: str) -> httpx.Response:
    try:
        response = await http.get(url)
    except httpx.HTTPError as exc:
        raise _Unanswered(
            describe_failure(exc, url) if isinstance(exc, httpx.RequestError) else str(exc)
        ) from exc
    if response.status_code == 401:
        raise _Unanswered(f"{url} wants an API key (--api-key or $MESHNODE_API_KEY)")
    if response.status_code >= 400:
        raise _Unanswered(f"{url} answered {response.status_code}")
    return response


async def _timed(http: httpx.AsyncClient, url: str) -> tuple[httpx.Response, ClockSample | None]:
    """GET `url` and the answering node's clock against this one (its time_ms, else its Date header)."""
    sent = time.time()
    response = await _get(http, url)
    received = time.time()
    middle, half_trip = (sent + received) / 2, (received - sent) / 2
    try:
        return response, ClockSample(response.json()["time_ms"] / 1000 - middle, half_trip + 0.001)
    except (ValueError, KeyError, TypeError):
        pass
    date = response.headers.get("date")
    if date is None:
        return response, None
    # The Date header has whole seconds.
    return response, ClockSample(
        email.utils.parsedate_to_datetime(date).timestamp() - middle, half_trip + 1.0
    )


async def _counters(http: httpx.AsyncClient, base: str) -> Counters | None:
    try:
        return parse_counters((await _get(http, f"{base}/metrics")).text)
    except (_Unanswered, ValueError):
        return None


def _peers_to_ask(view: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if view is None:
        return []
    others = [
        m for m in view.get("members", []) if m.get("id") != view.get("self") and m.get("status") != "left"
    ]
    others.sort(key=lambda m: (m.get("status") == "alive", str(m.get("name"))))  # trouble first
    return others[:MAX_PEERS]


async def _peer(
    http: httpx.AsyncClient, base: str, view: Mapping[str, Any] | None, member: Mapping[str, Any]
) -> PeerProbe:
    """One peer tried both ways, its view of the node, and its clock."""
    assert view is not None
    me = str(view["self"])
    node, name = str(member["id"]), str(member.get("name") or str(member["id"])[:8])
    out, back, holds, clock, asked_error = None, None, None, None, ""
    with contextlib.suppress(_Unanswered, KeyError, TypeError, ValueError):
        out = DialPair.from_body((await _get(http, f"{base}/v1/doctor/dial/{node}")).json())
    peer_base = f"{'https' if member.get('tls') else 'http'}://{member.get('http')}"
    try:
        _, clock = await _timed(http, f"{peer_base}/v1/doctor")
        their = (await _get(http, f"{peer_base}/v1/mesh")).json()
        held = next((m for m in their.get("members", []) if m.get("id") == me), None)
        if held is not None:
            holds = Seen(me, str(held.get("name")), str(held.get("mesh")), str(held.get("status")))
            back = DialPair.from_body((await _get(http, f"{peer_base}/v1/doctor/dial/{me}")).json())
    except _Unanswered as exc:
        asked_error = str(exc)
    except (KeyError, TypeError, ValueError) as exc:
        asked_error = f"{peer_base} did not answer as a meshnode does ({exc})"
    return PeerProbe(
        node,
        name,
        str(member.get("status")),
        str(member.get("reach") or ""),
        out,
        back,
        holds,
        asked_error,
        clock,
    )


async def _seed(seed: str, keyring: Keyring | None, mesh_id: str, probe_seed: ProbeSeed) -> SeedProbe:
    reason = await probe_seed(seed, SEED_TIMEOUT_S)
    if not reason.startswith(SEED_ANSWERS) or keyring is None:
        return SeedProbe(seed, reason, None)
    answer = await ask_gossip(seed, keyring, mesh_id, SEED_TIMEOUT_S)
    if answer is None:
        return SeedProbe(seed, reason, False)
    return SeedProbe(seed, reason, True, answer[0], answer[1])

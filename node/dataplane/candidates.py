"""Who could serve a deployment, as this node sees it now: the candidates routing ranks.

``CandidateSource.of(deployment, now)`` reads two places:

- peers' replicas from the gossiped view (``mesh/route_candidates.py``), kept per deployment and
  rebuilt when the view changes and at least every ``CANDIDATES_MAX_AGE_S`` (round-trip times move
  without a view change), not per request; a peer's queue as its last answer reported it
  (``Links.reported_queue``) replaces the gossiped one while it is ``REPORT_MAX_AGE_S`` fresh;
- this node's own replica, read live when it serves: its queue is the exact count.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ..mesh.route_candidates import candidates
from ..mesh.routing import Candidate, Locality
from ..mesh.types import NodeId, Status

if TYPE_CHECKING:  # the protocols live with the forwarder, which imports this module
    from .forward import Links, LocalReplicas, MeshView, ServingReplica

__all__ = ["CANDIDATES_MAX_AGE_S", "REPORT_MAX_AGE_S", "CandidateSource", "local_candidate"]

# A peer's queue as its last answer reported it replaces the gossiped one while it is this fresh
# (gossip carries load at most every meta_min_interval_s: 5 s on the lan profile).
REPORT_MAX_AGE_S = 5.0
CANDIDATES_MAX_AGE_S = 1.0

_WithQueue = dict[tuple[NodeId, int], Candidate]


class CandidateSource:
    """The candidates for a deployment: peers' from the view (cached), this node's read live."""

    def __init__(
        self, name: str, here: Locality, view: MeshView, replicas: LocalReplicas, links: Links
    ) -> None:
        self._name = name
        self._here = here
        self._view = view
        self._replicas = replicas
        self._links = links
        # Per deployment: the peers' candidates as of (view version, period), and their copies with a
        # reported queue (at most one per peer and queue value: queues are bounded by capacity).
        self._peers: dict[str, tuple[tuple[int, int], list[Candidate], _WithQueue]] = {}

    def of(self, deployment: str, now: float) -> list[Candidate]:
        """Every ready replica of `deployment` this node could send a request to, at `now`."""
        peers, with_queue = self._peers_of(deployment, now)
        found = []
        for candidate in peers:
            reported = self._links.reported_queue(candidate.node, deployment, now, REPORT_MAX_AGE_S)
            if reported is None or reported == candidate.queue:
                found.append(candidate)
                continue
            # A copy per (peer, queue) while the cache lasts: a dataclass copy per peer per request
            # was a third of the ranking's cost over ten peers.
            copy = with_queue.get((candidate.node, reported))
            if copy is None:
                with_queue[(candidate.node, reported)] = copy = replace(candidate, queue=reported)
            found.append(copy)
        replica = self._replicas.get(deployment)
        if replica is not None and replica.serving:
            found.append(local_candidate(replica, self._name, self._here))
        return found

    def _peers_of(self, deployment: str, now: float) -> tuple[list[Candidate], _WithQueue]:
        key = (self._view.view_version, int(now / CANDIDATES_MAX_AGE_S))
        cached = self._peers.get(deployment)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        me = self._here.node
        built = candidates([member for member in self._view.members() if member.node != me], deployment, me)
        with_queue: _WithQueue = {}
        if built:  # only deployments that exist: a client's made-up names must not fill memory
            self._peers[deployment] = (key, built, with_queue)
        return built, with_queue


def local_candidate(replica: ServingReplica, name: str, here: Locality) -> Candidate:
    """This node's replica as a candidate: its queue is exact, its locality the best."""
    speed = replica.speed
    return Candidate(
        node=NodeId(here.node),
        name=name,
        data_addr="",
        status=Status.ALIVE,
        is_self=True,
        region=here.region,
        zone=here.zone,
        rtt_s=0.0,
        hints=frozenset(replica.hints),
        models=frozenset(replica.models),
        queue=replica.in_flight,
        slots=replica.slots,
        capacity=replica.capacity,
        service_s=speed.service_s,
        throughput_rps=speed.throughput_rps,
    )

"""Who could serve a deployment, as this node sees it now: the candidates routing ranks.

``CandidateSource.of(deployment, now)`` reads two places:

- peers' replicas from the gossiped view (``mesh/route_candidates.py``), kept per deployment and
  rebuilt when the view changes and at least every ``CANDIDATES_MAX_AGE_S`` (round-trip times move
  without a view change), not per request;
- this node's own replica, read live when it serves: its queue is the exact count.

``CandidateSource.in_flight(deployment, now)`` is what routing adds to each peer's gossiped queue
(``routing.corrected_queue``): the requests this node has outstanding there and, while a peer's last
answer is ``REPORT_MAX_AGE_S`` fresh, the difference between the queue it reported
(``Links.reported_queue``) and the gossiped one. It is read per candidate routing looks at, so a
request over a thousand replicas does not visit each (routing samples them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

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
        # Per deployment: the peers' candidates and their gossiped queues, as of (view version, period).
        self._peers: dict[str, tuple[tuple[int, int], list[Candidate], dict[NodeId, int]]] = {}

    def of(self, deployment: str, now: float) -> list[Candidate]:
        """Every ready replica of `deployment` this node could send a request to, at `now` (the
        peers' list is the one kept: callers read it, never change it)."""
        peers, _ = self._peers_of(deployment, now)
        replica = self._replicas.get(deployment)
        if replica is not None and replica.serving:
            return [*peers, local_candidate(replica, self._name, self._here)]
        return peers

    def in_flight(self, deployment: str, now: float) -> Mapping[NodeId, int]:
        """What routing adds to each peer's gossiped queue for `deployment` (module docstring)."""
        _, gossiped = self._peers_of(deployment, now)
        return _Corrected(self._links, deployment, now, gossiped)

    def _peers_of(self, deployment: str, now: float) -> tuple[list[Candidate], dict[NodeId, int]]:
        key = (self._view.view_version, int(now / CANDIDATES_MAX_AGE_S))
        cached = self._peers.get(deployment)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        me = self._here.node
        built = candidates([member for member in self._view.members() if member.node != me], deployment, me)
        gossiped = {candidate.node: candidate.queue for candidate in built}
        if built:  # only deployments that exist: a client's made-up names must not fill memory
            self._peers[deployment] = (key, built, gossiped)
        return built, gossiped


class _Corrected(Mapping[NodeId, int]):
    """Per peer: this node's requests outstanding there, plus what its last answer's report says the
    others add beyond gossip. Computed per peer read (``get``), never for all of them."""

    def __init__(self, links: Links, deployment: str, now: float, gossiped: dict[NodeId, int]) -> None:
        self._links = links
        self._ours = links.in_flight()
        self._deployment = deployment
        self._now = now
        self._gossiped = gossiped

    def get(self, key: NodeId, default: Any = None) -> Any:
        ours = self._ours.get(key, 0)
        reported = self._links.reported_queue(key, self._deployment, self._now, REPORT_MAX_AGE_S)
        if reported is not None:
            return ours + reported - self._gossiped.get(key, 0)
        return ours if key in self._ours else default

    def __getitem__(self, key: NodeId) -> int:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return int(found)

    def __iter__(self) -> Iterator[NodeId]:
        return iter(self._ours)

    def __len__(self) -> int:
        return len(self._ours)


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

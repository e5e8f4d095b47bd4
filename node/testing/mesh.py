"""One node's view of a mesh, in one process: a real ``Forwarder`` over fake peers.

``FakeMesh`` wires the fakes as the agent wires the real parts (``agent.py``): this node's replicas
(``FakeReplicas``), the gossiped view (``FakeView``) and the links to peers (``FakeLinks``), each
peer's replicas both gossiped in the view and served behind the links. Typed against the
forwarder's protocols, so a fake that stops fitting them fails the type check, not a test run.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from ..dataplane.forward import Forwarder
from ..mesh.envelope import Call
from ..mesh.routing import Locality
from ..mesh.types import Status
from .answers import JSON
from .links import FakeLinks
from .replicas import FakeReplica, FakeReplicas
from .view import FakeView, PeerSpec, peer_id

__all__ = ["FakeMesh", "make_call"]

_request_ids = itertools.count(1)


def make_call(
    deployment: str,
    body: dict[str, Any] | None = None,
    *,
    request_id: str | None = None,
    stream: bool = False,
    timeout_ms: int = 5_000,
    accept: str = JSON,
    header: str | None = None,
) -> Call:
    """A request for `deployment`, with a fresh request id unless one is given."""
    rid = request_id or f"fake-{next(_request_ids)}"
    return Call(rid, deployment, body or {}, header, stream, accept, timeout_ms)


class FakeMesh:
    """This node (`name`), its replicas, and peers reached through fake links."""

    def __init__(self, name: str = "here", *, region: str = "", zone: str = "", seed: int = 0) -> None:
        self.name = name
        self.here = Locality(peer_id(name), region, zone)
        self.replicas = FakeReplicas()  # this node's own
        self.view = FakeView()
        self.links = FakeLinks()
        self.peers: dict[str, FakeReplicas] = {}
        self._seed = seed

    def add_peer(
        self,
        name: str,
        replicas: Mapping[str, FakeReplica],
        *,
        status: Status = Status.ALIVE,
        region: str = "",
        zone: str = "",
        rtt_s: float | None = None,
    ) -> PeerSpec:
        """A peer hosting `replicas`: gossiped as they are now, and served behind the links."""
        fakes = FakeReplicas(replicas)
        spec = PeerSpec(name, status=status, region=region, zone=zone, rtt_s=rtt_s)
        self.peers[name] = fakes
        self.links.peers[spec.node] = fakes
        self.view.put(_gossiped(spec, fakes))
        return spec

    def gossip(self, name: str) -> None:
        """The peer `name` gossips its replicas' current state (queue, state) again."""
        self.view.put(_gossiped(self.view.spec(name), self.peers[name]))

    def forwarder(
        self,
        *,
        cold_start: Callable[[str, float], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
    ) -> Forwarder:
        """A forwarder on this node, routing over the view (seeded: the same test, the same order)."""
        return Forwarder(
            name=self.name,
            locality=self.here,
            view=self.view,
            replicas=self.replicas,
            links=self.links,
            cold_start=cold_start,
            rng=rng or random.Random(self._seed),
        )


def _gossiped(spec: PeerSpec, fakes: FakeReplicas) -> PeerSpec:
    service_ms = {
        name: replica.speed.service_s * 1000
        for name, replica in fakes.table.items()
        if replica.speed.service_s is not None
    }
    return replace(spec, replicas=fakes.entries(), service_ms=service_ms)

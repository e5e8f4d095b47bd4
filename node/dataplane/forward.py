"""The forwarder: carries one request to the best replica anywhere in the mesh, and fails over.

``Forwarder.serve(call)`` asks the routing policy (``mesh/routing.py``) for ranked candidates built
from the gossiped view, then tries them in order: this node's own replica directly, a peer's over the
data plane (``links.py``). It owns retries; the policy only ranks. What it reads and calls is typed
as protocols (``MeshView``, ``LocalReplicas``, ``Links``), so the fakes of ``meshnode.testing`` fit
where the agent passes the gossip runner, its replicas and ``PeerLinks``.

Retry rules:

- An attempt that ends before any output reached us with a *retryable* failure (no connection,
  replica gone or restarting, full, the peer's connection dropped) moves to the next candidate,
  with the deadline's remaining time. Dead and left peers are never candidates; suspect ones last.
- Once output has started (the first ``Chunk`` of a stream, a ``Progress`` report for a call that
  asked for them, or the ``Reply``), the request is committed to that replica and is never run
  again: a stream that breaks after that ends with an error event (``http/predict.py``).
- A request whose node died before answering may have run there: it runs again elsewhere, since its
  answer was lost with that node (at-least-once for the model, exactly one answer for the client).
- When no replica is ready but one is coming (starting, or scaling up from zero), the request
  waits for it within its deadline (``serving/cold_start.py``, bounded per deployment) instead of
  failing: a cold start queues requests. When none is coming because every replica failed to start
  (``mesh/replica_view.prospect``: the failure and its error travel in each replica's gossiped
  entry, so every node knows), the request fails at once, and so does one already waiting: 503 with
  ``Retry-After`` and the error, never a wait until the deadline.
- Admission under the deadline is the replica's decision (``mesh/queueing.py``): it alone knows
  its queue exactly, while the router's copy (gossip, what answers reported) can be seconds old.
  A replica that is full, or would finish the request after its deadline, refuses it at once, and
  the next candidate is tried. When every attempt was refused, the answer is 429 (full or busy past
  the deadline) or 503 (not ready), with ``Retry-After`` from the refusals and the gossiped queues.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ..errors import DeadlineExceeded, MeshnodeError, NotFound, NotReady, Overloaded
from ..load import SpeedMeter
from ..mesh.envelope import ACCEPT_BULK, Call, Envelope, Failure
from ..mesh.member import Member
from ..mesh.routing import Candidate, Locality, RouteRequest, ranked, retry_after_s
from ..mesh.types import NodeId, Status
from .answers import no_more
from .candidates import REPORT_MAX_AGE_S, CandidateSource
from .via_relays import RelayedCalls

__all__ = [
    "REPORT_MAX_AGE_S",
    "Failover",
    "Forwarder",
    "Links",
    "LocalReplicas",
    "MeshView",
    "Moderating",
    "Route",
    "Served",
    "ServingReplica",
]

HINT_HEADER = "X-Mesh-Hint"
# Failure kinds that mean "full", as opposed to "not ready": they decide between 429 and 503.
_FULL_KINDS = frozenset({"overloaded"})


class MeshView(Protocol):
    """The members as this node sees them (the gossip runner)."""

    def members(self) -> Iterable[Member]:
        """Every member, in any state."""
        ...

    def member(self, node: NodeId) -> Member | None:
        """One member, or None when unknown."""
        ...

    @property
    def view_version(self) -> int:
        """Bumped whenever a member or its metadata changes."""
        ...


class ServingReplica(Protocol):
    """One replica here, as the forwarder reads it (``serving/replica.py``'s ``Replica``)."""

    @property
    def serving(self) -> bool:
        """Ready and routed to."""
        ...

    @property
    def speed(self) -> SpeedMeter:
        """Its measured service time and throughput."""
        ...

    @property
    def hints(self) -> tuple[str, ...]:
        """Its routing hints."""
        ...

    @property
    def models(self) -> tuple[str, ...]:
        """The models it has loaded."""
        ...

    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished."""
        ...

    @property
    def slots(self) -> int:
        """Requests it runs at once."""
        ...

    @property
    def capacity(self) -> int:
        """Requests it admits at once."""
        ...

    def call(self, call: Call) -> AsyncGenerator[Envelope, None]:
        """Run one request; yield its chunks, then its Reply or Failure."""
        ...


class LocalReplicas(Protocol):
    """This node's replicas (``serving/replicas.py``)."""

    def get(self, name: str) -> ServingReplica | None:
        """This node's replica of `name`, whatever its state."""
        ...


class Links(Protocol):
    """The data plane's links to peers: ``PeerLinks`` (``links.py``), or ``meshnode.testing``'s fake."""

    def call(
        self, node: NodeId, addr: str, key: str, call: Call, *, to: NodeId | None = None
    ) -> AsyncGenerator[Envelope, None]:
        """Send `call` to the peer at `addr` (data-plane key `key`); yield its chunks, then Reply or Failure.

        With `to`, the peer is a relay of node `to`, which runs the call (docs/edge.md).
        """
        ...

    def final(self, node: NodeId, addr: str, key: str, call: Call) -> Awaitable[Envelope]:
        """The last answer of `call` (no stream, no progress): ``call``'s contract, without a stream."""
        ...

    def in_flight(self) -> Mapping[NodeId, int]:
        """Requests outstanding per peer."""
        ...

    def reported_queue(self, node: NodeId, deployment: str, now: float, max_age_s: float) -> int | None:
        """Other routers' requests at the peer's replica, as of its last answer; None when stale."""
        ...


@dataclass(frozen=True)
class Served:
    """A request committed to one replica: its first envelope, the rest, and the nodes it crossed."""

    first: Envelope
    rest: AsyncGenerator[Envelope, None]
    route: tuple[str, ...]
    attempts: int


class Route(Protocol):
    """Commits a call to a replica: the forwarder's own routing, with no moderation."""

    async def __call__(self, call: Call, hint: str | None = None, *, affinity: str | None = None) -> Served:
        """Commit `call`."""
        ...


class Moderating(Protocol):
    """Checks a request against its deployment's moderation, committing it through `route` (unchecked)."""

    # Refusals answered by this node, by (deployment, category): ``/metrics``.
    refused: collections.Counter[tuple[str, str]]

    def applies(self, deployment: str) -> bool:
        """Whether `deployment` has a moderation section (else its calls go straight to the route)."""
        ...

    async def serve(self, call: Call, hint: str | None, affinity: str | None, route: Route) -> Served:
        """Commit `call`, or raise ``Refused``."""
        ...


@dataclass(frozen=True)
class Failover:
    """A request that another replica served after the ones tried first refused it."""

    deployment: str
    refused_by: tuple[str, ...]  # node names, in the order tried
    reasons: tuple[str, ...]  # each refusal's kind ("overloaded", "unreachable", ...)
    served_by: str


class Forwarder:
    """Routes a request to a replica here or on a peer, retrying what never started."""

    def __init__(
        self,
        *,
        name: str,
        locality: Locality,
        view: MeshView,
        replicas: LocalReplicas,
        links: Links,
        cold_start: Callable[[str, float], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._name = name
        self._here = locality
        self._view = view
        self._candidates = CandidateSource(name, locality, view, replicas, links)
        # Calls to replicas on nodes nobody can dial go through their relays (``via_relays.py``).
        self._relayed = RelayedCalls(view, links, locality.node, name)
        self._replicas = replicas
        self._links = links
        # Holds a request while no replica is ready but one is starting (or scaling up from zero).
        self._cold_start = cold_start
        self._rng = rng or random.Random()
        # For /metrics: requests committed here or to a peer, attempts refused, and requests that
        # found no replica (by the status they got).
        self.counts: collections.Counter[str] = collections.Counter()
        # Requests committed to each peer, by node id: the links the dashboard draws (mesh/traffic.py).
        self.sent: collections.Counter[str] = collections.Counter()
        # Told of each request another replica served after the first one tried refused it.
        self.on_failover: Callable[[Failover], None] | None = None
        # The deployments' moderation (``serving/moderation.py``); None: no request is checked.
        self.moderation: Moderating | None = None

    def serve(
        self, call: Call, hint: str | None = None, *, affinity: str | None = None
    ) -> Coroutine[Any, Any, Served]:
        """Commit `call` to the best replica that accepts it (see the module docstring).

        `hint` prefers replicas holding it in their hints; `affinity`, an opaque key such as a
        conversation's (``mesh/affinity.py``), prefers one replica for every request with that key.
        Every route's request passes here, so its deployment's moderation is applied here too.
        """
        # Not a coroutine itself: the caller awaits the route's own, one layer less on every resume.
        moderation = self.moderation
        if moderation is not None and moderation.applies(call.deployment):
            return moderation.serve(call, hint, affinity, self._route)
        return self._route(call, hint, affinity=affinity)

    async def _route(self, call: Call, hint: str | None = None, *, affinity: str | None = None) -> Served:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + call.timeout_ms / 1000
        found = self._candidates.of(call.deployment, loop.time())
        if not found and self._cold_start is not None:
            self.counts["cold_start_waits"] += 1
            await self._cold_start(call.deployment, deadline)
            found = self._candidates.of(call.deployment, loop.time())
        if not found:
            raise self._nothing_ready(call.deployment)
        # Drawn as it is read: one candidate, unless the first refuses (``routing.ranked``).
        in_flight = self._candidates.in_flight(call.deployment, loop.time()) if len(found) > 1 else None
        order = found if in_flight is None else self._rank(found, in_flight, call, hint, affinity)
        refusals: list[Failure] = []
        tried: list[str] = []  # names of the candidates that refused, for a failover's report
        # Only its last answer is wanted: a peer's is awaited without a stream (``PeerLinks.final``).
        unary = not call.stream and not call.progress and call.accept != ACCEPT_BULK
        for index, candidate in enumerate(order):
            remaining_ms = int((deadline - loop.time()) * 1000)
            if remaining_ms <= 0:
                break
            # A deadline travels in whole milliseconds: within the first one, the call's own stands.
            attempt = call if remaining_ms >= call.timeout_ms - 1 else replace(call, timeout_ms=remaining_ms)
            crossed: list[str] = []  # a relay the request went through, if any
            try:
                # Only the last candidate waits out a relayed node's move to a new relay: with
                # another replica to try, failing over at once is sooner.
                if unary and not candidate.is_self and self._relayed.relays_of(candidate.node) is None:
                    link = (candidate.node, candidate.data_addr, candidate.data_key)
                    first, messages = await self._links.final(*link, attempt), no_more()
                else:
                    messages = self._attempt(candidate, attempt, crossed, wait=index == len(found) - 1)
                    first = await anext(messages)
            except MeshnodeError as exc:
                if not exc.retryable:
                    raise
                self.counts[f"refused_{exc.kind}"] += 1
                refusals.append(Failure(call.request_id, exc.kind, exc.message, True))
                tried.append(candidate.name)
                continue
            if isinstance(first, Failure) and first.retryable:
                self.counts[f"refused_{first.kind}"] += 1
                refusals.append(first)
                tried.append(candidate.name)
                with contextlib.suppress(Exception):
                    await messages.aclose()
                continue
            route = (self._name,) if candidate.is_self else (self._name, *crossed, candidate.name)
            self.counts["served_local" if candidate.is_self else "served_peer"] += 1
            if not candidate.is_self:
                self.sent[candidate.node] += 1
            if refusals:  # served by another replica than the first one tried
                self.counts["failovers"] += 1
                if self.on_failover is not None:
                    reasons = tuple(refusal.kind for refusal in refusals)
                    self.on_failover(Failover(call.deployment, tuple(tried), reasons, candidate.name))
            return Served(first, messages, route, len(refusals) + 1)
        self.counts["unserved_exhausted"] += 1
        if loop.time() >= deadline:
            raise DeadlineExceeded(
                f"{call.deployment} found no free replica within {call.timeout_ms / 1000:g} s"
            )
        if in_flight is None:
            in_flight = self._candidates.in_flight(call.deployment, loop.time())
        raise _exhausted(call, refusals, retry_after_s(found, in_flight))

    def _rank(
        self,
        found: list[Candidate],
        in_flight: Mapping[NodeId, int],
        call: Call,
        hint: str | None,
        affinity: str | None,
    ) -> Iterator[Candidate]:
        # Only for two or more: ``rank`` answers one candidate with itself and draws nothing then
        # (tests/unit/mesh/test_routing.py holds it to that), so a lone replica skips the policy.
        request = RouteRequest(call.deployment, hint=hint, model=_model_of(call), affinity=affinity)
        return ranked(found, request, in_flight, self._rng, self._here)

    def _attempt(
        self, candidate: Candidate, call: Call, crossed: list[str], *, wait: bool
    ) -> AsyncGenerator[Envelope, None]:
        # The replica's or the link's own generator, not a wrapper: one less layer per message.
        if candidate.is_self:
            replica = self._replicas.get(call.deployment)
            if replica is None:
                raise NotReady(f"the replica of {call.deployment} here stopped", retry_after_s=1.0)
            return replica.call(call)
        return self._relayed.call(
            candidate.node, candidate.data_addr, candidate.data_key, call, crossed, wait
        )

    def call_peer(self, node: NodeId, addr: str, key: str, call: Call) -> AsyncGenerator[Envelope, None]:
        """`call` to `node`'s data plane: dialed at `addr`, or through its relays when nobody can dial it.

        For callers that chose the node themselves (job copies), so a relay's move is waited out.
        """
        return self._relayed.call(node, addr, key, call, [], wait=True)

    def view_changed(self) -> None:
        """The gossiped view changed: calls waiting for a relayed node's new relay look again."""
        self._relayed.view_changed()

    def _nothing_ready(self, deployment: str) -> MeshnodeError:
        known = self._replicas.get(deployment) is not None or any(
            deployment in member.meta.replicas
            for member in self._view.members()
            if member.status in (Status.ALIVE, Status.SUSPECT)
        )
        if known:
            return NotReady(f"no replica of {deployment} is ready yet", retry_after_s=2.0)
        return NotFound(f"no deployment named {deployment!r} in the mesh")


def _model_of(call: Call) -> str | None:
    model = call.body.get("model")
    return model if isinstance(model, str) else None


def _exhausted(call: Call, refusals: list[Failure], retry_after: float) -> MeshnodeError:
    """Every candidate refused: 429 when any was full, else 503; the reasons go in the message."""
    reasons = "; ".join(sorted({f.message for f in refusals})[:3]) or "the deadline passed while trying"
    text = f"no replica of {call.deployment} could take the request ({reasons})"
    if any(failure.kind in _FULL_KINDS for failure in refusals):
        return Overloaded(text, retry_after_s=retry_after)
    return NotReady(text, retry_after_s=retry_after)

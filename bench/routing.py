"""Routing benchmark: the production policy (``meshnode.mesh.routing.rank``) on a seeded simulation.

Usage:  python bench/routing.py [--seed 1] [--seeds 5] [--requests 20000] [--gossip-s 1.0] [--quick]

A discrete-event simulation with no sockets and no sleeps. Replicas run one request at a time, first
in first out, so a request's finish time is known when it is admitted (Lindley's recursion) and the
loop only walks arrivals in time order. Several routers (one per node) share the mesh: each request
arrives at one of them at random, and each router knows only what gossip told it (every replica
gossips its queue depth, loaded models and hints every ``gossip_s`` seconds at its own random phase,
and every router sees the record at once) plus its *own* requests in flight to each replica. No router
sees another router's in-flight requests, as in the real mesh. Every policy of one seed sees the same
arrivals, routers, request sizes and models (common random numbers), so differences are the policy's.

The production variant models what node/dataplane/forward.py feeds ``rank``: router r runs on
replica r's node (co-location) and sees that replica exactly (``is_self``, queue = its requests in
flight); a peer's queue is the one its latest answer to this router reported (other routers'
requests only, node/dataplane/links.py) while younger than ``REPORT_MAX_AGE_S``, else the gossiped
one; the in-flight correction goes on top. Answers and refusals (429) both report. Network delays
are not modelled.

Part A, load balancing: four replicas, one twice as slow, Poisson arrivals at 70 % and 90 % of the
total capacity, exponential service times. Policies: uniform random, speed-weighted random (the
baseline of Mitzenmacher's figures: every replica at the same utilisation), per-router round-robin,
the production ``rank`` on gossip alone, with each router's in-flight counts, with only the requests
sent since the replica's last gossip, with the router's own replica seen exactly, with reply
feedback, the production variant, a what-if that sorts a tier by expected time when every queue in
it is fresh, ``rank`` fed exact queues, and an oracle that knows every queue and joins the shortest
expected delay (JSED). The gossip-reading ones also run at the production period (5 s).

Part B, model affinity: twelve models with Zipf popularity, at most three loaded per replica (least
recently used evicted), a cold load added to a request's service when its model is not loaded on the
replica that serves it. A replica whose loaded models change gossips at once (node/agent.py), the
record reaching routers after the mesh's dissemination time. The production variant with hints (the
request's model as ``X-Mesh-Hint``, each replica's loaded models as its hints) against the same
policy blind to models and against gossip + in-flight routing with hints; beside them a reference
that knows queues and loaded models exactly and adds the cold load to the expected delay, and a
what-if (not production) that keeps a request on the replicas with its hint. A replica refuses a
request when its queue is at capacity (node/serving/replica.py: one slot plus a queue of 64) and the
router tries the next candidate, as the forwarder does; refused by every replica = rejected.

Part C, prefix affinity: chat conversations of several turns, routed by ``rank`` with and without
their conversation key (``meshnode.mesh.affinity``); it lives in ``bench/prefix_affinity.py``, which
runs alone too (``--no-prefix-affinity`` skips it here).

It measures and prints; it never asserts (docs/benchmarks.md). Each figure is the median over seeds
of per-seed figures, ratios included. Runs are spread over a process pool (``--jobs``); results do
not depend on it.
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import random
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

from meshnode.dataplane.forward import REPORT_MAX_AGE_S
from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.routing import (
    Candidate,
    Locality,
    RouteRequest,
    Tier,
    expected_time_s,
    ordered,
    rank,
    unmeasured_service_s,
)
from meshnode.mesh.types import NodeId, Status

DEPLOYMENT = "bench"
# "Capacity large": no replica ever answers 429 in part A.
UNBOUNDED = 1 << 30
BALANCE_LOADS = (0.7, 0.9)
# The agent gossips its queues at most this often (5 s on the lan profile): the production setting.
PRODUCTION_GOSSIP_S = MembershipConfig.lan().meta_min_interval_s
GOSSIP_PERIODS_S = (0.1, 1.0, PRODUCTION_GOSSIP_S)
AFFINITY_LOADS = (0.3, 0.4, 0.5, 0.6)


@dataclass(frozen=True)
class BalanceSetup:
    """Part A: load balancing over replicas of unequal speed."""

    # Mean service time per replica (exponential). The last replica is twice as slow.
    service_s: tuple[float, ...] = (0.05, 0.05, 0.05, 0.10)
    # Routers, one per node; each request arrives at one of them, uniformly at random.
    routers: int = 4
    # Each replica gossips its queue depth this often.
    gossip_s: float = 1.0
    requests: int = 20_000
    # Fraction of the first requests left out of the statistics (the empty start).
    warmup: float = 0.1

    @property
    def capacity_rps(self) -> float:
        """Completions per second of every replica together."""
        return sum(1 / s for s in self.service_s)


@dataclass(frozen=True)
class AffinitySetup:
    """Part B: model affinity with a cold load per miss."""

    replicas: int = 4
    service_s: float = 0.020  # mean service time of a warm request (exponential)
    cold_s: float = 0.200  # added to a request whose model is not loaded on its replica
    models: int = 12
    zipf_s: float = 1.1  # popularity of the k-th model is proportional to k ** -zipf_s
    loaded_max: int = 3  # models a replica holds at once, least recently used evicted
    capacity: int = 65  # admitted at once: one slot plus node/config.py's replica_queue_size 64
    routers: int = 4
    gossip_s: float = 1.0
    # A replica whose loaded models change gossips at once (node/agent.py `_on_replicas_changed`);
    # the record reaches the routers after the mesh's dissemination time (LAN profile, 4 nodes).
    change_gossip_delay_s: float = MembershipConfig.lan().dissemination_s(4)
    requests: int = 20_000
    warmup: float = 0.2

    @property
    def warm_capacity_rps(self) -> float:
        """Completions per second of every replica together when no request is cold."""
        return self.replicas / self.service_s


@dataclass(frozen=True)
class Result:
    """One policy on one seed: times in system of the requests after warm-up."""

    times_s: list[float]
    warm_hits: int = 0  # part B: served with the model already loaded (after warm-up)
    rejected: int = 0  # part B: refused by every replica (after warm-up)

    @property
    def served(self) -> int:
        return len(self.times_s)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of unsorted values; nan when empty."""
    if not values:
        return math.nan
    ranked = sorted(values)
    return ranked[max(0, math.ceil(q * len(ranked)) - 1)]


def zipf_weights(count: int, s: float) -> list[float]:
    """Popularity of items 1..count, proportional to k ** -s, summing to 1."""
    raw = [k**-s for k in range(1, count + 1)]
    total = sum(raw)
    return [w / total for w in raw]


class Mesh:
    """Replicas (FIFO, one slot) and what each router knows about them."""

    def __init__(
        self,
        service_s: Sequence[float],
        routers: int,
        gossip_s: float,
        capacity: int,
        loaded_max: int,
        rng: random.Random,
    ) -> None:
        self.ids = [NodeId(f"replica-{i}") for i in range(len(service_s))]
        self.index = {node: i for i, node in enumerate(self.ids)}
        self.service_s = list(service_s)
        self.capacity = capacity
        self.loaded_max = loaded_max
        self.finishes: list[deque[float]] = [deque() for _ in service_s]  # admitted, not finished
        # Every admission and every finish per replica, in time order (FIFO: finishes are sorted too),
        # so the queue at any past moment can be counted when a router reads an answer late.
        self.admitted_at: list[list[float]] = [[] for _ in service_s]
        self.finished_at: list[list[float]] = [[] for _ in service_s]
        self.busy_until = [0.0] * len(service_s)
        self.loaded: list[list[str]] = [[] for _ in service_s]  # least recently used first
        self.gossip_gap_s = gossip_s
        self.gossiped_at = [-math.inf] * len(service_s)
        self.next_gossip = [rng.uniform(0, gossip_s) for _ in service_s]
        # Part B: records a replica sends when its loaded models change, as (arrives at, replica,
        # taken at, queue, models) in arrival order. A delay of None: changes wait for the periodic
        # gossip.
        self.change_gossip_delay_s: float | None = None
        self.changes: deque[tuple[float, int, float, int, frozenset[str]]] = deque()
        self._made: dict[tuple[int, int, frozenset[str], bool], Candidate] = {}
        self.candidates = [self.candidate(i, 0, frozenset()) for i in range(len(service_s))]
        # Per router, per replica: (sent at, finishes at) of this router's requests not yet answered.
        self.sent: list[list[deque[tuple[float, float]]]] = [
            [deque() for _ in service_s] for _ in range(routers)
        ]
        # Per router, per replica: (others, at) from that replica's latest answer to this router, as
        # node/dataplane/links.py keeps it: the replica's queue then, minus this router's requests still
        # outstanding there.
        self.reports: list[dict[int, tuple[int, float]]] = [{} for _ in range(routers)]
        self.heres = [Locality(NodeId(f"router-{r}")) for r in range(routers)]
        self.cold_s = 0.0  # part B: what a request pays when its model is not loaded

    def candidate(self, i: int, queue: int, models: frozenset[str], is_self: bool = False) -> Candidate:
        """Replica `i` described with that queue and those loaded models (as hints too)."""
        key = (i, queue, models, is_self)
        made = self._made.get(key)  # memoised: `rank` runs once per request, on four of these
        if made is None:
            made = self._made[key] = Candidate(
                node=self.ids[i],
                name=self.ids[i],
                data_addr=f"{self.ids[i]}:8472",
                status=Status.ALIVE,
                is_self=is_self,
                hints=models,
                models=models,
                queue=queue,
                slots=1,
                capacity=self.capacity,
                service_s=self.service_s[i],
            )
        return made

    def live_candidate(self, i: int, now: float) -> Candidate:
        """Replica `i` as its own node sees it (the forwarder's local candidate): exact and is_self."""
        return self.candidate(i, self.queue(i, now), frozenset(self.loaded[i]), is_self=True)

    def queue(self, i: int, now: float) -> int:
        """Requests admitted at replica `i` and not finished at `now`, the one running included."""
        finishes = self.finishes[i]
        while finishes and finishes[0] <= now:
            finishes.popleft()
        return len(finishes)

    def advance(self, now: float) -> None:
        """Deliver every gossip record due by `now`: routers learn a replica's state as of its record."""
        for i, due in enumerate(self.next_gossip):
            if due > now:
                continue
            while self.next_gossip[i] + self.gossip_gap_s <= now:
                self.next_gossip[i] += self.gossip_gap_s  # only the latest record matters
            at = self.next_gossip[i]
            self._learn(i, at, self.queue(i, at), frozenset(self.loaded[i]))
            self.next_gossip[i] = at + self.gossip_gap_s
        while self.changes and self.changes[0][0] <= now:
            _, i, at, queue, models = self.changes.popleft()
            self._learn(i, at, queue, models)

    def _learn(self, i: int, at: float, queue: int, models: frozenset[str]) -> None:
        if at >= self.gossiped_at[i]:  # an older record arriving late changes nothing
            self.candidates[i] = self.candidate(i, queue, models)
            self.gossiped_at[i] = at

    def in_flight(self, router: int, now: float, since_gossip: bool = False) -> dict[NodeId, int]:
        """What `router` has in flight to each replica (only what it sent since that replica's gossip)."""
        counts = {}
        for i, sent in enumerate(self.sent[router]):
            self._answered(router, i, now)
            if since_gossip:
                cutoff = self.gossiped_at[i]
                count = sum(1 for sent_at, _ in sent if sent_at > cutoff)
            else:
                count = len(sent)
            if count:
                counts[self.ids[i]] = count
        return counts

    def report(self, router: int, i: int, now: float) -> int | None:
        """Other routers' requests at replica `i` as its last answer to `router` told it (None: too old)."""
        self._answered(router, i, now)
        found = self.reports[router].get(i)
        if found is None or now - found[1] > REPORT_MAX_AGE_S:
            return None
        return found[0]

    def refuse(self, router: int, i: int, now: float) -> None:
        """Replica `i` refused a request of `router` (429): the refusal carries its queue too."""
        self._answered(router, i, now)
        self.reports[router][i] = (max(0, self.queue(i, now) - len(self.sent[router][i])), now)

    def _answered(self, router: int, i: int, now: float) -> None:
        """Take in replica `i`'s answers to `router` up to `now`; the latest sets the report."""
        sent = self.sent[router][i]
        last = None
        while sent and sent[0][1] <= now:
            last = sent.popleft()[1]
        if last is None:
            return
        # The replica's other requests when it answered (node/dataplane/server.py: in flight minus the one
        # answered), less this router's own still outstanding then (node/dataplane/links.py).
        admitted, finished = self.admitted_at[i], self.finished_at[i]
        queued = bisect.bisect_left(admitted, last) - bisect.bisect_right(finished, last)
        ours = bisect.bisect_left(sent, last, key=lambda entry: entry[0])
        self.reports[router][i] = (max(0, queued - ours), last)

    def admit(
        self, router: int, i: int, now: float, work: float, model: str | None = None, cold_s: float = 0.0
    ) -> tuple[float, bool]:
        """Queue a request of `work` (in units of the replica's mean) at replica `i`: (finish, warm)."""
        warm = True
        service = work * self.service_s[i]
        if model is not None:
            loaded = self.loaded[i]
            if model in loaded:
                loaded.remove(model)
            else:
                warm = False
                service += cold_s
                if len(loaded) >= self.loaded_max:
                    loaded.pop(0)
            loaded.append(model)  # FIFO: the replica reaches this request after every earlier one
        finish = max(now, self.busy_until[i]) + service
        self.busy_until[i] = finish
        self.finishes[i].append(finish)
        self.admitted_at[i].append(now)
        self.finished_at[i].append(finish)
        self.sent[router][i].append((now, finish))
        if not warm and self.change_gossip_delay_s is not None:
            record = (now + self.change_gossip_delay_s, i, now, self.queue(i, now), frozenset(self.loaded[i]))
            self.changes.append(record)
        return finish, warm


# A policy: (mesh, router, now, request, rng) -> replica indices in the order to try them.
Policy = Callable[[Mesh, int, float, RouteRequest, random.Random], list[int]]


# How a policy walks `rank`'s tiers: (tiers, nodes whose queue it knows fresh, in-flight, here, rng).
TierOrder = Callable[[list[Tier], set[NodeId], dict[NodeId, int], Locality, random.Random], list[Candidate]]


def as_ranked(
    tiers: list[Tier], fresh: set[NodeId], counts: dict[NodeId, int], here: Locality, rng: random.Random
) -> list[Candidate]:
    """Production: the tiers in order, each as `rank` ordered it (power-of-two-choices)."""
    return ordered(tiers)


def production(
    view: str = "gossip", in_flight: str = "all", feedback: bool = False, walk: TierOrder = as_ranked
) -> Policy:
    """The production `rank` and `ordered`, fed what a router of the simulated mesh would know.

    `view`: "gossip" (every queue as last gossiped), "own" (router r runs on replica r's node and
    sees that replica exactly, as node/dataplane/forward.py's local candidate: is_self, queue = its
    requests in flight, its loaded models) or "exact" (every queue exact).
    `in_flight`: "none" (an empty map), "all" (every request this router has outstanding at each
    replica, as node/dataplane/forward.py passes it) or "since" (only those sent since that
    replica's last gossip).
    `feedback`: a peer's queue as its latest answer to this router reported it (other routers'
    requests only) replaces the gossiped one while younger than REPORT_MAX_AGE_S, as
    node/dataplane/forward.py's `_candidates` does.
    `walk`: how the tiers become one order (production: `ordered`; a what-if may reorder a tier).
    """

    def choose(mesh: Mesh, router: int, now: float, request: RouteRequest, rng: random.Random) -> list[int]:
        counts = mesh.in_flight(router, now, since_gossip=in_flight == "since")
        if in_flight == "none":
            counts = {}
        found, here, fresh = list(mesh.candidates), mesh.heres[router], set()
        if feedback:
            for i, gossiped in enumerate(found):
                others = mesh.report(router, i, now)
                if others is not None:
                    found[i] = mesh.candidate(i, others, gossiped.models)
                    fresh.add(gossiped.node)
        if view == "own":
            found[router] = mesh.live_candidate(router, now)
            here = Locality(mesh.ids[router])
            fresh.add(here.node)
        elif view == "exact":
            found = [mesh.candidate(i, mesh.queue(i, now), c.models) for i, c in enumerate(found)]
        tiers = rank(found, request, counts, rng, here)
        return [mesh.index[candidate.node] for candidate in walk(tiers, fresh, counts, here, rng)]

    return choose


def fresh_by_expected_time(
    tiers: list[Tier], fresh: set[NodeId], counts: dict[NodeId, int], here: Locality, rng: random.Random
) -> list[Candidate]:
    """What-if, not production: a tier whose every queue is fresh goes shortest expected time first.

    Fresh means this node's own replica (exact) or a peer whose answer reported its queue within
    REPORT_MAX_AGE_S. Such a tier is sorted (join the shortest expected delay) instead of drawn by
    power-of-two-choices; a tier with any gossip-only queue keeps `rank`'s order, because a global
    argmin on stale gossip herds. Ties go to this node's own replica, then at random. With equally
    fast replicas plus clearly slower ones, as here, this is the order mesh/routing.py's pairwise
    `_key` gives (queue per slot between equals, expected time across speeds).
    """
    pool = [candidate for tier in tiers for candidate in tier.candidates]
    fallback = unmeasured_service_s(pool)
    walked: list[Candidate] = []
    for tier in tiers:
        if not all(c.node in fresh for c in tier.candidates):
            walked += tier.candidates
            continue
        keys = {
            c.node: (expected_time_s(c, counts, fallback), not c.is_self, rng.random())
            for c in tier.candidates
        }
        walked += sorted(tier.candidates, key=lambda c: keys[c.node])
    return walked


def uniform_random(
    mesh: Mesh, router: int, now: float, request: RouteRequest, rng: random.Random
) -> list[int]:
    return [rng.randrange(len(mesh.ids))]


def weighted_random(
    mesh: Mesh, router: int, now: float, request: RouteRequest, rng: random.Random
) -> list[int]:
    return rng.choices(range(len(mesh.ids)), weights=[1 / s for s in mesh.service_s])


def round_robin() -> Policy:
    turns: dict[int, int] = {}

    def choose(mesh: Mesh, router: int, now: float, request: RouteRequest, rng: random.Random) -> list[int]:
        turn = turns.get(router, 0)
        turns[router] = turn + 1
        return [turn % len(mesh.ids)]

    return choose


def oracle(mesh: Mesh, router: int, now: float, request: RouteRequest, rng: random.Random) -> list[int]:
    """Join the shortest expected delay, knowing every queue exactly; ties broken at random."""
    delays = [s * (1 + mesh.queue(i, now)) for i, s in enumerate(mesh.service_s)]
    best = min(delays)
    return [rng.choice([i for i, d in enumerate(delays) if d <= best * (1 + 1e-9)])]


def cold_aware_oracle(
    mesh: Mesh, router: int, now: float, request: RouteRequest, rng: random.Random
) -> list[int]:
    """Part B's reference: exact queues and loaded models, shortest expected delay cold load included."""
    model, cold_s = request.model, mesh.cold_s
    delays = [
        (s * (1 + mesh.queue(i, now)) + (0.0 if model in mesh.loaded[i] else cold_s), rng.random())
        for i, s in enumerate(mesh.service_s)
    ]
    return sorted(range(len(delays)), key=delays.__getitem__)


def hinted_only(
    tiers: list[Tier], fresh: set[NodeId], counts: dict[NodeId, int], here: Locality, rng: random.Random
) -> list[Candidate]:
    """What-if, not production: only the `hint` tier when there is one, else every tier.

    A request whose model is loaded somewhere waits there or is refused (429) rather than spilling
    to a replica that must load it cold.
    """
    hinted = [tier for tier in tiers if tier.name == "hint"]
    return ordered(hinted or tiers)


RANDOM = "random"
WEIGHTED = "random, speed-weighted"
GOSSIP_ONLY = "P2C, gossip only"
IN_FLIGHT = "P2C, gossip + in-flight (as node/dataplane/forward.py)"
IN_FLIGHT_SINCE = "P2C, gossip + in-flight since gossip"
OWN_EXACT = "P2C, gossip + in-flight, own replica exact"
FEEDBACK = "P2C, gossip + reply feedback + in-flight"
PRODUCTION = "production: co-located + reply feedback + in-flight"
FRESH_JSED = "what-if: production, fresh tiers by expected time"
P2C_EXACT = "P2C, exact queues"
ORACLE = "oracle (exact JSED)"
BALANCE_POLICIES: dict[str, Callable[[], Policy]] = {
    RANDOM: lambda: uniform_random,
    WEIGHTED: lambda: weighted_random,
    "round-robin": round_robin,
    GOSSIP_ONLY: lambda: production("gossip", "none"),
    IN_FLIGHT: lambda: production("gossip", "all"),
    IN_FLIGHT_SINCE: lambda: production("gossip", "since"),
    OWN_EXACT: lambda: production("own", "all"),
    FEEDBACK: lambda: production("gossip", "all", feedback=True),
    PRODUCTION: lambda: production("own", "all", feedback=True),
    FRESH_JSED: lambda: production("own", "all", feedback=True, walk=fresh_by_expected_time),
    P2C_EXACT: lambda: production("exact", "none"),
    ORACLE: lambda: oracle,
}
GOSSIP_HINTED = "gossip + in-flight, hint = model"
HINTED = "production: co-located + reply feedback, hint = model"
BLIND = "production: co-located + reply feedback, affinity-blind"
REFERENCE = "reference: exact, cold-load-aware JSED"
NO_SPILL = "what-if: production, hinted replicas only, no cold spill"
# name -> (whether a request carries its model as hint and model, the policy)
AFFINITY_POLICIES: dict[str, tuple[bool, Callable[[], Policy]]] = {
    HINTED: (True, lambda: production("own", "all", feedback=True)),
    GOSSIP_HINTED: (True, production),
    BLIND: (False, lambda: production("own", "all", feedback=True)),
    REFERENCE: (True, lambda: cold_aware_oracle),
    NO_SPILL: (True, lambda: production("own", "all", feedback=True, walk=hinted_only)),
}


def simulate_balance(policy: str, load: float, seed: int, setup: BalanceSetup) -> Result:
    """Part A: one policy at `load` (fraction of the total capacity) on one seed."""
    world = random.Random(f"routing-balance-{seed}")
    rate = load * setup.capacity_rps
    mesh = Mesh(setup.service_s, setup.routers, setup.gossip_s, UNBOUNDED, 0, world)
    choose = BALANCE_POLICIES[policy]()
    pick = random.Random(f"routing-policy-{seed}")
    request = RouteRequest(DEPLOYMENT)
    skip = int(setup.requests * setup.warmup)
    times: list[float] = []
    now = 0.0
    expo, randrange, routers = world.expovariate, world.randrange, setup.routers
    for n in range(setup.requests):
        now += expo(rate)
        router = randrange(routers)
        work = expo(1.0)
        mesh.advance(now)
        replica = choose(mesh, router, now, request, pick)[0]
        finish, _ = mesh.admit(router, replica, now, work)
        if n >= skip:
            times.append(finish - now)
    return Result(times)


def simulate_affinity(policy: str, load: float, seed: int, setup: AffinitySetup) -> Result:
    """Part B: one policy at `load` (fraction of the warm capacity) on one seed."""
    world = random.Random(f"routing-affinity-{seed}")
    rate = load * setup.warm_capacity_rps
    names = [f"model-{k}" for k in range(1, setup.models + 1)]
    mesh = Mesh(
        [setup.service_s] * setup.replicas,
        setup.routers,
        setup.gossip_s,
        setup.capacity,
        setup.loaded_max,
        world,
    )
    mesh.cold_s = setup.cold_s
    mesh.change_gossip_delay_s = setup.change_gossip_delay_s
    hinted, factory = AFFINITY_POLICIES[policy]
    choose = factory()
    pick = random.Random(f"routing-policy-{seed}")
    requests = {
        name: RouteRequest(DEPLOYMENT, hint=name, model=name) if hinted else RouteRequest(DEPLOYMENT)
        for name in names
    }
    skip = int(setup.requests * setup.warmup)
    times: list[float] = []
    warm_hits = rejected = 0
    now = 0.0
    expo, randrange, routers = world.expovariate, world.randrange, setup.routers
    popularity = zipf_weights(setup.models, setup.zipf_s)
    for n, model in enumerate(world.choices(names, weights=popularity, k=setup.requests)):
        now += expo(rate)
        router = randrange(routers)
        work = expo(1.0)
        mesh.advance(now)
        # The forwarder walks the ranking: a replica at capacity refuses at once (429, retryable).
        for replica in choose(mesh, router, now, requests[model], pick):
            if mesh.queue(replica, now) >= setup.capacity:
                mesh.refuse(router, replica, now)
                continue
            finish, warm = mesh.admit(router, replica, now, work, model, setup.cold_s)
            if n >= skip:
                times.append(finish - now)
                warm_hits += warm
            break
        else:
            rejected += n >= skip
    return Result(times, warm_hits, rejected)


@dataclass(frozen=True)
class Job:
    """One simulation run: a policy at a load on a seed."""

    policy: str
    load: float
    seed: int
    setup: BalanceSetup | AffinitySetup


def run(job: Job) -> Result:
    if isinstance(job.setup, BalanceSetup):
        return simulate_balance(job.policy, job.load, job.seed, job.setup)
    return simulate_affinity(job.policy, job.load, job.seed, job.setup)


def run_all(jobs: Iterable[Job], workers: int) -> dict[Job, Result]:
    """Every distinct job's result; spread over `workers` processes when more than one."""
    unique = list(dict.fromkeys(jobs))
    if workers <= 1:
        return {job: run(job) for job in unique}
    with ProcessPoolExecutor(workers) as pool:
        return dict(zip(unique, pool.map(run, unique), strict=True))


# -- reporting ---------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    listed = list(values)
    return statistics.median(listed) if listed else math.nan


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:,.0f}"


def p99(result: Result) -> float:
    return percentile(result.times_s, 0.99)


# Part A's policies that read gossip, measured at the production period too (and swept).
SWEPT = (GOSSIP_ONLY, IN_FLIGHT, OWN_EXACT, FEEDBACK, PRODUCTION, FRESH_JSED)
# Part B's policies measured at the production gossip period too.
AFFINITY_AT_PRODUCTION_GOSSIP = (HINTED, GOSSIP_HINTED, BLIND)


@dataclass(frozen=True)
class Plan:
    """What one invocation runs."""

    balance: BalanceSetup
    affinity: AffinitySetup
    seeds: tuple[int, ...]
    sweep: bool

    def balance_rows(self) -> list[tuple[str, BalanceSetup]]:
        """Part A's table rows: every policy at the run's gossip period, then SWEPT at the production one."""
        rows = [(name, self.balance) for name in BALANCE_POLICIES]
        slow = replace(self.balance, gossip_s=PRODUCTION_GOSSIP_S)
        return rows + [(name, slow) for name in SWEPT if slow != self.balance]

    def affinity_rows(self) -> list[tuple[str, AffinitySetup]]:
        """Part B's table rows: every policy at the run's gossip period, some at the production one."""
        rows = [(name, self.affinity) for name in AFFINITY_POLICIES]
        slow = replace(self.affinity, gossip_s=PRODUCTION_GOSSIP_S)
        return rows + [(name, slow) for name in AFFINITY_AT_PRODUCTION_GOSSIP if slow != self.affinity]

    def jobs(self) -> list[Job]:
        found = [
            Job(name, load, s, setup)
            for load in BALANCE_LOADS
            for name, setup in self.balance_rows()
            for s in self.seeds
        ]
        if self.sweep:
            for period in GOSSIP_PERIODS_S:
                swept = replace(self.balance, gossip_s=period)
                found += [Job(p, BALANCE_LOADS[-1], s, swept) for p in SWEPT for s in self.seeds]
        found += [
            Job(name, load, s, setup)
            for load in AFFINITY_LOADS
            for name, setup in self.affinity_rows()
            for s in self.seeds
        ]
        return found


# (policy, gossip period, load) -> figures of that table row.
Figures = dict[tuple[str, float, float], tuple[float, ...]]


def balance_tables(plan: Plan, results: dict[Job, Result]) -> Figures:
    """Print part A's table per load; return (p99 / oracle, random / p99, weighted / p99) per row."""
    setup = plan.balance
    print(f"## A. Load balancing ({len(plan.seeds)} seeds x {setup.requests} requests)\n")
    print(
        f"Replicas: mean service {', '.join(ms(s) for s in setup.service_s)} ms (exponential), one slot, FIFO; "
        f"total capacity {setup.capacity_rps:.0f} req/s; Poisson arrivals. {setup.routers} routers, one per node, "
        f"each request arriving at one at random; a router knows only its own in-flight counts. Queue depths "
        f"gossiped every 'gossip s' (random phase per replica; '-' = the policy reads no gossip). First "
        f"{setup.warmup:.0%} of requests left out. Ratios are medians of per-seed ratios.\n"
    )
    figures: Figures = {}
    for load in BALANCE_LOADS:
        tails = {
            (name, row.gossip_s): [p99(results[Job(name, load, s, row)]) for s in plan.seeds]
            for name, row in plan.balance_rows()
        }
        oracle_p99 = tails[ORACLE, setup.gossip_s]
        random_p99, weighted_p99 = tails[RANDOM, setup.gossip_s], tails[WEIGHTED, setup.gossip_s]
        print(f"### {load:.0%} load ({load * setup.capacity_rps:.0f} req/s)\n")
        print(
            "| policy | gossip s | p50 ms | p99 ms | mean ms | p99 / oracle p99 | random p99 / p99 "
            "| speed-weighted random p99 / p99 |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, row in plan.balance_rows():
            found = [results[Job(name, load, s, row)] for s in plan.seeds]
            mine = tails[name, row.gossip_s]
            ratios = (
                median(p / o for p, o in zip(mine, oracle_p99, strict=True)),
                median(r / p for p, r in zip(mine, random_p99, strict=True)),
                median(w / p for p, w in zip(mine, weighted_p99, strict=True)),
            )
            figures[name, row.gossip_s, load] = ratios
            gossip = f"{row.gossip_s:g}" if name in SWEPT or name == IN_FLIGHT_SINCE else "-"
            print(
                f"| {name} | {gossip} | {ms(median(percentile(r.times_s, 0.5) for r in found))} "
                f"| {ms(median(mine))} | {ms(median(statistics.fmean(r.times_s) for r in found))} "
                f"| {ratios[0]:.2f} | {ratios[1]:.1f} | {ratios[2]:.2f} |"
            )
        print()
    return figures


def gossip_sweep(plan: Plan, results: dict[Job, Result]) -> None:
    """Part A at the highest load: p99 / oracle p99 of the gossip-reading variants as gossip gets staler."""
    load = BALANCE_LOADS[-1]
    oracle_p99 = [p99(results[Job(ORACLE, load, s, plan.balance)]) for s in plan.seeds]
    print(f"### Gossip period at {load:.0%} load: p99 / oracle p99 (p99 ms)\n")
    print("| gossip period s | " + " | ".join(SWEPT) + " |")
    print("|---|" + "---|" * len(SWEPT))
    for period in GOSSIP_PERIODS_S:
        swept = replace(plan.balance, gossip_s=period)
        cells = []
        for name in SWEPT:
            mine = [p99(results[Job(name, load, s, swept)]) for s in plan.seeds]
            cells.append(
                f"{median(p / o for p, o in zip(mine, oracle_p99, strict=True)):.2f} ({ms(median(mine))})"
            )
        print(f"| {period:g} | " + " | ".join(cells) + " |")
    print()


def affinity_table(plan: Plan, results: dict[Job, Result]) -> Figures:
    """Print part B's table; return (warm-hit share, blind p99 / p99) per row and load."""
    setup = plan.affinity
    top = zipf_weights(setup.models, setup.zipf_s)[0]
    print(f"## B. Model affinity ({len(plan.seeds)} seeds x {setup.requests} requests)\n")
    print(
        f"{setup.replicas} replicas, warm service {ms(setup.service_s)} ms mean (exponential), cold load "
        f"+{ms(setup.cold_s)} ms, {setup.models} models with Zipf popularity s = {setup.zipf_s:g} (the top model "
        f"{top:.1%} of requests), at most {setup.loaded_max} loaded per replica (LRU). Load is a fraction of the "
        f"warm capacity ({setup.warm_capacity_rps:.0f} req/s), Poisson arrivals. Replica capacity {setup.capacity} "
        f"(then 429 and the next candidate; refused by all = rejected). {setup.routers} routers with in-flight "
        f"correction, one on each replica's node for the co-located rows; queues, loaded models and hints "
        f"gossiped every 'gossip s'. Replicas start empty; first {setup.warmup:.0%} of requests left out. "
        f"'Stable' counts seeds with no rejection after warm-up. Blind p99 / p99 divides by '{BLIND}' at the "
        f"same gossip period. Primary setting: '{HINTED}' at gossip {PRODUCTION_GOSSIP_S:g} s.\n"
    )
    print("| load | policy | gossip s | warm hits | rejected | stable | p50 ms | p99 ms | blind p99 / p99 |")
    print("|---|---|---|---|---|---|---|---|---|")
    figures: Figures = {}
    for load in AFFINITY_LOADS:
        for name, row in plan.affinity_rows():
            found = [results[Job(name, load, s, row)] for s in plan.seeds]
            blind = [p99(results[Job(BLIND, load, s, row)]) for s in plan.seeds]
            warm = median(r.warm_hits / max(r.served, 1) for r in found)
            ratio = median(b / p99(r) for r, b in zip(found, blind, strict=True))
            rejected = median(r.rejected / max(r.served + r.rejected, 1) for r in found)
            figures[name, row.gossip_s, load] = warm, ratio
            gossip = "-" if name == REFERENCE else f"{row.gossip_s:g}"
            print(
                f"| {load:.0%} | {name} | {gossip} | {warm:.1%} | {rejected:.1%} "
                f"| {sum(r.rejected == 0 for r in found)}/{len(found)} "
                f"| {ms(median(percentile(r.times_s, 0.5) for r in found))} | {ms(median(p99(r) for r in found))} "
                f"| {ratio:.1f} |"
            )
    print()
    return figures


def targets(plan: Plan, balance: Figures, affinity: Figures) -> None:
    """The targets' figures, measured, never asserted."""
    top = BALANCE_LOADS[-1]
    periods = dict.fromkeys((plan.balance.gossip_s, PRODUCTION_GOSSIP_S))
    print("## Targets (measured, not asserted)\n")
    for name in (IN_FLIGHT, PRODUCTION, FRESH_JSED):
        for period in periods:
            to_oracle, vs_random, vs_weighted = balance[name, period, top]
            print(
                f"- {top:.0%} load, {name}, gossip {period:g} s: p99 / oracle p99 = {to_oracle:.2f} (target <= 1.5); "
                f"uniform random p99 / its p99 = {vs_random:.1f}, speed-weighted random p99 / its p99 = "
                f"{vs_weighted:.2f} (target >= 3)"
            )
    for period in periods:
        for load in AFFINITY_LOADS:
            warm, ratio = affinity[HINTED, period, load]
            print(
                f"- {load:.0%} load, {HINTED}, gossip {period:g} s: warm hits {warm:.1%} (target >= 95 %); "
                f"blind p99 / its p99 = {ratio:.1f} (target >= 5)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="first seed; runs use seed .. seed + seeds - 1")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per figure; medians are quoted")
    parser.add_argument(
        "--requests", type=int, default=None, help=f"requests per run (default {BalanceSetup.requests})"
    )
    parser.add_argument(
        "--gossip-s",
        type=float,
        default=BalanceSetup.gossip_s,
        help=f"gossip period in seconds (the gossip-reading rows run at {PRODUCTION_GOSSIP_S:g} s too)",
    )
    parser.add_argument("--quick", action="store_true", help="3 seeds x 5000 requests, no gossip sweep")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument(
        "--prefix-affinity",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run part C (bench/prefix_affinity.py) too",
    )
    args = parser.parse_args()
    requests = args.requests or (5_000 if args.quick else BalanceSetup.requests)
    plan = Plan(
        balance=BalanceSetup(gossip_s=args.gossip_s, requests=requests),
        affinity=AffinitySetup(gossip_s=args.gossip_s, requests=requests),
        seeds=tuple(range(args.seed, args.seed + (3 if args.quick else args.seeds))),
        sweep=not args.quick,
    )
    started = time.perf_counter()
    results = run_all(plan.jobs(), args.jobs)
    balance = balance_tables(plan, results)
    if plan.sweep:
        gossip_sweep(plan, results)
    affinity = affinity_table(plan, results)
    targets(plan, balance, affinity)
    if args.prefix_affinity:
        # Imported here: bench/ is a folder of scripts, on the path only when one runs as a script.
        import prefix_affinity

        print()
        turns = prefix_affinity.QUICK_TURNS if args.quick else prefix_affinity.Setup.turns
        prefix_affinity.table(plan.seeds, turns)
    print(f"\n{len(results)} runs, wall {time.perf_counter() - started:.1f} s with {args.jobs} processes")


if __name__ == "__main__":
    main()

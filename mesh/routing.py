"""Routing policy: which replicas should serve a request, best first, as ranked tiers.

A pure function of (candidates from the gossiped view, the request, what this node has in flight to
each peer, a seeded ``random.Random``). The forwarder (``node/dataplane/forward.py``) walks the answer
in order and owns retries; the policy never sends anything (a policy returns decisions and a mechanism
carries them out, as Ray Serve's ``choose_replicas``).

Tiers, best first:

1. ``hint``: replicas whose gossiped hints hold the request's ``X-Mesh-Hint`` (fal's
   ``provide_hints()``: the runner that already has what the request needs).
2. ``warm``: replicas that have the request's model (``"model"`` in the body) loaded.
3. ``any``: every other ready replica of the deployment.
4. ``full``: replicas whose corrected queue already fills their capacity: tried only after all the
   others, because they would most likely answer 429.
5. ``suspect``: replicas on nodes the failure detector suspects. Dead and left nodes never appear.

Inside a tier the order comes from power-of-two-choices (Mitzenmacher): draw two at random, keep the
one with the lower expected time in system, repeat over the rest. Two replicas of about the same
measured speed (within 25 %) are compared by queue per slot alone: exact counts, so jitter in the
measurements never decides. Never a global argmin, which herds
every router onto the same replica between two gossip rounds. The expected time is the replica's
measured service time times ``1 + queue / slots``, where ``queue`` is its gossiped queue depth plus
what this node has sent it since (the in-flight correction; for this node's own replicas the exact
count), so a GPU twice as fast as a laptop takes about twice its traffic. Between the two drawn,
ties (equal loads and speeds) break by locality: same zone, then same region, then measured
round-trip time in coarse buckets, so equal remote replicas share evenly instead of by microseconds
of RTT. Before any of that, a replica in this node's region with a free slot (its corrected queue
below its slots) goes before every replica outside the region: a request that can start at once
nearby never crosses to another region, and only when the region's replicas are all busy does the
comparison by load let it spill over. This node's own replica goes first whenever no other in its
tier expects a shorter time: serving locally saves the hop, and it cannot herd (every router's own
replica is a different one, and its queue is known exactly).

The forwarder reads the order lazily (``ranked``): it draws one pair per request unless a replica
refuses. From ``SAMPLED_FROM`` candidates on, with no hint, model or key and no replica of this
node's, the first is found without sorting every replica into its tier: replicas drawn from the
whole pool are kept while they belong to the ``any`` tier until two are found (rejection sampling,
so uniform over the tier as before), and the better of the two goes first. A request's routing then
costs the same at a thousand replicas as at ten.

A replica measures its speed only from requests it serves, so a figure that keeps requests away
would never be corrected: one slow outlier on a busy machine would starve a ready replica at every
concurrency. A speed whose replica completed nothing over its last window (gossiped rate 0) is
therefore read as unmeasured (the median, as a new replica): it gets its share again and measures
anew. Locality needs no such rule: the failure detector's probes measure round trips with or
without traffic.

Prefix affinity (``affinity.py``): a request with an ``affinity`` key (a chat conversation's) has a
preferred replica, the key's rendezvous choice, and that replica goes first in its tier whenever it
has a free slot (corrected queue below its slots), ahead of power-of-two-choices and of this node's
own replica: the next turn of a conversation runs where its prompt's KV cache already is. When it
has no free slot (or is full or suspect) the order is power-of-two-choices as without a key, so
affinity never queues a request behind a busy replica while others are idle. It stays within the
tiers: a hint is stronger (the preferred replica is first only in its own tier, so replicas with the
hint still go before it), and so is a warm model (loading one costs more than a missed cache). The
region rule holds by choosing among this node's region's replicas when the region has any: a
conversation that enters in one region stays there while a replica there has room. Every node
computes the same choice from the same candidates, with no shared state.
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Iterable, Iterator, Mapping

from .affinity import preferred
from .route_types import TIER_ORDER, Candidate, Locality, RouteRequest, Tier, TierName
from .types import NodeId, Status

# Service time assumed for a replica that has not measured one yet when no replica has: only
# ratios matter. When some have, an unmeasured one counts as their median (a new replica is neither
# favoured nor shunned).
DEFAULT_SERVICE_S = 0.05
# Round-trip times within one bucket count as equal locality (LAN jitter is not a preference).
RTT_BUCKET_S = 0.002
# Service times below this count as equal: differences of a millisecond or two are measurement
# noise next to one network hop, and equal replicas of a fast app should share, not race.
NEGLIGIBLE_TIME_S = 0.005
# Replicas whose measured service times are within this factor count as equally fast: they are
# compared by queue alone (exact counts), so measurement jitter under load never decides.
SAME_SPEED_FACTOR = 1.25
# From this many candidates on, a request's first replica is drawn from a sample, not from every
# replica sorted into its tier. In-process, the first of the order: 1,000 replicas 272 -> ~20 us,
# 10 replicas 11.0 -> 5.7 us, 3 replicas 8.5 -> 5.8 us; two replicas are cheaper sorted (a sample of
# two draws three times on average to find both).
SAMPLED_FROM = 3
# Draws from the whole pool to find two replicas of the ``any`` tier before sorting them all instead.
_SAMPLE_DRAWS = 8

# A candidate's figures as the comparison of two drawn reads them: region room, queue per slot,
# service time, locality, round-trip bucket.
_Figures = tuple[int, float, float, int, int]
_IS_SELF = operator.attrgetter("is_self")


def rank(
    candidates: Iterable[Candidate],
    request: RouteRequest,
    in_flight: Mapping[NodeId, int],
    rng: random.Random,
    here: Locality,
) -> list[Tier]:
    """Ranked tiers of replicas for `request`; empty tiers are left out."""
    return [Tier(name, tuple(order)) for name, order in _tiers(candidates, request, in_flight, rng, here)]


def ranked(
    candidates: Iterable[Candidate],
    request: RouteRequest,
    in_flight: Mapping[NodeId, int],
    rng: random.Random,
    here: Locality,
) -> Iterator[Candidate]:
    """Every candidate in ``rank``'s order, drawn only as far as it is read: the forwarder reads one
    unless the first refuses, so a request costs one draw, not one per replica of the deployment.

    From ``SAMPLED_FROM`` candidates on, the first is drawn from a sample (``_sampled_first``) with
    the distribution ``rank``'s first has, without sorting every replica into its tier."""
    pool = candidates if isinstance(candidates, list) else list(candidates)
    first = _sampled_first(pool, request, in_flight, rng, here) if len(pool) >= SAMPLED_FROM else None
    if first is not None:
        yield first
        pool = [candidate for candidate in pool if candidate is not first]
    for _, order in _tiers(pool, request, in_flight, rng, here):
        yield from order


def _sampled_first(
    pool: list[Candidate],
    request: RouteRequest,
    in_flight: Mapping[NodeId, int],
    rng: random.Random,
    here: Locality,
) -> Candidate | None:
    """The better of two replicas of the ``any`` tier, found by drawing from the whole pool and
    keeping the ``any`` ones (rejection sampling: uniform over the tier, as ``rank`` draws them).

    None where the whole order is needed: a hint, model or affinity key (other tiers, a preferred
    replica), a replica of this node (it goes first when no other in its tier is better: a
    comparison with every one), or an ``any`` tier too sparse to find two in ``_SAMPLE_DRAWS``.
    """
    if request.hint is not None or request.model is not None or request.affinity is not None:
        return None
    if any(map(_IS_SELF, pool)):
        return None
    drawn: list[Candidate] = []
    for _ in range(_SAMPLE_DRAWS):
        candidate = pool[rng.randrange(len(pool))]
        if (
            all(candidate is not other for other in drawn)
            and _tier_of(candidate, request, in_flight) == "any"
        ):
            drawn.append(candidate)
            if len(drawn) == 2:
                break
    else:
        return None
    one, two = drawn
    measured = one.service_s is not None and two.service_s is not None
    unmeasured_s = DEFAULT_SERVICE_S if measured else unmeasured_service_s(pool)
    figures = _figures(one, in_flight, here, unmeasured_s), _figures(two, in_flight, here, unmeasured_s)
    return one if _at_least_as_good(*figures) else two


def _tiers(
    candidates: Iterable[Candidate],
    request: RouteRequest,
    in_flight: Mapping[NodeId, int],
    rng: random.Random,
    here: Locality,
) -> Iterator[tuple[TierName, Iterator[Candidate]]]:
    pool = list(candidates)
    groups: dict[TierName, list[Candidate]] = {name: [] for name in TIER_ORDER}
    for candidate in pool:
        groups[_tier_of(candidate, request, in_flight)].append(candidate)
    fallback = unmeasured_service_s(pool)
    first = _affinity_choice(pool, request, in_flight, here)
    for name in TIER_ORDER:
        if groups[name]:
            yield name, _power_of_two_order(groups[name], in_flight, rng, here, fallback, first)


def ordered(tiers: Iterable[Tier]) -> list[Candidate]:
    """Every candidate of `tiers`, best first: the order the forwarder tries them in."""
    return [candidate for tier in tiers for candidate in tier.candidates]


def corrected_queue(candidate: Candidate, in_flight: Mapping[NodeId, int]) -> int:
    """The candidate's queue as this node best knows it (gossip plus what we sent since)."""
    if candidate.is_self:
        return candidate.queue  # exact: the agent counts its own replicas' requests
    return candidate.queue + in_flight.get(candidate.node, 0)


def unmeasured_service_s(pool: Iterable[Candidate]) -> float:
    """The service time assumed for replicas that have not measured one: the median of those that have."""
    known = sorted(c.service_s for c in pool if c.service_s is not None)
    return known[len(known) // 2] if known else DEFAULT_SERVICE_S


def expected_time_s(
    candidate: Candidate, in_flight: Mapping[NodeId, int], unmeasured_s: float = DEFAULT_SERVICE_S
) -> float:
    """Expected time in system for one more request: service time, stretched by the queue ahead."""
    service = candidate.service_s if candidate.service_s is not None else unmeasured_s
    return service * (1 + corrected_queue(candidate, in_flight) / max(candidate.slots, 1))


def predicted_wait_s(candidate: Candidate, in_flight: Mapping[NodeId, int]) -> float:
    """Expected time before a new request starts running there (FedML's fail-fast rule)."""
    ahead = corrected_queue(candidate, in_flight) - max(candidate.slots, 1) + 1
    if ahead <= 0 or candidate.service_s is None:
        return 0.0
    return candidate.service_s * ahead / max(candidate.slots, 1)


def retry_after_s(candidates: Iterable[Candidate], in_flight: Mapping[NodeId, int]) -> float:
    """When a saturated mesh is likely to have room: the shortest predicted wait, at least 1 s."""
    waits = [predicted_wait_s(candidate, in_flight) for candidate in candidates]
    return max(1.0, math.ceil(min(waits))) if waits else 1.0


def _tier_of(candidate: Candidate, request: RouteRequest, in_flight: Mapping[NodeId, int]) -> TierName:
    if candidate.status != Status.ALIVE:
        return "suspect"
    if corrected_queue(candidate, in_flight) >= candidate.capacity:
        return "full"
    if request.hint is not None and request.hint in candidate.hints:
        return "hint"
    if request.model is not None and request.model in candidate.models:
        return "warm"
    return "any"


def _affinity_choice(
    pool: list[Candidate], request: RouteRequest, in_flight: Mapping[NodeId, int], here: Locality
) -> Candidate | None:
    """The request's preferred replica when it can start the request at once, else None."""
    if request.affinity is None:
        return None
    # The region rule: this node's region's replicas, when it has any, so the choice never leaves it.
    nearby = [c for c in pool if c.is_self or c.region == here.region] if here.region else []
    choice = preferred(request.affinity, nearby or pool)
    if choice is None or _tier_of(choice, request, in_flight) in ("full", "suspect"):
        return None
    return choice if corrected_queue(choice, in_flight) < max(choice.slots, 1) else None


def _power_of_two_order(
    group: list[Candidate],
    in_flight: Mapping[NodeId, int],
    rng: random.Random,
    here: Locality,
    unmeasured_s: float,
    first: Candidate | None,
) -> Iterator[Candidate]:
    """`group` in power-of-two-choices order, drawn as it is read, each candidate's figures read
    once, when it is first drawn. `first` (the affinity choice), when in the group, goes before the
    rest, whose order is drawn with it still in the pool: the random stream is the same with or
    without a key.

    Of two drawn, the better goes first. Before all, a replica in this node's region with a free slot
    beats any other (the region rule). Of about the same speed (measured service times within
    SAME_SPEED_FACTOR, or both negligible): by queue per slot, exact integers, so measurement noise
    never decides and equal replicas share. Of clearly different speeds: by expected time in system,
    so a faster replica takes more. Then locality.
    """
    ahead = first if first is not None and any(candidate is first for candidate in group) else None
    if ahead is not None:
        yield ahead
    if len(group) < 2:
        yield from (candidate for candidate in group if candidate is not ahead)
        return
    figures: dict[int, _Figures] = {}  # read when first drawn

    def figures_of(index: int) -> _Figures:
        found = figures.get(index)
        if found is None:
            found = figures[index] = _figures(group[index], in_flight, here, unmeasured_s)
        return found

    def at_least_as_good(a: int, b: int) -> bool:
        return _at_least_as_good(figures_of(a), figures_of(b))

    remaining = list(range(len(group)))
    local = next((index for index in remaining if group[index].is_self), None)
    if local is not None and all(at_least_as_good(local, other) for other in remaining):
        remaining.remove(local)
        if group[local] is not ahead:
            yield group[local]
    while remaining:
        if len(remaining) == 1:
            better = 0
        else:
            one = rng.randrange(len(remaining))
            two = rng.randrange(len(remaining) - 1)  # of the others: two distinct, uniformly
            two += two >= one
            better = one if at_least_as_good(remaining[one], remaining[two]) else two
        chosen = group[remaining.pop(better)]
        if chosen is not ahead:
            yield chosen


def _figures(
    candidate: Candidate, in_flight: Mapping[NodeId, int], here: Locality, unmeasured_s: float
) -> _Figures:
    load = corrected_queue(candidate, in_flight) / max(candidate.slots, 1)
    room, speed = _region_room(candidate, in_flight, here), _service_s(candidate, unmeasured_s)
    return room, load, speed, _locality(candidate, here), _rtt_bucket(candidate)


def _at_least_as_good(a: _Figures, b: _Figures) -> bool:
    """Whether a candidate with figures `a` goes before one with `b` when the two are drawn."""
    (room_a, load_a, own, *place_a), (room_b, load_b, other, *place_b) = a, b
    if max(own, other) <= SAME_SPEED_FACTOR * min(own, other):
        mine, theirs = load_a, load_b
    else:
        mine, theirs = own * (1 + load_a), other * (1 + load_b)
    return (room_a, mine, *place_a) <= (room_b, theirs, *place_b)


def _region_room(candidate: Candidate, in_flight: Mapping[NodeId, int], here: Locality) -> int:
    """0 for a replica in this node's region that can start a request at once, else 1."""
    # This node's own replica is in its region whatever its entry says.
    if not here.region or not (candidate.is_self or candidate.region == here.region):
        return 1
    return 0 if corrected_queue(candidate, in_flight) < max(candidate.slots, 1) else 1


def _service_s(candidate: Candidate, unmeasured_s: float) -> float:
    service = candidate.service_s if candidate.service_s is not None else unmeasured_s
    return max(service, NEGLIGIBLE_TIME_S)


def _locality(candidate: Candidate, here: Locality) -> int:
    if candidate.is_self:
        return 0
    if here.zone and candidate.zone == here.zone and candidate.region == here.region:
        return 1
    if here.region and candidate.region == here.region:
        return 2
    return 3


def _rtt_bucket(candidate: Candidate) -> int:
    if candidate.rtt_s is None:
        return 1_000_000  # unknown sorts after every measured one
    return int(candidate.rtt_s / RTT_BUCKET_S)


__all__ = [
    "DEFAULT_SERVICE_S",
    "SAMPLED_FROM",
    "TIER_ORDER",
    "Candidate",
    "Locality",
    "RouteRequest",
    "Tier",
    "TierName",
    "corrected_queue",
    "expected_time_s",
    "ordered",
    "predicted_wait_s",
    "rank",
    "ranked",
    "retry_after_s",
    "unmeasured_service_s",
]

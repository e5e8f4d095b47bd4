"""The routing policy: tiers, power-of-two-choices, locality ties, and reading the gossiped view."""

from __future__ import annotations

import collections
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.route_candidates import candidates
from meshnode.mesh.routing import (
    NEGLIGIBLE_TIME_S,
    RTT_BUCKET_S,
    SAME_SPEED_FACTOR,
    SAMPLED_FROM,
    Candidate,
    Locality,
    RouteRequest,
    corrected_queue,
    ordered,
    predicted_wait_s,
    rank,
    ranked,
    retry_after_s,
    unmeasured_service_s,
)
from meshnode.mesh.types import Address, NodeId, Status

ME = NodeId("me")
HERE = Locality(ME, region="eu", zone="eu-1")
REQUEST = RouteRequest("sd")


def replica(name: str, **fields: object) -> Candidate:
    base = Candidate(
        node=NodeId(name),
        name=name,
        data_addr=f"{name}:1",
        status=Status.ALIVE,
        is_self=name == ME,
        capacity=100,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def first_choice(pool: list[Candidate], request: RouteRequest = REQUEST, seed: int = 0, **kw: object) -> str:
    in_flight = kw.get("in_flight", {})
    tiers = rank(pool, request, in_flight, random.Random(seed), HERE)  # type: ignore[arg-type]
    return ordered(tiers)[0].name


def test_a_hint_match_comes_first_then_warm_then_the_rest() -> None:
    pool = [
        replica("cold", queue=0),
        replica("warm", models=frozenset({"m1"}), queue=3),
        replica("hinted", hints=frozenset({"lora-x"}), queue=5),
    ]
    tiers = rank(pool, RouteRequest("sd", hint="lora-x", model="m1"), {}, random.Random(1), HERE)
    assert [(tier.name, [c.name for c in tier.candidates]) for tier in tiers] == [
        ("hint", ["hinted"]),
        ("warm", ["warm"]),
        ("any", ["cold"]),
    ]


def test_suspect_replicas_are_tried_last_and_full_ones_just_before() -> None:
    pool = [
        replica("suspect", status=Status.SUSPECT, hints=frozenset({"h"})),
        replica("full", queue=10, capacity=10),
        replica("busy", queue=8, capacity=10),
    ]
    names = [c.name for c in ordered(rank(pool, RouteRequest("sd", hint="h"), {}, random.Random(0), HERE))]
    assert names == ["busy", "full", "suspect"]


def test_in_flight_to_a_peer_counts_toward_its_queue() -> None:
    pool = [replica("a"), replica("b", queue=1)]
    assert first_choice(pool) == "a"
    # We already sent three to "a" since its last gossip: "b" is now the shorter queue.
    assert first_choice(pool, in_flight={NodeId("a"): 3}) == "b"
    # A full replica, counting what we sent, drops to the "full" tier.
    small = [replica("a", capacity=2), replica("b", queue=1)]
    tiers = rank(small, REQUEST, {NodeId("a"): 2}, random.Random(0), HERE)
    assert [t.name for t in tiers] == ["any", "full"]


def test_power_of_two_prefers_the_shorter_expected_time_of_the_two() -> None:
    pool = [replica("slow", service_s=0.2), replica("fast", service_s=0.1, queue=1)]
    # fast: 0.1 * (1 + 1) = 0.2 ties slow's 0.2 at queue 0; one more queued on fast and slow wins.
    assert first_choice([*pool[:1], replace(pool[1], queue=2)]) == "slow"
    assert first_choice([*pool[:1], replace(pool[1], queue=0)]) == "fast"


def test_an_idle_mesh_serves_locally_and_a_busy_local_replica_yields() -> None:
    peers = [replica(f"peer{i}", zone="eu-1", region="eu") for i in range(8)]
    local = replica(ME, is_self=True)
    assert all(first_choice([*peers, local], seed=seed) == ME for seed in range(50))
    busy = replace(local, queue=3)
    assert all(first_choice([*peers, busy], seed=seed) != ME for seed in range(50))


def test_locality_ties_prefer_the_zone_then_the_region_then_low_rtt() -> None:
    far = replica("far", region="us", rtt_s=0.0001)
    region = replica("region", region="eu", zone="eu-2", rtt_s=0.05)
    zone = replica("zone", region="eu", zone="eu-1", rtt_s=0.05)
    for seed in range(20):
        assert first_choice([far, zone], seed=seed) == "zone"
        assert first_choice([region, zone], seed=seed) == "zone"
        assert first_choice([far, region], seed=seed) == "region"
    near, distant = replica("near", rtt_s=0.0005), replica("distant", rtt_s=0.030)
    assert all(first_choice([near, distant], seed=seed) == "near" for seed in range(20))


def test_a_free_slot_in_the_region_goes_before_an_idler_replica_elsewhere_until_the_region_is_busy() -> None:
    home = replica("home", region="eu", zone="eu-2", slots=2, queue=1)
    away = replica("away", region="us", slots=2, queue=0)
    # One of two slots busy at home, none away: the request stays in the region (issue 12).
    assert all(first_choice([home, away], seed=seed) == "home" for seed in range(20))
    # Both home slots busy (one gossiped, one sent from here since): it spills to the idle one away.
    spill = {NodeId("home"): 1}
    assert all(first_choice([home, away], seed=seed, in_flight=spill) == "away" for seed in range(20))
    # A node with no region label compares by load alone, as before.
    unlabelled = Locality(ME)
    for seed in range(20):
        assert ordered(rank([home, away], REQUEST, {}, random.Random(seed), unlabelled))[0].name == "away"


def test_equal_remote_replicas_share_evenly() -> None:
    pool = [replica(name, rtt_s=0.0003 + i * 0.0001) for i, name in enumerate("abcd")]
    rng = random.Random(7)
    counts = collections.Counter(ordered(rank(pool, REQUEST, {}, rng, HERE))[0].name for _ in range(4000))
    assert all(850 <= n <= 1150 for n in counts.values()), counts


def test_power_of_two_never_herds_onto_one_replica() -> None:
    # Ten equal replicas, one slightly less loaded: a global argmin would send everything there.
    pool = [replica(f"r{i}", queue=2) for i in range(9)] + [replica("least", queue=1)]
    rng = random.Random(3)
    counts = collections.Counter(ordered(rank(pool, REQUEST, {}, rng, HERE))[0].name for _ in range(2000))
    assert counts["least"] < 600, counts  # P2C: picked only when drawn, about 19 % of the time
    assert len(counts) == 10


def test_unmeasured_replicas_count_as_the_median_measured_one() -> None:
    pool = [replica("new"), replica("measured", service_s=0.5)]
    counts = collections.Counter(first_choice(pool, seed=seed) for seed in range(200))
    assert 60 <= counts["new"] <= 140, counts  # neither favoured nor shunned


def test_predicted_wait_and_retry_after_come_from_the_queue_and_speed() -> None:
    busy = replica("busy", queue=9, slots=2, service_s=0.5)
    assert predicted_wait_s(busy, {}) == 0.5 * (9 - 2 + 1) / 2
    assert predicted_wait_s(replica("idle", service_s=1.0), {}) == 0.0
    assert predicted_wait_s(replica("unmeasured", queue=50), {}) == 0.0
    assert retry_after_s([busy, replace(busy, queue=20)], {}) == 2.0
    assert retry_after_s([], {}) == 1.0


def meta_member(name: str, status: Status = Status.ALIVE, **meta: object) -> Member:
    """A member whose metadata arrived by gossip: through ``NodeMeta.from_wire``, as peers' does."""
    wire: dict[str, object] = {"name": name, "data": f"{name}:9", **meta}
    return Member(NodeId(name), Address(f"{name}:8471"), 1, status, 1, NodeMeta.from_wire(wire), 0.0)


def test_candidates_are_read_from_gossiped_metadata() -> None:
    entry = {"state": "ready", "queue": 3, "slots": 2, "capacity": 10, "hints": ["h"], "models": ["m"]}
    members = [
        meta_member("a", replicas={"sd": entry}, speeds={"sd": {"service_ms": 150.0, "rps": 6.0}}, zone="z"),
        meta_member("starting", replicas={"sd": {**entry, "state": "starting"}}),
        meta_member("dead", Status.DEAD, replicas={"sd": entry}),
        meta_member("left", Status.LEFT, replicas={"sd": entry}),
        meta_member("suspect", Status.SUSPECT, replicas={"sd": entry}),
        meta_member("other", replicas={"other": entry}),
        meta_member("no-data", replicas={"sd": entry}, data=""),
    ]
    found = {c.name: c for c in candidates(members, "sd", ME)}
    assert set(found) == {"a", "suspect"}
    a = found["a"]
    assert (a.queue, a.slots, a.capacity, a.zone, a.data_addr) == (3, 2, 10, "z", "a:9")
    assert (a.hints, a.models, a.service_s, a.throughput_rps) == (
        frozenset({"h"}),
        frozenset({"m"}),
        0.15,
        6.0,
    )


def test_a_relayed_replica_counts_the_hop_to_its_nearest_relay() -> None:
    entry = {"state": "ready"}
    near, far = meta_member("near"), meta_member("far")
    near.rtt_s, far.rtt_s = 0.010, 0.080
    edge = meta_member("edge", replicas={"sd": entry}, reach="relayed", relays=["near", "far"])
    edge.rtt_s = 0.015
    unmeasured = meta_member("unmeasured", replicas={"sd": entry}, reach="relayed", relays=["near"])
    direct = meta_member("direct", replicas={"sd": entry}, reach="direct")
    direct.rtt_s = 0.015
    found = {c.name: c for c in candidates([near, far, edge, unmeasured, direct], "sd", ME)}
    assert found["edge"].rtt_s == pytest.approx(0.025)  # its own, plus the nearest relay's
    assert found["unmeasured"].rtt_s == pytest.approx(0.010)  # at least the hop
    assert found["direct"].rtt_s == pytest.approx(0.015)


def test_malformed_gossiped_entries_are_ignored_not_fatal() -> None:
    members = [
        meta_member("a", replicas={"sd": "ready"}),
        meta_member("b", replicas={"sd": {"state": "ready", "queue": "many", "slots": -1, "hints": "h"}}),
        meta_member("c", replicas={"sd": {"state": "ready"}}, speeds={"sd": {"service_ms": float("nan")}}),
    ]
    found = {c.name: c for c in candidates(members, "sd", ME)}
    assert set(found) == {"b", "c"}
    assert (found["b"].queue, found["b"].slots, found["b"].hints) == (0, 1, frozenset())
    assert found["c"].service_s is None


statuses = st.sampled_from([Status.ALIVE, Status.SUSPECT])
pools = st.lists(
    st.builds(
        lambda i, status, queue, capacity, service, hinted: replica(
            f"r{i}",
            status=status,
            queue=queue,
            capacity=capacity,
            service_s=service,
            hints=frozenset({"h"}) if hinted else frozenset(),
        ),
        st.integers(0, 10**6),
        statuses,
        st.integers(0, 50),
        st.integers(1, 50),
        st.one_of(st.none(), st.floats(0.001, 10)),
        st.booleans(),
    ),
    max_size=12,
    unique_by=lambda c: c.name,
)


@given(
    pools,
    st.integers(0, 2**32),
    st.dictionaries(st.sampled_from([f"r{i}" for i in range(5)]), st.integers(0, 9)),
)
def test_every_candidate_appears_exactly_once_and_suspects_last(
    pool: list[Candidate], seed: int, in_flight: dict[str, int]
) -> None:
    order = ordered(rank(pool, RouteRequest("sd", hint="h"), in_flight, random.Random(seed), HERE))  # type: ignore[arg-type]
    assert sorted(c.name for c in order) == sorted(c.name for c in pool)
    statuses_in_order = [c.status for c in order]
    assert statuses_in_order == sorted(statuses_in_order, key=lambda s: s == Status.SUSPECT)


lone = st.builds(
    lambda name, status, queue, slots, capacity, service, hinted, warm, region: replica(
        name,
        status=status,
        queue=queue,
        slots=slots,
        capacity=capacity,
        service_s=service,
        hints=frozenset({"h"}) if hinted else frozenset(),
        models=frozenset({"m"}) if warm else frozenset(),
        region=region,
    ),
    st.sampled_from([ME, "peer"]),
    statuses,
    st.integers(0, 50),
    st.integers(1, 8),
    st.integers(1, 50),
    st.one_of(st.none(), st.floats(0.001, 10)),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["", "eu", "us"]),
)


@given(
    lone,
    st.integers(0, 2**32),
    st.sampled_from([None, "h", "x"]),
    st.sampled_from([None, "m", "x"]),
    st.sampled_from([None, "conversation-1", "conversation-2"]),
    st.dictionaries(st.sampled_from(["peer", "other"]), st.integers(0, 9)),
)
def test_one_candidate_ranks_as_itself_and_draws_nothing(
    candidate: Candidate,
    seed: int,
    hint: str | None,
    model: str | None,
    affinity: str | None,
    in_flight: dict[str, int],
) -> None:
    """The forwarder skips the policy for a lone replica (``dataplane/forward.py``): this is why it may."""
    rng = random.Random(seed)
    before = rng.getstate()
    request = RouteRequest("sd", hint=hint, model=model, affinity=affinity)
    assert ordered(rank([candidate], request, in_flight, rng, HERE)) == [candidate]  # type: ignore[arg-type]
    assert rng.getstate() == before


def reference_order(group: list[Candidate], in_flight: dict[str, int], rng: random.Random) -> list[str]:
    """Power-of-two-choices as the module docstring states it, comparing two candidates afresh at
    each draw: what ``rank`` computes with each candidate's figures read once."""

    def service(candidate: Candidate) -> float:
        measured = candidate.service_s if candidate.service_s is not None else unmeasured_service_s(group)
        return max(measured, NEGLIGIBLE_TIME_S)

    def key(candidate: Candidate, rival: Candidate) -> tuple[int, float, int, int]:
        queue = corrected_queue(candidate, in_flight)  # type: ignore[arg-type]
        nearby = candidate.is_self or candidate.region == HERE.region
        room = 0 if nearby and queue < max(candidate.slots, 1) else 1
        own, other = service(candidate), service(rival)
        load = queue / max(candidate.slots, 1)
        compared = load if max(own, other) <= SAME_SPEED_FACTOR * min(own, other) else own * (1 + load)
        if candidate.is_self:
            place = 0
        elif candidate.region == HERE.region:
            place = 1 if candidate.zone == HERE.zone else 2
        else:
            place = 3
        rtt = 1_000_000 if candidate.rtt_s is None else int(candidate.rtt_s / RTT_BUCKET_S)
        return room, compared, place, rtt

    def good(a: Candidate, b: Candidate) -> bool:
        return key(a, b) <= key(b, a)

    remaining, order = list(group), []
    local = next((candidate for candidate in remaining if candidate.is_self), None)
    if local is not None and all(good(local, other) for other in remaining):
        remaining.remove(local)
        order.append(local)
    while len(remaining) > 1:
        first = rng.randrange(len(remaining))
        second = rng.randrange(len(remaining) - 1)
        second += second >= first
        order.append(remaining.pop(first if good(remaining[first], remaining[second]) else second))
    return [candidate.name for candidate in order + remaining]


one_tier = st.lists(
    st.builds(
        lambda name, queue, slots, service, region, zone, rtt: replica(
            name,
            queue=queue,
            slots=slots,
            capacity=1000,
            service_s=service,
            region=region,
            zone=zone,
            rtt_s=rtt,
        ),
        st.sampled_from([ME, *(f"r{i}" for i in range(12))]),
        st.integers(0, 3),  # small queues and few speeds: ties, so every rule gets to decide
        st.integers(1, 2),
        st.one_of(st.none(), st.sampled_from([0.001, 0.01, 0.012, 0.1]), st.floats(0.0005, 2)),
        st.sampled_from(["", "eu", "us"]),
        st.sampled_from(["", "eu-1", "eu-2"]),
        st.one_of(st.none(), st.floats(0, 0.02)),
    ),
    max_size=12,
    unique_by=lambda c: c.name,
)


@settings(max_examples=300)  # ties between far and near candidates are rare draws
@given(
    one_tier,
    st.integers(0, 2**32),
    st.dictionaries(st.sampled_from([f"r{i}" for i in range(12)]), st.integers(0, 9)),
)
def test_the_order_within_a_tier_is_power_of_two_choices_by_the_documented_comparison(
    pool: list[Candidate], seed: int, in_flight: dict[str, int]
) -> None:
    (tier,) = rank(pool, REQUEST, in_flight, random.Random(seed), HERE) or [None]  # type: ignore[arg-type]
    got = [] if tier is None else [candidate.name for candidate in tier.candidates]
    assert got == reference_order(pool, in_flight, random.Random(seed))


@given(
    pools,
    st.integers(0, 2**32),
    st.sampled_from([None, "h"]),
    st.sampled_from([None, "conversation-1"]),
    st.dictionaries(st.sampled_from([f"r{i}" for i in range(5)]), st.integers(0, 9)),
)
def test_ranked_reads_rank_s_order_and_draws_only_as_far_as_it_is_read(
    pool: list[Candidate], seed: int, hint: str | None, affinity: str | None, in_flight: dict[str, int]
) -> None:
    request = RouteRequest("sd", hint=hint, affinity=affinity)
    tiers = rank(pool, request, in_flight, random.Random(seed), HERE)  # type: ignore[arg-type]
    whole = ordered(tiers)
    got = list(ranked(pool, request, in_flight, random.Random(seed), HERE))  # type: ignore[arg-type]
    if len(pool) < SAMPLED_FROM or hint is not None or affinity is not None:
        assert got == whole
    else:  # the first drawn from a sample: the same tiers in the same order, each replica once
        tier_of = {candidate.name: tier.name for tier in tiers for candidate in tier.candidates}
        assert sorted(c.name for c in got) == sorted(c.name for c in whole)
        assert [tier_of[c.name] for c in got] == [tier_of[c.name] for c in whole]

    rng, alike = CountingRandom(seed), random.Random(seed)
    first = next(ranked(pool, REQUEST, {}, rng, HERE), None)
    assert (first is None) == (not pool)
    if len(pool) >= SAMPLED_FROM:
        assert rng.draws <= 8 + 2  # a sample of at most 8, then (too sparse) the first pair of a tier
        return
    alive = [candidate for candidate in pool if candidate.status == Status.ALIVE]
    tier = (
        [candidate for candidate in alive if candidate.queue < candidate.capacity]
        or [candidate for candidate in alive if candidate.queue >= candidate.capacity]
        or pool
    )
    if len(tier) > 1 and not any(candidate.is_self for candidate in pool):
        alike.randrange(len(tier))  # the first pair of the first tier, and nothing more
        alike.randrange(len(tier) - 1)
    assert rng.getstate() == alike.getstate()


def large_pool(busy: int, idle: int, **fields: object) -> list[Candidate]:
    """`busy` replicas with 8 queued on one slot, then `idle` with none: enough to be sampled."""
    pool = [replica(f"b{i}", queue=8, **fields) for i in range(busy)]
    return pool + [replica(f"i{i}", queue=0, **fields) for i in range(idle)]


@pytest.mark.parametrize(("busy", "idle"), [(2, 1), (5, 5), (20, 20)])
def test_a_pool_draws_its_first_replica_from_a_sample_as_rank_would_draw_it(busy: int, idle: int) -> None:
    pool = large_pool(busy, idle)
    assert len(pool) >= SAMPLED_FROM
    rng_sampled, rng_whole = random.Random(7), random.Random(7)
    requests = 4000
    sampled = [next(ranked(pool, REQUEST, {}, rng_sampled, HERE)).name for _ in range(requests)]
    whole = [ordered(rank(pool, REQUEST, {}, rng_whole, HERE))[0].name for _ in range(requests)]
    # Power-of-two-choices: a busy replica goes first only when both drawn are busy.
    size = busy + idle
    expected = busy / size * (busy - 1) / (size - 1)
    for firsts in (sampled, whole):
        busy_share = sum(name.startswith("b") for name in firsts) / requests
        assert abs(busy_share - expected) < 0.03, busy_share
        assert len(set(firsts)) == size  # every replica is chosen first now and then: no herding


@given(st.integers(0, 2**32), st.integers(0, 30), st.integers(2, 40))
def test_a_large_pool_s_order_keeps_the_tiers_and_reading_the_first_draws_a_bounded_sample(
    seed: int, full: int, free: int
) -> None:
    pool = [replica(f"f{i}", queue=100) for i in range(full)] + large_pool(0, free)
    pool += [replica(f"s{i}", status=Status.SUSPECT) for i in range(SAMPLED_FROM)]
    order = list(ranked(pool, REQUEST, {}, random.Random(seed), HERE))
    assert sorted(c.name for c in order) == sorted(c.name for c in pool)  # each once
    assert [c.name[0] for c in order] == ["i"] * free + ["f"] * full + ["s"] * SAMPLED_FROM

    counting = CountingRandom(seed)
    next(ranked(pool, REQUEST, {}, counting, HERE))
    # A sample of at most 8, then (a tier too sparse for it) the first pair of the tier's order.
    assert counting.draws <= 8 + 2


class CountingRandom(random.Random):
    """A seeded ``Random`` that counts the draws made with ``randrange``."""

    draws = 0

    def randrange(self, *args: int) -> int:  # type: ignore[override]
        self.draws += 1
        return super().randrange(*args)


@pytest.mark.parametrize(
    ("request_", "mine"),
    [
        (RouteRequest("sd", hint="h"), False),
        (RouteRequest("sd", model="m"), False),
        (RouteRequest("sd", affinity="conversation-1"), False),
        (REQUEST, True),
    ],
)
def test_a_large_pool_with_a_hint_a_model_a_key_or_this_node_s_replica_is_ordered_whole(
    request_: RouteRequest, mine: bool
) -> None:
    pool = [*large_pool(20, 19), replica(ME if mine else "hinted", hints=frozenset({"h"}), queue=3)]
    for seed in range(20):
        whole = ordered(rank(pool, request_, {}, random.Random(seed), HERE))
        assert list(ranked(pool, request_, {}, random.Random(seed), HERE)) == whole

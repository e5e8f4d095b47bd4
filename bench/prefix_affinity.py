"""Prefix affinity benchmark: chat conversations over N replicas, routed with and without their key.

Usage:  python bench/prefix_affinity.py [--seed 1] [--seeds 3] [--turns 40000] [--quick]
        (``python bench/routing.py`` runs it too, as its part C)

A seeded discrete-event simulation with no sockets and no sleeps, driving the production policy
(``meshnode.mesh.routing.rank``) and the production key (``meshnode.mesh.affinity.conversation_key``).
Conversations arrive as a Poisson stream; each has 2 to 10 turns, and its next turn arrives a think
time (exponential, mean ``think_s``) after the previous answer finished, so turns of one conversation
never overlap, as with a person at a chat window. Every turn enters at one of ``routers`` nodes at
random (entry nodes host no replica), which ranks the replicas and sends the turn to the first with
room below its capacity (as the forwarder does after a refusal); routers see every queue exactly,
which isolates the policy from gossip delay (``bench/routing.py`` measures that).

Each replica runs ``slots`` requests at once, first in first out, so a turn's finish time is known when
it is admitted. Its KV cache holds the prompts of its ``cache_conversations`` most recent conversations
(least recently used evicted). A turn costs a decode time (exponential, mean ``decode_s``) plus the
prefill of the prompt it must read: only the new message (``prefill_s``) when the replica holds the
conversation's earlier turns, the whole history (``prefill_s`` times the turn number) when not.

Figures per row: the share of turns (after each conversation's first) that land on the replica that
served its previous turn; KV cache hits; load imbalance as the busiest replica's time-averaged queue
over the mean (1.0 is perfect); latency p50 and p99. The offered load is given as a fraction of the
replicas' capacity if no turn ever hit a cache (a mesh sized without counting on affinity), so
p2c alone stays stable and cache hits show up as lower latency. Each figure is the median over seeds; both policies
of one seed see the same conversations (arrivals, lengths, openings).
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
from collections import OrderedDict
from dataclasses import dataclass, replace

from meshnode.mesh.affinity import conversation_key
from meshnode.mesh.routing import Candidate, Locality, RouteRequest, ordered, rank
from meshnode.mesh.types import NodeId, Status

POLICIES = ("p2c", "affinity")
REPLICA_COUNTS = (4, 8)
LOADS = (0.5, 0.8, 0.95)
ROUTERS = 3
QUICK_TURNS = 8_000


@dataclass(frozen=True)
class Setup:
    """One simulated mesh and its traffic (times in seconds)."""

    replicas: int = 4
    load: float = 0.5
    turns: int = 40_000
    slots: int = 4
    queue_size: int = 64  # a replica's queue beyond its slots, as node/serving/replica.py admits
    decode_s: float = 1.0
    prefill_s: float = 0.3
    think_s: float = 10.0
    cache_conversations: int = 32
    min_turns: int = 2
    max_turns: int = 10


@dataclass(frozen=True)
class Figures:
    """What one run measured."""

    same_replica: float
    cache_hits: float
    imbalance: float
    p50_s: float
    p99_s: float


class _Replica:
    def __init__(self, index: int, setup: Setup) -> None:
        self.candidate = Candidate(
            node=NodeId(f"replica-{index}"),
            name=f"replica-{index}",
            data_addr=f"replica-{index}:1",
            status=Status.ALIVE,
            is_self=False,
            slots=setup.slots,
            capacity=setup.slots + setup.queue_size,
            service_s=setup.decode_s + setup.prefill_s,
        )
        self.slot_free = [0.0] * setup.slots  # a heap: when each slot finishes its last request
        self.finishes: list[float] = []  # a heap: finish times of the requests in the system
        self.cache: OrderedDict[int, None] = OrderedDict()  # conversation ids, least recent first
        self.time_in_system = 0.0

    def queue(self, now: float) -> int:
        while self.finishes and self.finishes[0] <= now:
            heapq.heappop(self.finishes)
        return len(self.finishes)

    def admit(self, now: float, service_s: float) -> float:
        start = max(now, heapq.heappop(self.slot_free))
        finish = start + service_s
        heapq.heappush(self.slot_free, finish)
        heapq.heappush(self.finishes, finish)
        self.time_in_system += finish - now
        return finish


def mean_turns(setup: Setup) -> float:
    """Turns per conversation, on average (lengths are uniform over min_turns..max_turns)."""
    return (setup.min_turns + setup.max_turns) / 2


def no_cache_service_s(setup: Setup) -> float:
    """A turn's mean service time when no cache ever hits: decode, and prefill of its whole history."""
    lengths = range(setup.min_turns, setup.max_turns + 1)
    # Turn k reads k turns; over all turns, k averages sum(L(L+1)/2) / sum(L).
    mean_read = sum(n * (n + 1) / 2 for n in lengths) / sum(lengths)
    return setup.decode_s + setup.prefill_s * mean_read


def simulate(policy: str, setup: Setup, seed: int) -> Figures:
    """Run `setup`'s conversations under `policy` ("p2c" or "affinity"); measure what they got."""
    traffic = random.Random(seed)  # conversations, turns, think and decode times: shared by policies
    routing = [random.Random(seed * 1000 + r) for r in range(ROUTERS)]
    replicas = [_Replica(i, setup) for i in range(setup.replicas)]
    rate = setup.load * setup.replicas * setup.slots / no_cache_service_s(setup) / mean_turns(setup)
    # (arrival time, conversation id, turn number); conversations are pre-drawn so every policy sees them.
    events: list[tuple[float, int, int]] = []
    lengths: list[int] = []
    keys: list[str | None] = []
    now, planned = 0.0, 0
    while planned < setup.turns:
        now += traffic.expovariate(rate)
        length = traffic.randint(setup.min_turns, setup.max_turns)
        conversation = len(lengths)
        lengths.append(length)
        opening = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"question {seed}-{conversation}"},
        ]
        keys.append(conversation_key(None, opening))
        heapq.heappush(events, (now, conversation, 1))
        planned += length
    draws = random.Random(seed + 1)
    previous: dict[int, int] = {}
    same = hits = later_turns = 0
    latencies: list[float] = []
    while events:
        now, conversation, turn = heapq.heappop(events)
        router = draws.randrange(ROUTERS)
        pool = [replace(r.candidate, queue=r.queue(now)) for r in replicas]
        key = keys[conversation] if policy == "affinity" else None
        request = RouteRequest("chat", affinity=key)
        tiers = rank(pool, request, {}, routing[router], Locality(NodeId(f"router-{router}")))
        chosen = next((int(c.node.rsplit("-", 1)[1]) for c in ordered(tiers) if c.queue < c.capacity), None)
        decode = draws.expovariate(1 / setup.decode_s)
        if chosen is None:
            continue  # refused by every replica: never at these loads, and not counted if it were
        replica = replicas[chosen]
        cached = conversation in replica.cache
        if turn > 1:
            later_turns += 1
            same += previous[conversation] == chosen
            hits += cached
        service = decode + setup.prefill_s * (1 if cached else turn)
        finish = replica.admit(now, service)
        replica.cache[conversation] = None
        replica.cache.move_to_end(conversation)
        if len(replica.cache) > setup.cache_conversations:
            replica.cache.popitem(last=False)
        latencies.append(finish - now)
        previous[conversation] = chosen
        if turn < lengths[conversation]:
            heapq.heappush(events, (finish + draws.expovariate(1 / setup.think_s), conversation, turn + 1))
    queues = [r.time_in_system for r in replicas]
    latencies.sort()
    return Figures(
        same_replica=same / max(later_turns, 1),
        cache_hits=hits / max(later_turns, 1),
        imbalance=max(queues) / statistics.mean(queues),
        p50_s=latencies[len(latencies) // 2],
        p99_s=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    )


def medians(policy: str, setup: Setup, seeds: tuple[int, ...]) -> Figures:
    """The median of each figure over `seeds`."""
    runs = [simulate(policy, setup, seed) for seed in seeds]
    fields = Figures.__dataclass_fields__
    return Figures(**{name: statistics.median(getattr(run, name) for run in runs) for name in fields})


def table(seeds: tuple[int, ...], turns: int) -> None:
    """Print the comparison: each mesh size and load, p2c alone against p2c with prefix affinity."""
    setup = Setup(turns=turns)
    print(f"## C. Prefix affinity ({len(seeds)} seeds x {turns} turns, {ROUTERS} entry nodes)\n")
    print(
        f"{setup.slots} slots per replica, KV cache of {setup.cache_conversations} conversations, "
        f"{setup.min_turns}-{setup.max_turns} turns, think {setup.think_s:g} s, decode {setup.decode_s:g} s, "
        f"prefill {setup.prefill_s:g} s per turn read\n"
    )
    print(
        "| replicas | load | policy | same replica as previous turn | KV cache hits | queue max/mean | p50 s | p99 s |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for count in REPLICA_COUNTS:
        for load in LOADS:
            row = replace(setup, replicas=count, load=load)
            figures = {policy: medians(policy, row, seeds) for policy in POLICIES}
            for policy, f in figures.items():
                print(
                    f"| {count} | {load:.0%} | {policy} | {f.same_replica:.1%} | {f.cache_hits:.1%} | "
                    f"{f.imbalance:.2f} | {f.p50_s:.2f} | {f.p99_s:.2f} |"
                )
            base, kept = figures["p2c"], figures["affinity"]
            print(
                f"| {count} | {load:.0%} | **affinity / p2c** | {kept.same_replica / base.same_replica:.1f}x | "
                f"{kept.cache_hits / base.cache_hits:.1f}x | {kept.imbalance / base.imbalance:.2f}x | "
                f"{kept.p50_s / base.p50_s:.2f}x | {kept.p99_s / base.p99_s:.2f}x |"
            )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="first seed; runs use seed .. seed + seeds - 1")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per figure; medians are quoted")
    parser.add_argument("--turns", type=int, default=Setup.turns, help="turns per run")
    parser.add_argument("--quick", action="store_true", help=f"2 seeds x {QUICK_TURNS} turns")
    args = parser.parse_args()
    seeds = tuple(range(args.seed, args.seed + (2 if args.quick else args.seeds)))
    table(seeds, QUICK_TURNS if args.quick else args.turns)


if __name__ == "__main__":
    main()

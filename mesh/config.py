"""Every membership knob in one place, with what it does, what it costs and why its default.

The defaults follow memberlist's ``DefaultLANConfig`` (hashicorp/memberlist config.go), which
``lan()`` returns unchanged. ``local()`` is the fast profile for agents on one machine or a quiet LAN
(docs/membership.md): probe every 200 ms, so a crash is seen everywhere in about 1.4-2 s at N <= 20.

The formulas memberlist uses (all with log10) live here too, so the core, the simulator and the
benchmark predict with the same arithmetic:

    suspicion min = suspicion_mult * max(1, log10 N) * probe_interval
    suspicion max = suspicion_max_timeout_mult * suspicion min
    retransmits   = retransmit_mult * ceil(log10(N + 1))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Literal

ProfileName = Literal["lan", "local"]
PROFILES: tuple[ProfileName, ...] = ("lan", "local")


@dataclass(frozen=True)
class MembershipConfig:
    """SWIM + Lifeguard settings. Units are in the names; every field is documented."""

    # How often this node probes one peer. Lower detects failures sooner at the cost of
    # proportionally more packets (one ping and one ack per interval per node).
    probe_interval_s: float = 1.0
    # How long to wait for a direct ack before asking others to probe indirectly. Should be
    # above the 99th percentile round-trip time, or healthy nodes get indirect probes.
    probe_timeout_s: float = 0.5
    # Peers asked to probe a target indirectly when the direct probe times out (SWIM's K).
    # More means fewer false suspicions on a lossy network and more packets per failure.
    indirect_checks: int = 3
    # Suspicion timeout multiplier (memberlist SuspicionMult). Scales with log10 N.
    suspicion_mult: int = 4
    # Upper bound of the Lifeguard dynamic suspicion timeout, as a multiple of the minimum.
    # A suspicion with no independent confirmations waits this long before declaring death.
    suspicion_max_timeout_mult: int = 6
    # Retransmit multiplier: each broadcast is piggybacked this many times times ceil(log10(N+1)).
    retransmit_mult: int = 4
    # How often queued broadcasts are gossiped to `gossip_nodes` random peers. Only runs while
    # something is queued, so an idle mesh pays nothing for it.
    gossip_interval_s: float = 0.2
    # Fanout of each gossip round.
    gossip_nodes: int = 3
    # Keep gossiping to a node this long after it was declared dead, so a node wrongly declared
    # dead hears about it and refutes.
    gossip_to_the_dead_s: float = 30.0
    # Full state exchange (anti-entropy) with one random live peer. Repairs anything gossip lost;
    # costs O(N) bytes per exchange. Scaled up above 32 nodes like memberlist's pushPullScale.
    push_pull_interval_s: float = 30.0
    # Lifeguard local health: a struggling node multiplies its probe interval and timeout by
    # up to this factor instead of falsely accusing healthy peers.
    awareness_max_multiplier: int = 8
    # How often to try a full state exchange with a random dead (not left) member, so a
    # partition heals once the network does (serf's reconnect).
    reconnect_interval_s: float = 10.0
    # Dead and left members stay in the view (and reconnect attempts continue) this long.
    dead_retention_s: float = 3600.0
    # Join retries against seeds while the node is alone: the first wait, doubled per attempt.
    seed_retry_initial_s: float = 1.0
    # The longest wait between join attempts; the node keeps running alone meanwhile.
    seed_retry_max_s: float = 30.0
    # Reachability (docs/edge.md). How long a node waits for peers it asked to dial it
    # (``DialMe``) before it concludes that nobody can, and takes relays. Costs: a node behind NAT
    # is reached only through its own connections until then (it still joins and is probed).
    dial_check_timeout_s: float = 3.0
    # How many peers each check asks; one answer is enough. More survives a peer that is itself
    # unable to dial out; each costs one packet and one connection attempt.
    dial_check_peers: int = 3
    # How often a node checks again (a port forwarded later, an address that changed). A node that
    # was dialable turns relayed only after two checks in a row went unanswered.
    dial_recheck_s: float = 120.0
    # Relays a node that cannot be dialed keeps: peers send to it through every one of them, so
    # one relay's death never makes it look dead. Each costs one more copy of every packet to it.
    relay_count: int = 2
    # How often a relayed node says hello over each relay's connection: keeps the NAT's mapping
    # alive (home routers forget idle TCP mappings after minutes; some carrier NATs sooner) and
    # tells the relay which connection is the node's after a reconnect.
    relay_keepalive_s: float = 10.0
    # A connection counts as the way to the node that sent on it this long after its last packet.
    # Longer than two keepalives, so a relay never loses the way to its node between them.
    route_idle_s: float = 30.0
    # Byte budget for one gossip packet (message plus piggybacked broadcasts). Keeps probe
    # packets small so they are never delayed behind big state.
    packet_budget_bytes: int = 1400
    # Hard limit for one encoded packet, push-pull included; anything larger is dropped.
    max_packet_bytes: int = 4 * 1024 * 1024
    # A node's load and replica queues are gossiped only on a meaningful change and at most this
    # often, which bounds the gossip bytes a jittery node costs (each update is re-sent
    # ~4 log10 N times by everyone). The autoscaler's view of demand is this stale at worst.
    meta_min_interval_s: float = 5.0
    # Limit on one node's encoded metadata (device, load, models, hints, speeds).
    max_meta_bytes: int = 16 * 1024
    # Limit on members listed in one push-pull, so a hostile peer cannot make us allocate
    # without bound.
    max_members: int = 20_000
    # A deployment record stamped more than this ahead of this node's wall clock is refused (not
    # merged, stored or passed on), as CockroachDB bounds clock offset: one record stamped in the
    # far future would otherwise win over every later write. The mesh's clocks must agree within
    # it. Five minutes, Kerberos' tolerance for machines that share no time server, lets laptops
    # without time sync (seconds of drift a day) declare; its cost: a node whose clock runs that
    # far ahead wins over writes made meanwhile.
    max_clock_offset_s: float = 300.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int | float) and not (0 < value < math.inf):
                raise ValueError(f"{field.name} must be positive and finite, got {value!r}")
        if self.probe_timeout_s > self.probe_interval_s:
            raise ValueError("probe_timeout_s must not exceed probe_interval_s")
        if self.route_idle_s < 2 * self.relay_keepalive_s:
            raise ValueError("route_idle_s must be at least twice relay_keepalive_s")

    @classmethod
    def lan(cls) -> MembershipConfig:
        """memberlist's DefaultLANConfig timings: about 8 s to see a crash everywhere."""
        return cls()

    @classmethod
    def local(cls) -> MembershipConfig:
        """Fast timings for one machine or a quiet LAN (docs/membership.md, "Two profiles")."""
        return replace(
            cls(),
            probe_interval_s=0.2,
            probe_timeout_s=0.1,
            suspicion_mult=4,
            suspicion_max_timeout_mult=6,
            gossip_interval_s=0.05,
            gossip_nodes=3,
            gossip_to_the_dead_s=10.0,
            push_pull_interval_s=10.0,
            reconnect_interval_s=2.0,
            seed_retry_initial_s=0.5,
            seed_retry_max_s=5.0,
            meta_min_interval_s=1.0,
            dial_check_timeout_s=1.0,
            dial_recheck_s=30.0,
            relay_keepalive_s=2.0,
            route_idle_s=10.0,
        )

    @classmethod
    def profile(cls, name: str) -> MembershipConfig:
        """The named profile: ``lan`` or ``local``."""
        if name == "lan":
            return cls.lan()
        if name == "local":
            return cls.local()
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")

    # -- memberlist's formulas ------------------------------------------------------------

    def suspicion_min_s(self, cluster_size: int) -> float:
        """Lifeguard's lower bound on the suspicion timeout for a mesh of this size."""
        return self.suspicion_mult * max(1.0, math.log10(max(cluster_size, 1))) * self.probe_interval_s

    def suspicion_max_s(self, cluster_size: int) -> float:
        """Timeout of a suspicion that gets no independent confirmation."""
        return self.suspicion_max_timeout_mult * self.suspicion_min_s(cluster_size)

    def retransmit_limit(self, cluster_size: int) -> int:
        """How many times each broadcast is piggybacked before it is dropped."""
        return self.retransmit_mult * math.ceil(math.log10(cluster_size + 1))

    def push_pull_scaled_s(self, cluster_size: int) -> float:
        """memberlist's pushPullScale: slow anti-entropy down above 32 nodes."""
        threshold = 32
        if cluster_size <= threshold:
            return self.push_pull_interval_s
        multiplier = math.ceil(math.log2(cluster_size) - math.log2(threshold)) + 1
        return self.push_pull_interval_s * multiplier

    def dissemination_s(self, cluster_size: int, fraction: float | None = None) -> float:
        """Expected time for a broadcast to reach `fraction` of the mesh (default all but one)."""
        n = max(cluster_size, 2)
        p = fraction if fraction is not None else (n - 1) / n
        rounds = math.log((n + 1) * p / (1 - p)) / (self.gossip_nodes / 2)
        return self.gossip_interval_s * max(rounds, 1.0)

    def expected_detection_s(self, cluster_size: int) -> float:
        """Predicted time from a crash until every node sees it dead (docs/membership.md explains it)."""
        first_detection = 1.58 * self.probe_interval_s
        probe_round = self.probe_interval_s
        # Lifeguard shrinks the timeout to its minimum once independent confirmations arrive,
        # which they do at every size above a handful of nodes.
        return (
            first_detection
            + probe_round
            + self.suspicion_min_s(cluster_size)
            + self.dissemination_s(cluster_size)
        )

    def heal_bound_s(self, cluster_size: int) -> float:
        """Longest expected time from a repaired partition until one membership again.

        Every node tries a full-state exchange with a random dead member each reconnect interval;
        in a partition every dead member is across it, so the first try after the repair merges two
        nodes' views, and the refutations it provokes spread by gossip.
        """
        return self.reconnect_interval_s + self.dissemination_s(cluster_size)

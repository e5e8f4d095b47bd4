"""The membership core's rules, one message or tick at a time (no sockets, no clocks)."""

from __future__ import annotations

import itertools
import random

from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.effects import IncarnationChanged, MemberChanged, Send
from meshnode.mesh.membership import Membership
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.mesh.wire import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    MemberState,
    Message,
    Nack,
    Packet,
    Ping,
    PushPull,
    Suspect,
)

CONFIG = MembershipConfig.local()
# How long this node must have suspected a peer itself before it takes another node's verdict on it.
VOUCHING_S = CONFIG.suspicion_mult * CONFIG.probe_interval_s / 2
# The wall clock (ms since the epoch) packets arrive at; record stamps in these tests are below it.
WALL_MS = 1_700_000_000_000
ME = NodeId("me")
ME_ADDR = Address("10.0.0.1:7946")


def peer(i: int) -> tuple[NodeId, Address]:
    return NodeId(f"peer{i}"), Address(f"10.0.0.{i + 10}:7946")


def meta(name: str, **fields: object) -> NodeMeta:
    return NodeMeta(name=name, **fields)  # type: ignore[arg-type]


def core_with_peers(count: int, *, now: float = 0.0, seed: int = 1, me: NodeId = ME) -> Membership:
    addr = ME_ADDR if me == ME else Address("10.0.0.2:7946")
    core = Membership(CONFIG, me, addr, meta(me), rng=random.Random(seed), now=now)
    states = tuple(MemberState(*peer(i), 0, Status.ALIVE, 0, meta(f"peer{i}")) for i in range(count))
    sender, sender_addr = peer(0)
    core.handle(Packet(sender, sender_addr, (PushPull(False, False, states),)), now, WALL_MS)
    core.clear_broadcasts()
    return core


def packet_from(i: int, *messages: Message) -> Packet:
    node, addr = peer(i)
    return Packet(node, addr, messages)


def sends(effects: list) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def messages_to(effects: list, addr: Address) -> list[Message]:
    return [m for s in sends(effects) if s.addr == addr for m in s.packet.messages]


def run_until(core: Membership, until: float, start: float = 0.0) -> list:
    """Tick at every deadline up to `until`, collecting effects (no network: nothing answers)."""
    effects: list = []
    now = start
    while True:
        deadline = core.next_deadline()
        if deadline > until:
            return effects
        now = max(now, deadline)
        effects.extend(core.tick(now))


def test_ping_for_me_is_acked_with_its_sequence_number() -> None:
    core = core_with_peers(2)
    effects = core.handle(packet_from(1, Ping(42, ME)), 1.0, WALL_MS)
    assert Ack(42) in messages_to(effects, peer(1)[1])


def test_ping_for_another_node_is_ignored() -> None:
    # After an address is reused by a new node, pings for the old one must not be answered.
    core = core_with_peers(2)
    assert core.handle(packet_from(1, Ping(42, NodeId("someone-else"))), 1.0, WALL_MS) == []


def test_probe_without_ack_goes_indirect_then_suspects() -> None:
    core = core_with_peers(5)
    effects = run_until(core, CONFIG.probe_interval_s * 0.99 + CONFIG.probe_timeout_s * 1.01)
    pings = [(s.addr, m) for s in sends(effects) for m in s.packet.messages if isinstance(m, Ping)]
    indirect = [m for s in sends(effects) for m in s.packet.messages if isinstance(m, IndirectPing)]
    assert pings, "a probe was sent"
    target = pings[0][1].target
    assert len(indirect) == CONFIG.indirect_checks
    assert all(m.target == target for m in indirect)
    more = run_until(core, 2 * CONFIG.probe_interval_s)
    changes = [e for e in effects + more if isinstance(e, MemberChanged)]
    assert MemberChanged(target, Status.ALIVE, Status.SUSPECT) in changes
    # Lifeguard: no nacks came back, so this node doubts its own health too.
    assert core.awareness.score > 0


def test_ack_ends_the_probe_and_improves_local_health() -> None:
    core = core_with_peers(3)
    core.awareness.apply(2)
    effects = run_until(core, CONFIG.probe_interval_s)
    ping = next(m for s in sends(effects) for m in s.packet.messages if isinstance(m, Ping))
    core.handle(packet_from(1, Ack(ping.seq)), CONFIG.probe_interval_s, WALL_MS)
    later = run_until(core, 3 * CONFIG.probe_interval_s, start=CONFIG.probe_interval_s)
    assert core.awareness.score == 1
    assert not any(isinstance(e, MemberChanged) and e.current == Status.SUSPECT for e in later[:1])


def test_relay_forwards_the_ack_or_sends_a_nack() -> None:
    core = core_with_peers(3)
    _, origin_addr = peer(1)
    target, target_addr = peer(2)
    effects = core.handle(packet_from(1, IndirectPing(7, target, target_addr, True)), 0.0, WALL_MS)
    relay_ping = next(m for m in messages_to(effects, target_addr) if isinstance(m, Ping))
    forwarded = core.handle(packet_from(2, Ack(relay_ping.seq)), 0.05, WALL_MS)
    assert Ack(7) in messages_to(forwarded, origin_addr)
    # A second request that the target never answers ends in a nack to the origin.
    core.handle(packet_from(1, IndirectPing(8, target, target_addr, True)), 0.1, WALL_MS)
    expired = core.tick(0.1 + CONFIG.probe_timeout_s + 0.001)
    assert Nack(8) in messages_to(expired, origin_addr)


def test_suspicion_of_self_is_refuted_with_a_higher_incarnation() -> None:
    core = core_with_peers(3)
    effects = core.handle(packet_from(1, Suspect(ME, 0, peer(1)[0])), 1.0, WALL_MS)
    assert core.incarnation == 1
    assert IncarnationChanged(1) in effects
    # The refutation goes out with the next packet.
    reply = core.handle(packet_from(2, Ping(5, ME)), 1.1, WALL_MS)
    assert Alive(ME, 1, ME_ADDR, 0, core.me.meta) in messages_to(reply, peer(2)[1])


def test_dead_about_self_is_refuted_too() -> None:
    core = core_with_peers(3)
    core.handle(packet_from(1, Dead(ME, 0, peer(1)[0])), 1.0, WALL_MS)
    assert core.incarnation == 1
    assert core.me.status == Status.ALIVE


def test_alive_with_higher_incarnation_clears_a_suspicion() -> None:
    core = core_with_peers(3)
    node, addr = peer(2)
    core.handle(packet_from(1, Suspect(node, 0, peer(1)[0])), 1.0, WALL_MS)
    assert core.members[node].status == Status.SUSPECT
    effects = core.handle(packet_from(2, Alive(node, 1, addr, 0, meta("peer2"))), 1.1, WALL_MS)
    assert core.members[node].status == Status.ALIVE
    assert MemberChanged(node, Status.SUSPECT, Status.ALIVE) in effects
    # ... and the suspicion timer is gone: it does not die when the old suspicion would have
    # expired (a fresh suspicion from our own unanswered probes would need longer than that).
    later = run_until(core, 1.0 + CONFIG.suspicion_max_s(core.live_count()) + 0.05, start=1.1)
    assert not any(
        isinstance(e, MemberChanged) and e.node == node and e.current == Status.DEAD for e in later
    )


def test_alive_at_the_same_incarnation_does_not_clear_a_suspicion() -> None:
    core = core_with_peers(3)
    node, addr = peer(2)
    core.handle(packet_from(1, Suspect(node, 0, peer(1)[0])), 1.0, WALL_MS)
    core.handle(packet_from(2, Alive(node, 0, addr, 0, meta("peer2"))), 1.1, WALL_MS)
    assert core.members[node].status == Status.SUSPECT


def test_unrefuted_suspicion_becomes_dead_within_the_lifeguard_bounds() -> None:
    core = core_with_peers(6)
    node, _ = peer(3)
    core.handle(packet_from(1, Suspect(node, 0, peer(1)[0])), 0.0, WALL_MS)
    n = core.live_count()
    changes = [e for e in run_until(core, CONFIG.suspicion_max_s(n) + 0.01) if isinstance(e, MemberChanged)]
    assert core.members[node].status in (Status.DEAD, Status.SUSPECT)
    if core.members[node].status == Status.SUSPECT:
        raise AssertionError("suspicion never timed out")
    assert MemberChanged(node, Status.SUSPECT, Status.DEAD) in changes


def test_independent_confirmations_shorten_the_suspicion() -> None:
    def time_to_dead(confirmers: int) -> float:
        core = core_with_peers(8)
        node, _ = peer(5)
        core.handle(packet_from(1, Suspect(node, 0, peer(1)[0])), 0.0, WALL_MS)
        for i in range(2, 2 + confirmers):
            core.handle(packet_from(i, Suspect(node, 0, peer(i)[0])), 0.0, WALL_MS)
        return core._suspicions[node].deadline

    assert time_to_dead(2) < time_to_dead(1) < time_to_dead(0)


def test_metadata_change_raises_meta_version_not_incarnation() -> None:
    core = core_with_peers(2)
    core.update_meta(meta("me", load={"cpu": 50.0}))
    assert core.incarnation == 0
    assert core.me.meta_version == 1
    # A peer accepts it at the same incarnation.
    other = core_with_peers(2, me=NodeId("observer"))
    other.handle(Packet(ME, ME_ADDR, (Alive(ME, 0, ME_ADDR, 0, meta("me")),)), 0.0, WALL_MS)
    other.handle(
        Packet(ME, ME_ADDR, (Alive(ME, 0, ME_ADDR, 1, meta("me", load={"cpu": 50.0})),)), 0.1, WALL_MS
    )
    assert other.members[ME].meta.load == {"cpu": 50.0}
    # An older rumour does not undo it.
    other.handle(Packet(ME, ME_ADDR, (Alive(ME, 0, ME_ADDR, 0, meta("me")),)), 0.2, WALL_MS)
    assert other.members[ME].meta.load == {"cpu": 50.0}


def test_unchanged_metadata_is_not_gossiped() -> None:
    core = core_with_peers(2)
    core.update_meta(core.me.meta)
    assert core.me.meta_version == 0


def test_dead_and_left_are_final_for_an_incarnation() -> None:
    core = core_with_peers(3)
    node, addr = peer(1)
    core.handle(packet_from(2, Suspect(node, 0, peer(2)[0])), 1.0, WALL_MS)
    core.handle(packet_from(2, Dead(node, 0, peer(2)[0])), 1.01 + VOUCHING_S, WALL_MS)
    assert core.members[node].status == Status.DEAD
    core.handle(packet_from(2, Alive(node, 0, addr, 5, meta("peer1"))), 1.1, WALL_MS)
    assert core.members[node].status == Status.DEAD
    # A restart comes back with a higher incarnation and is alive again.
    core.handle(packet_from(1, Alive(node, 1, addr, 0, meta("peer1"))), 1.2, WALL_MS)
    assert core.members[node].status == Status.ALIVE


def test_leave_is_announced_as_left_and_stops_probing() -> None:
    core = core_with_peers(4)
    effects = core.leave(5.0)
    announced = [m for s in sends(effects) for m in s.packet.messages]
    assert Dead(ME, 0, ME) in announced
    assert core.me.status == Status.LEFT
    assert not any(isinstance(m, Ping) for m in announced)
    # A peer receiving it records `left`, not `dead`.
    other = core_with_peers(2, me=NodeId("observer"))
    other.handle(Packet(ME, ME_ADDR, (Alive(ME, 0, ME_ADDR, 0, meta("me")),)), 0.0, WALL_MS)
    other.handle(Packet(ME, ME_ADDR, (Dead(ME, 0, ME),)), 5.1, WALL_MS)
    assert other.members[ME].status == Status.LEFT


def test_push_pull_merges_remote_dead_as_suspect_and_answers() -> None:
    core = core_with_peers(3)
    node, addr = peer(2)
    # Newer than what we hold (incarnation 0): news of a later accusation.
    states = (MemberState(node, addr, 1, Status.DEAD, 0, meta("peer2")),)
    effects = core.handle(packet_from(1, PushPull(True, False, states)), 1.0, WALL_MS)
    assert core.members[node].status == Status.SUSPECT
    replies = [m for m in messages_to(effects, peer(1)[1]) if isinstance(m, PushPull)]
    assert replies and not replies[0].reply_wanted
    assert {s.node for s in replies[0].states} == set(core.members)


def test_push_pull_passes_a_stale_dead_row_to_the_accused_alone() -> None:
    """A healed partition's verdict on a node we hold alive at that incarnation accuses nobody here:
    the node hears it and refutes (before, every node briefly suspected its own side at a merge)."""
    core = core_with_peers(3)
    node, addr = peer(2)
    states = (MemberState(node, addr, 0, Status.DEAD, 0, meta("peer2")),)
    effects = core.handle(packet_from(1, PushPull(True, False, states)), 1.0, WALL_MS)
    assert core.members[node].status == Status.ALIVE
    assert not [e for e in effects if isinstance(e, MemberChanged)]
    assert Suspect(node, 0, peer(1)[0]) in messages_to(effects, addr)
    # The accused refutes it: a higher incarnation that wins everywhere, the far side included.
    accused = core_with_peers(3, me=node)
    refuted = accused.handle(packet_from(0, Suspect(node, 0, peer(1)[0])), 1.1, WALL_MS)
    assert IncarnationChanged(1) in refuted


def test_stale_accusation_is_answered_with_the_newer_alive() -> None:
    core = core_with_peers(3)
    node, addr = peer(2)
    core.handle(packet_from(2, Alive(node, 3, addr, 0, meta("peer2"))), 1.0, WALL_MS)
    effects = core.handle(packet_from(1, Suspect(node, 1, peer(1)[0])), 1.1, WALL_MS)
    assert Alive(node, 3, addr, 0, meta("peer2")) in messages_to(effects, peer(1)[1])


def test_seeds_are_retried_with_backoff_while_alone() -> None:
    seed = Address("10.0.0.99:7946")
    core = Membership(CONFIG, ME, ME_ADDR, meta("me"), rng=random.Random(1), now=0.0, seeds=(seed,))
    attempts = [
        now
        for now, effects in ticks(core, until=12.0)
        if any(isinstance(m, PushPull) for m in messages_to(effects, seed))
    ]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) >= 3
    assert gaps == sorted(gaps), "waits between join attempts never shrink"
    assert max(gaps) <= CONFIG.seed_retry_max_s + 1e-9


def ticks(core: Membership, until: float) -> list[tuple[float, list]]:
    """Tick at each deadline up to `until`: (time, effects) per tick."""
    result = []
    now = 0.0
    while (deadline := core.next_deadline()) <= until:
        now = max(now, deadline)
        result.append((now, core.tick(now)))
    return result


def test_a_new_member_is_probed_within_one_pass() -> None:
    core = core_with_peers(4)
    newcomer, addr = peer(9)
    core.handle(packet_from(9, Alive(newcomer, 0, addr, 0, meta("peer9"))), 0.0, WALL_MS)
    effects = run_until(core, 6 * CONFIG.probe_interval_s)
    probed = {m.target for s in sends(effects) for m in s.packet.messages if isinstance(m, Ping)}
    assert newcomer in probed


def test_a_direct_ack_measures_the_round_trip_time_for_routing() -> None:
    core = core_with_peers(3)
    effects = ticks(core, CONFIG.probe_interval_s)
    sent_at, ping = next(
        (when, message)
        for when, batch in effects
        for send in sends(batch)
        for message in send.packet.messages
        if isinstance(message, Ping)
    )
    target = core.members[ping.target]
    assert target.rtt_s is None
    core.handle(packet_from(1, Ack(ping.seq)), sent_at + 0.004, WALL_MS)
    assert target.rtt_s is not None and abs(target.rtt_s - 0.004) < 1e-9


def test_the_view_version_moves_with_every_change_routing_caches_on() -> None:
    core = core_with_peers(2)
    start = core.versions.view
    node, addr = peer(1)
    member = core.members[node]
    core.handle(
        packet_from(1, Alive(node, member.incarnation, addr, member.meta_version + 1, meta("p1", zone="z"))),
        1.0,
        WALL_MS,
    )
    after_meta = core.versions.view
    assert after_meta > start
    core.handle(packet_from(2, Suspect(node, member.incarnation, peer(2)[0])), 1.1, WALL_MS)
    assert core.versions.view > after_meta
    unchanged = core.versions.view
    core.handle(packet_from(1, Ping(7, ME)), 1.2, WALL_MS)
    assert core.versions.view == unchanged


def test_a_verdict_on_a_peer_this_node_holds_alive_goes_to_that_peer_alone() -> None:
    """A partition repaired mid-verdict: the far side's `dead` reaches the accused's own side."""
    core = core_with_peers(3)
    node, addr = peer(1)
    effects = core.handle(packet_from(2, Dead(node, 0, peer(2)[0])), 1.0, WALL_MS)
    assert core.members[node].status == Status.ALIVE
    assert not [e for e in effects if isinstance(e, MemberChanged)]
    assert Send(addr, Packet(ME, ME_ADDR, (Suspect(node, 0, peer(2)[0]),))) in effects
    core.handle(packet_from(1, Alive(node, 1, addr, 0, meta("peer1"))), 1.01, WALL_MS)
    assert core.members[node].status == Status.ALIVE


def test_a_verdict_soon_after_this_node_took_the_suspicion_only_confirms_it() -> None:
    core = core_with_peers(3)
    node, addr = peer(1)
    core.handle(packet_from(0, Suspect(node, 0, peer(0)[0])), 1.0, WALL_MS)
    effects = core.handle(packet_from(2, Dead(node, 0, peer(2)[0])), 1.0 + VOUCHING_S / 2, WALL_MS)
    assert core.members[node].status == Status.SUSPECT
    assert Send(addr, Packet(ME, ME_ADDR, (Suspect(node, 0, peer(2)[0]),))) in effects


def test_a_verdict_on_a_peer_suspected_here_long_enough_is_taken_at_once() -> None:
    """A real death: the verdict arrives a suspicion timeout after the suspicion spread."""
    core = core_with_peers(3)
    node, _ = peer(1)
    core.handle(packet_from(0, Suspect(node, 0, peer(0)[0])), 1.0, WALL_MS)
    effects = core.handle(packet_from(2, Dead(node, 0, peer(2)[0])), 1.01 + VOUCHING_S, WALL_MS)
    assert core.members[node].status == Status.DEAD
    assert MemberChanged(node, Status.SUSPECT, Status.DEAD) in effects


def test_a_peer_leaving_is_taken_at_once_even_unsuspected() -> None:
    core = core_with_peers(3)
    node, addr = peer(1)
    core.handle(Packet(node, addr, (Dead(node, 0, node),)), 1.0, WALL_MS)
    assert core.members[node].status == Status.LEFT

"""A node that stalled (SIGSTOP, a long collection, a starved core) accuses nobody for its own stall.

An event loop that resumes runs its due timers before it reads its sockets, so the answers peers
sent during the stall are still unread when the membership core's tick comes. The tick sees that it
is late and moves its probe and suspicion timers by the stall; the answers then arrive in time.
"""

from __future__ import annotations

from meshnode.mesh.effects import MemberChanged
from meshnode.mesh.membership import Membership
from meshnode.mesh.simulation import Simulation
from meshnode.mesh.types import NodeId, Status
from meshnode.mesh.wire import Ack, Alive, IndirectPing, Ping, Suspect

from .test_membership import (
    CONFIG,
    WALL_MS,
    core_with_peers,
    meta,
    packet_from,
    peer,
    run_until,
    sends,
    ticks,
)

STALL_S = 8.0


def first_ping(core: Membership) -> tuple[float, Ping]:
    return next(
        (when, message)
        for when, batch in ticks(core, CONFIG.probe_interval_s)
        for send in sends(batch)
        for message in send.packet.messages
        if isinstance(message, Ping)
    )


def suspected(effects: list) -> list[NodeId]:
    return [e.node for e in effects if isinstance(e, MemberChanged) and e.current != Status.ALIVE]


def test_the_ack_of_a_probe_sent_just_before_a_stall_is_read_before_the_probe_fails() -> None:
    core = core_with_peers(5)
    sent_at, ping = first_ping(core)
    resumed = sent_at + STALL_S
    effects = core.tick(resumed)  # the loop's timers first
    assert not suspected(effects)
    assert not [m for s in sends(effects) for m in s.packet.messages if isinstance(m, IndirectPing)]
    assert core.stalls.count == 1 and core.awareness.score == 1  # the node blames itself
    index = int(ping.target.removeprefix("peer"))
    core.handle(packet_from(index, Ack(ping.seq)), resumed + 0.001, WALL_MS)  # then the socket
    later = run_until(core, resumed + 3 * CONFIG.probe_interval_s, start=resumed)
    assert ping.target not in suspected(later)  # (later probes, which nothing answers here, may fail)
    # The round trip measured is the ack's own, not the stall's.
    rtt = core.members[ping.target].rtt_s
    assert rtt is not None and rtt < CONFIG.probe_timeout_s


def test_a_probe_still_fails_after_a_stall_when_no_answer_waits() -> None:
    core = core_with_peers(5)
    sent_at, ping = first_ping(core)
    resumed = sent_at + STALL_S
    effects = core.tick(resumed)
    effects += run_until(core, resumed + 2 * CONFIG.probe_interval_s, start=resumed)
    indirect = [m for s in sends(effects) for m in s.packet.messages if isinstance(m, IndirectPing)]
    assert [m.target for m in indirect] == [ping.target] * CONFIG.indirect_checks
    assert ping.target in suspected(effects)


def test_a_refutation_that_waited_through_a_stall_keeps_the_suspect_alive() -> None:
    core = core_with_peers(6)
    node, addr = peer(3)
    core.handle(packet_from(1, Suspect(node, 0, peer(1)[0])), 0.0, WALL_MS)
    resumed = core._suspicions.next_deadline() + STALL_S
    assert not suspected(core.tick(resumed))
    assert core.members[node].status == Status.SUSPECT
    core.handle(packet_from(3, Alive(node, 1, addr, 0, meta("peer3"))), resumed + 0.001, WALL_MS)
    assert core.members[node].status == Status.ALIVE


def test_an_unrefuted_suspicion_ends_in_death_the_time_it_had_left_after_the_stall() -> None:
    core = core_with_peers(6)
    node, _ = peer(3)
    core.handle(packet_from(1, Suspect(node, 0, peer(1)[0])), 0.0, WALL_MS)
    deadline = core._suspicions.next_deadline()
    resumed = deadline + STALL_S
    core.tick(resumed)
    assert core._suspicions.next_deadline() > resumed
    later = run_until(core, resumed + deadline, start=resumed)
    assert MemberChanged(node, Status.SUSPECT, Status.DEAD) in later


def test_a_node_paused_for_seconds_in_a_busy_mesh_suspects_no_healthy_peer() -> None:
    """The simulator's ``hold`` is a SIGSTOP: packets wait, timers run first on resume. Twenty pauses
    of a node, each starting right as it pings, accuse nobody (on the core before this, every
    pause that caught a probe in flight accused its target)."""
    accused: list[tuple[float, NodeId, NodeId]] = []
    sim = Simulation(CONFIG, seed=7, delay_s=(0.001, 0.003))
    ids = sim.bootstrap(8)
    sim.run_for(3.0)
    paused = ids[2]
    sim.on_change = lambda change: (
        accused.append((change.time, change.observer, change.node))
        if change.status != Status.ALIVE and change.node != paused
        else None
    )
    core = sim.nodes[paused].core
    for _ in range(20):
        # Run until the paused node has a probe in flight, then stop it there.
        sim.run_until(lambda: core._prober._probe is not None, sim.now + 1.0, check_every_s=0.0005)
        sim.hold(paused, 2.0)
        sim.run_for(3.0)
    assert core.stalls.count >= 20
    assert not accused, accused


def test_the_wait_between_making_a_core_and_its_first_tick_is_no_stall() -> None:
    core = core_with_peers(5)  # made at 0: an agent builds its other parts before it gossips
    started = 10 * CONFIG.probe_interval_s
    core.stalls.begin(started)
    core.tick(started + CONFIG.probe_timeout_s / 2)
    assert core.stalls.count == 0 and core.awareness.score == 0
    # Once it ticks, a stall counts as before.
    resumed = started + STALL_S
    core.tick(resumed)
    assert core.stalls.count == 1 and core.awareness.score == 1


def test_without_begin_the_wait_before_the_first_tick_counts_as_a_stall() -> None:
    core = core_with_peers(5)
    core.tick(10 * CONFIG.probe_interval_s)
    assert core.stalls.count == 1  # what the shell's begin() is for

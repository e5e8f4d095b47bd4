"""Deployment records ride on membership: piggybacked once they win, carried whole by push-pull."""

from __future__ import annotations

from meshnode.mesh.deployment import DeploymentSpec
from meshnode.mesh.effects import RecordChanged
from meshnode.mesh.records import Record
from meshnode.mesh.wire import Ping, PushPull

from .test_membership import WALL_MS, core_with_peers, messages_to, packet_from, peer, run_until, sends

SPEC = DeploymentSpec("apps/echo.py:Echo", min_replicas=2, max_replicas=2)


def test_a_local_declaration_is_reported_and_piggybacked_on_the_next_packets() -> None:
    core = core_with_peers(3)
    effects = core.declare("echo", SPEC, wall_ms=1_000)
    assert [type(e) for e in effects] == [RecordChanged]
    record = core.deployments.get("echo")
    assert record is not None and record.spec == SPEC and record.origin == core.node_id
    sent = run_until(core, until=1.0)
    assert any(isinstance(m, Record) and m.name == "echo" for s in sends(sent) for m in s.packet.messages)


def test_a_newer_record_from_a_peer_wins_and_is_passed_on_an_older_one_is_ignored() -> None:
    core = core_with_peers(3)
    core.declare("echo", SPEC, wall_ms=1_000)
    core.clear_broadcasts()
    newer = Record("echo", (5_000 << 16), peer(1)[0], None)
    effects = core.handle(packet_from(1, newer), now=0.1, wall_ms=WALL_MS)
    assert effects == [RecordChanged(newer)]
    assert core.deployments.live() == []
    older = Record("echo", (2_000 << 16), peer(2)[0], SPEC)
    assert core.handle(packet_from(2, older), now=0.2, wall_ms=WALL_MS) == []
    # The newer news is queued for others: it rides on this node's next ping.
    _, addr = peer(2)
    assert any(
        isinstance(m, Record)
        for m in messages_to(core.handle(packet_from(2, Ping(1, core.node_id)), 0.3, WALL_MS), addr)
    )


def test_push_pull_carries_the_whole_table_both_ways() -> None:
    core = core_with_peers(2)
    core.declare("mine", SPEC, wall_ms=1_000)
    theirs = Record("theirs", (3_000 << 16), peer(1)[0], SPEC)
    effects = core.handle(packet_from(1, PushPull(True, False, (), (theirs,))), now=0.5, wall_ms=WALL_MS)
    assert RecordChanged(theirs) in effects
    _, addr = peer(1)
    replies = [m for m in messages_to(effects, addr) if isinstance(m, PushPull)]
    assert replies and {r.name for r in replies[0].records} == {"mine", "theirs"}


def test_a_record_already_held_is_not_passed_on_again() -> None:
    core = core_with_peers(3)
    record = Record("echo", (5_000 << 16), peer(1)[0], SPEC)
    assert core.handle(packet_from(1, record), now=0.1, wall_ms=WALL_MS) == [RecordChanged(record)]
    core.clear_broadcasts()
    # An equal copy, as from the wire, and the very same object, as the simulator hands it over.
    copy = Record(record.name, record.stamp, record.origin, SPEC)
    assert core.handle(packet_from(2, copy), now=0.2, wall_ms=WALL_MS) == []
    assert core.handle(packet_from(2, record), now=0.3, wall_ms=WALL_MS) == []
    sent = run_until(core, until=1.0, start=0.3)
    assert not any(isinstance(m, Record) for s in sends(sent) for m in s.packet.messages)

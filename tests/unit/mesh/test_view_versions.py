"""The two view counters: every change moves ``view``; load alone never moves ``roster``."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.replica_state import ReplicaEntry, ReplicaState
from meshnode.mesh.types import Address
from meshnode.mesh.view_versions import LOAD_ENTRY_FIELDS, LOAD_META_FIELDS, ViewVersions, beyond_load
from meshnode.mesh.wire import Alive, Suspect

from .test_membership import WALL_MS, core_with_peers, packet_from, peer

BUSY = NodeMeta(
    name="n1",
    device={"kind": "cpu", "memory": 8_000_000_000},
    load={"cpu": 10.0, "in_flight": 1},
    replicas={"echo": ReplicaEntry(ReplicaState.READY, queue=1, slots=1, capacity=4)},
    speeds={"echo": {"service_ms": 1.0}},
)


@pytest.mark.parametrize(
    "after",
    [
        replace(BUSY, load={"cpu": 90.0, "in_flight": 7}),
        replace(BUSY, speeds={"echo": {"service_ms": 3.0}}),
        replace(BUSY, traffic={"echo": {"rps": 5}}),
        replace(BUSY, pulls={"m": {"digest": "d", "done": 1, "total": 2}}),
        replace(BUSY, replicas={"echo": replace(BUSY.replicas["echo"], queue=9)}),
    ],
    ids=["load", "speeds", "traffic", "pulls", "queue"],
)
def test_load_alone_changes_the_view_but_not_the_roster(after: NodeMeta) -> None:
    versions = ViewVersions()
    versions.meta_changed(BUSY, after)
    assert (versions.view, versions.roster) == (1, 0)


@pytest.mark.parametrize(
    "after",
    [
        replace(BUSY, device={"kind": "cuda", "memory": 8_000_000_000}),
        replace(BUSY, zone="z2"),
        replace(BUSY, store={"m": {"digest": "d", "bytes": 1}}),
        replace(BUSY, waiting={"echo": 1}),
        replace(BUSY, replicas={"echo": replace(BUSY.replicas["echo"], state=ReplicaState.DRAINING)}),
        replace(BUSY, replicas={"echo": replace(BUSY.replicas["echo"], error="setup failed")}),
        replace(BUSY, replicas={**BUSY.replicas, "other": ReplicaEntry(ReplicaState.STARTING)}),
        replace(BUSY, replicas={}),
    ],
    ids=["device", "zone", "store", "waiting", "state", "error", "new replica", "replica gone"],
)
def test_what_a_plan_reads_moves_both(after: NodeMeta) -> None:
    versions = ViewVersions()
    versions.meta_changed(BUSY, after)
    assert (versions.view, versions.roster) == (1, 1)
    assert beyond_load(after, BUSY)


def test_load_fields_name_real_fields_so_a_rename_cannot_silently_stop_re_planning() -> None:
    assert {f.name for f in fields(NodeMeta)} >= LOAD_META_FIELDS
    assert {f.name for f in fields(ReplicaEntry)} >= LOAD_ENTRY_FIELDS


def test_the_core_moves_the_roster_on_status_address_and_more_than_load() -> None:
    core = core_with_peers(2)
    node, addr = peer(1)
    member = core.members[node]
    view, roster = core.versions.view, core.versions.roster

    def alive(new: NodeMeta) -> None:
        news = Alive(node, member.incarnation, addr, member.meta_version + 1, new)
        core.handle(packet_from(1, news), 1.0, WALL_MS)

    alive(replace(member.meta, load={"cpu": 50.0}))
    assert (core.versions.view, core.versions.roster) == (view + 1, roster)
    alive(replace(member.meta, zone="z9"))
    assert (core.versions.view, core.versions.roster) == (view + 2, roster + 1)
    core.handle(packet_from(2, Suspect(node, member.incarnation, peer(2)[0])), 1.1, WALL_MS)
    assert (core.versions.view, core.versions.roster) == (view + 3, roster + 2)
    core.update_meta(replace(core.me.meta, load={"cpu": 1.0}))  # this node's own load
    assert (core.versions.view, core.versions.roster) == (view + 4, roster + 2)
    other, _ = peer(0)
    held = core.members[other]
    moved = Alive(other, held.incarnation + 1, Address("10.9.9.9:7946"), held.meta_version, held.meta)
    core.handle(packet_from(0, moved), 1.3, WALL_MS)  # a restart at another address, same metadata
    assert core.versions.roster == roster + 3

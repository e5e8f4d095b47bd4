"""A placement round reads the members once, not once per deployment, and decides as before.

``Deployments.reconcile`` runs on a fake membership (no sockets) and the real replica table; its
deployments allow no replica placed by the autoscaler (max 0), so no worker starts here, while the
random views' peers gossip replicas of them in every state. The decisions through the round's
``ReplicaIndex`` are compared with the plain walk over the members on seeded random views.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any, cast

import pytest

from meshnode.config import AgentConfig
from meshnode.membership.runner import GossipRunner
from meshnode.mesh import replica_view
from meshnode.mesh.deployment import Autoscaling, DeploymentSpec
from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.records import Record
from meshnode.mesh.replica_index import ReplicaIndex
from meshnode.mesh.types import NodeId
from meshnode.serving.decisions import Decisions
from meshnode.serving.deployments import Deployments
from meshnode.serving.plans import HostSet
from meshnode.serving.replicas import Replicas
from tests.unit.mesh.random_views import ME, random_local, random_members

IDLE = DeploymentSpec("meshnode.apps.echo:Echo", min_replicas=0, max_replicas=0)


class CountedMember(Member):
    """A member that counts how often its metadata is read (one visit of the member)."""

    visits = 0

    @property  # type: ignore[override]
    def meta(self) -> NodeMeta:
        CountedMember.visits += 1
        return cast(NodeMeta, _META_SLOT.__get__(self, Member))

    @meta.setter
    def meta(self, value: NodeMeta) -> None:
        _META_SLOT.__set__(self, value)


_META_SLOT: Any = Member.__dict__["meta"]


class FakeMembership:
    """What the placement loop asks of the gossip runner, over a fixed view."""

    leaving = False
    roster_version = 0

    def __init__(self, members: list[Member], records: list[Record]) -> None:
        self._members, self._records = members, {record.name: record for record in records}

    def members(self) -> list[Member]:
        return self._members

    def has_peers(self) -> bool:
        return True

    def live_records(self) -> list[Record]:
        return [record for record in self._records.values() if record.spec is not None]

    def record(self, name: str) -> Record | None:
        return self._records.get(name)

    def expire_records(self, now_ms: int, ttl_s: float) -> list[str]:
        return []


def deployments(tmp_path: Path, members: list[Member], count: int) -> Deployments:
    config = AgentConfig(name="here", data_dir=tmp_path)
    records = [Record(f"d{index:04d}", 1, ME, IDLE) for index in range(count)]
    return Deployments(
        node_id=ME,
        config=config,
        pinned={},
        replicas=Replicas(node_id=ME, config=config, on_change=lambda: None),
        membership=cast(GossipRunner, FakeMembership(members, records)),
        publish=lambda: None,
        persist=lambda record: None,
        forget=lambda names: None,
    )


async def test_a_view_change_re_plans_at_once_only_when_a_plan_could_differ(tmp_path: Path) -> None:
    """Load alone (no new placement version) waits for the interval's round: it only feeds the autoscaler."""
    placement = deployments(tmp_path, [], 1)
    membership = cast(FakeMembership, placement._membership)
    woken = []
    placement.cold_starts.view_changed = lambda: woken.append(True)  # type: ignore[method-assign]
    placement.on_view()  # the first view change: nothing seen before
    assert placement._due.is_set()
    placement._due.clear()
    placement.on_view()  # load moved somewhere
    assert not placement._due.is_set() and len(woken) == 2  # cold-start waiters still look again
    membership.roster_version += 1  # a replica became ready, a member died, a device changed
    placement.on_view()
    assert placement._due.is_set()


def counted(members: list[Member]) -> list[Member]:
    return [CountedMember(m.node, m.addr, m.incarnation, m.status, 1, m.meta, m.since) for m in members]


@pytest.mark.parametrize("count", [10, 100])
async def test_a_round_visits_each_member_a_few_times_however_many_deployments(
    tmp_path: Path, count: int
) -> None:
    """The quadratic round visited every member per deployment: 100 deployments, 100 times as many."""
    members = counted(random_members(random.Random(3), 60, names=[f"d{index:04d}" for index in range(count)]))
    placement = deployments(tmp_path / str(count), members, count)
    await placement.reconcile(100.0)  # the first round creates every deployment's autoscaler
    CountedMember.visits = 0
    await placement.reconcile(101.0)
    # Live hosts (HostSet: device, labels, store) and the index (one read each): a constant per member.
    assert CountedMember.visits <= 8 * len(members), CountedMember.visits
    assert len(placement.views()) == count


async def test_views_of_every_deployment_read_each_member_a_few_times(tmp_path: Path) -> None:
    members = counted(random_members(random.Random(4), 60, names=[f"d{index:04d}" for index in range(100)]))
    placement = deployments(tmp_path, members, 100)
    await placement.reconcile(100.0)
    CountedMember.visits = 0
    views = placement.views()
    # The index reads each member once; each view then reads only the members it shows.
    shown = sum(len(view["replicas"]) for view in views)
    assert CountedMember.visits <= 2 * len(members) + 6 * (shown + 3 * len(views)), CountedMember.visits


@pytest.mark.parametrize("seed", range(12))
async def test_views_through_the_index_equal_views_of_every_member(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    names = [f"d{index:04d}" for index in range(8)]
    members = random_members(rng, rng.randrange(1, 30), names)
    placement = deployments(tmp_path, members, len(names))
    await placement.reconcile(100.0)
    indexed = placement.views()
    assert indexed == [placement.view(name) for name in names]  # one view reads every member


@pytest.mark.parametrize("seed", range(25))
def test_decisions_through_the_index_equal_decisions_from_the_walk(seed: int) -> None:
    """Round after round on changing random views, with time passing: autoscaler delays included."""
    rng = random.Random(seed)
    names = ["sd", "llm", "embed"]
    specs = {
        name: DeploymentSpec(
            "a:A",
            min_replicas=rng.randrange(2),
            max_replicas=rng.randrange(2, 5),
            backups=rng.randrange(2),
            autoscaling=Autoscaling(
                target_concurrency=1.0,
                scale_up_delay_s=2.0,
                scale_down_delay_s=4.0,
                prewarm=rng.random() < 0.5,
            ),
        )
        for name in names
    }
    walked, indexed = Decisions(ME), Decisions(ME)
    now = 0.0
    for _ in range(30):
        now += rng.choice((0.1, 1.0, 1.0, 3.0))
        members = replica_view.live(random_members(rng, rng.randrange(1, 25), names))
        hosts = HostSet.of(members)
        index = ReplicaIndex.of(members, ME)
        for name in names:
            local, waiting = random_local(rng), rng.randrange(3)
            sat_out = rng.choice((None, None, "setup failed"))
            ask: dict[str, Any] = {"local": local, "waiting_here": waiting, "sat_out": sat_out}
            expected = walked.decide(name, specs[name], members, hosts, now, **ask)
            assert indexed.decide(name, specs[name], index, hosts, now, **ask) == expected, (seed, now, name)


def test_an_index_built_for_another_node_is_refused() -> None:
    index = ReplicaIndex.of([], NodeId("other"))
    with pytest.raises(AssertionError):
        replica_view.pinned_nodes("sd", index, ME, None)


@pytest.mark.parametrize("seed", range(20))
def test_skipping_idle_deployments_decides_as_deciding_every_one(seed: int) -> None:
    """A round skips what nothing mentions (``Decisions.idle``); outcomes equal deciding them all.

    Most deployments are absent from the views most of the time, now and then a view gossips
    replicas or waits of some, this node holds one or sits one out, and the live set changes.
    """
    rng = random.Random(seed)
    names = [f"d{index:02d}" for index in range(12)]
    specs = {
        name: DeploymentSpec(
            "a:A",
            min_replicas=rng.randrange(2),
            max_replicas=rng.randrange(1, 4),
            backups=rng.randrange(2),
            autoscaling=Autoscaling(
                target_concurrency=1.0,
                window_s=rng.choice((1.0, 5.0)),
                scale_up_delay_s=2.0,
                scale_down_delay_s=4.0,
                prewarm=rng.random() < 0.5,
            ),
        )
        for name in names
    }
    everything, skipping = Decisions(ME), Decisions(ME)
    now, skipped = 0.0, 0
    quiet = replica_view.live(random_members(rng, 12, []))
    hosts = HostSet.of(quiet)
    for _ in range(120):
        now += rng.choice((0.1, 0.5, 1.0, 3.0))
        if rng.random() < 0.2:
            members = replica_view.live(random_members(rng, 12, rng.sample(names, 2)))
        else:
            members = quiet
        if rng.random() < 0.05:
            quiet = replica_view.live(random_members(rng, rng.randrange(1, 14), []))
            members = quiet
        fresh = HostSet.of(members)
        hosts = hosts if fresh == hosts else fresh
        index = ReplicaIndex.of(members, ME)
        for name in names:
            busy = rng.random() < 0.05
            local = random_local(rng) if busy else None
            waiting = rng.randrange(3) if busy else 0
            sat_out = rng.choice((None, "setup failed")) if busy else None
            ask: dict[str, Any] = {"local": local, "waiting_here": waiting, "sat_out": sat_out}
            expected = everything.decide(name, specs[name], index, hosts, now, **ask)
            untouched = not (index.mentions(name) or local or waiting or sat_out)
            if untouched and skipping.idle(name, specs[name], hosts, now):
                skipped += 1
                assert ME not in expected.plan.hosts and ME not in expected.plan.backups
            else:
                skipping.decide(name, specs[name], index, hosts, now, **ask)
            assert skipping.outcomes[name] == expected, (seed, now, name)
    assert skipped > 30


async def test_a_long_round_yields_to_the_loop_and_decides_as_an_unbroken_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = random_members(random.Random(5), 40, names=[f"d{index:04d}" for index in range(30)])
    unbroken = deployments(tmp_path / "unbroken", members, 30)
    await unbroken.reconcile(100.0)
    monkeypatch.setattr("meshnode.serving.deployments._ROUND_SLICE_S", 0.0)  # every deployment a slice
    sliced = deployments(tmp_path / "sliced", members, 30)
    round_done = False
    ran_meanwhile: list[bool] = []
    asyncio.get_running_loop().call_soon(lambda: ran_meanwhile.append(not round_done))
    await sliced.reconcile(100.0)
    round_done = True
    assert ran_meanwhile == [True]  # the loop ran a callback while the round was under way
    assert sliced.views() == unbroken.views()

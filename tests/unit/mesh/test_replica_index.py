"""The replica index answers every ``replica_view`` question exactly as a walk over the members does."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from meshnode.mesh import replica_view
from meshnode.mesh.deployment import DeploymentSpec
from meshnode.mesh.member import Member
from meshnode.mesh.placement import Plan
from meshnode.mesh.replica_index import ReplicaIndex
from meshnode.mesh.replica_state import ReplicaEntry, ReplicaState
from meshnode.mesh.types import NodeId

from .random_views import ME, random_local, random_members

NAMES = ["sd", "llm", "embed", "echo"]


@pytest.mark.parametrize("seed", range(40))
def test_the_index_gives_the_same_answers_as_the_walk_on_random_views(seed: int) -> None:
    rng = random.Random(seed)
    members = random_members(rng, rng.randrange(1, 40), NAMES)
    for view in (members, replica_view.live(members)):  # a round reads the live ones, the API all
        index = ReplicaIndex.of(view, ME)
        for name in [*NAMES, "unknown"]:
            case = Case(
                name,
                local=random_local(rng),
                sat_out=rng.choice((None, "setup failed", replica_view.cannot_run_here("no"))),
                waiting_here=rng.randrange(3),
                own=ReplicaEntry(ReplicaState.FAILED, error="x") if rng.random() < 0.3 else None,
                spec=rng.choice((None, DeploymentSpec("a:A", min_replicas=0, max_replicas=rng.randrange(3)))),
                placed=rng.choice((None, Plan((ME,), (), None), Plan((), (), "nobody"))),
            )
            assert answers(index, case) == answers(view, case), (seed, case)


@dataclass(frozen=True)
class Case:
    """One question about one deployment, asked of the walk and of the index."""

    name: str
    local: replica_view.LocalReplica | None
    sat_out: str | None
    waiting_here: int
    own: ReplicaEntry | None
    spec: DeploymentSpec | None
    placed: Plan | None


def answers(view: replica_view.View, case: Case) -> tuple[object, ...]:
    """What every ``replica_view`` function says about `case` from `view`."""
    name, local = case.name, case.local
    return (
        replica_view.demand(name, view, ME, local, case.waiting_here),
        replica_view.excluded(name, view, ME, case.sat_out),
        replica_view.pinned_nodes(name, view, ME, local),
        replica_view.ready_nodes(name, view, ME, local),
        replica_view.running_count(name, view),
        replica_view.serving_anywhere(name, view, ME, local),
        # In order too: the load clock sees the replicas in the members' order.
        list(replica_view.states(name, view, ME, local).items()),
        replica_view.prospect(name, case.spec, view, ME, case.own, case.placed),
        replica_view.failure(name, view, ME, case.own),
    )


@pytest.mark.parametrize("seed", range(20))
def test_members_about_a_deployment_keep_the_members_order(seed: int) -> None:
    rng = random.Random(seed)
    members = random_members(rng, rng.randrange(1, 30), NAMES)
    index = ReplicaIndex.of(members, ME)
    mentioned = [NodeId("nobody"), *rng.sample([m.node for m in members], k=min(3, len(members)))]
    chosen = index.members_about("sd", mentioned)
    wanted = [m for m in members if "sd" in m.meta.replicas or m.node in mentioned]
    assert chosen == wanted


def test_one_pass_reads_each_member_once_however_many_deployments() -> None:
    rng = random.Random(7)
    names = [f"d{index}" for index in range(200)]
    members = random_members(rng, 50, names)
    walked = _Walked(members)
    index = ReplicaIndex.of(walked, ME)
    for name in names:
        replica_view.demand(name, index, ME, None, 0)
        replica_view.excluded(name, index, ME, None)
        replica_view.pinned_nodes(name, index, ME, None)
        replica_view.states(name, index, ME, None)
    assert walked.walks == 1


class _Walked(list[Member]):
    """A list of members that counts the walks over it."""

    def __init__(self, members: list[Member]) -> None:
        super().__init__(members)
        self.walks = 0

    def __iter__(self) -> Iterator[Member]:
        self.walks += 1
        return super().__iter__()

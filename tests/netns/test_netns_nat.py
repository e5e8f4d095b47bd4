"""Issue 15, membership: a node behind NAT joins a mesh through relays and stays alive in it.

Real agents on the NAT topology of tests/netns/nat.py (harness: tests/netns/nat_mesh.py): cloud
nodes c0 (the seed) and c1, and h0 on the home network behind a masquerading router, seeded from c0.
Nobody can dial h0; h0 can dial out. Without relays the cloud nodes cannot probe h0 and suspect it;
with them (node/membership/relaying.py, docs/edge.md) the cloud nodes reach it over connections it
opened, and GET /v1/mesh says so with ``"reach": "relayed"`` and the ``"relays"`` (cloud node ids)
that carry its traffic.

A watcher beside each agent samples its view every half second, so a test sees every sample of
every view, also the ones between its own checks; the agents' logs catch a suspicion shorter than a
sample. Failure messages carry the latest views, the tail of each agent's log, and the router's
connection table. Serving through the relays is in test_netns_nat_serving.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.agents import wait_for
from tests.netns.nat_mesh import (
    CLOUD,
    DEAD_TIMEOUT_S,
    FLUSH_RECOVERY_S,
    FLUSH_STABLE_S,
    HOLD_S,
    HOME,
    POLL_INTERVAL_S,
    RELAY_LOSS_S,
    NatMesh,
    hold,
    nat_mesh,
    never_left_alive,
    relays_of_home,
    wait_relayed,
)

pytestmark = pytest.mark.netns


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[NatMesh]:
    with nat_mesh(tmp_path, "mnnatm") as started:
        yield started


@pytest.mark.timeout(400)
def test_home_node_joins_through_relays_stays_alive_and_dies_when_killed(mesh: NatMesh) -> None:
    took = mesh.wait_home_alive()
    print(f"h0 alive in every view {took:.1f} s after every agent answered")
    wait_relayed(mesh)
    by_id = {node: name for name, node in mesh.ids.items()}
    print(f"h0's relays as c0 sees them: {[by_id.get(r, r) for r in relays_of_home(mesh, 'c0')]}")

    began, suspicions = time.monotonic(), mesh.suspicions_of(HOME)
    pairs = [(viewer, HOME) for viewer in (*CLOUD, HOME)] + [(HOME, name) for name in CLOUD]

    def steady() -> str | None:
        mesh.check_running()
        if (problem := never_left_alive(mesh, began, pairs)) is not None:
            return problem
        if mesh.suspicions_of(HOME) != suspicions:
            return f"an agent logged a suspicion of h0 between two looks\n{mesh.diagnosis()}"
        return None

    hold(HOLD_S, steady)
    # Each view was really looked at through the hold (about every half second).
    for viewer in (*CLOUD, HOME):
        looked = [s for s in mesh.samples(viewer, began) if s.members is not None]
        assert len(looked) >= HOLD_S / POLL_INTERVAL_S / 4, f"{viewer}: {len(looked)} answers"
    wait_relayed(mesh)

    mesh.kill(HOME)
    killed = time.monotonic()

    def declared_dead() -> bool:
        mesh.check_running(*CLOUD)
        return all(any(s.status(HOME) == "dead" for s in mesh.samples(viewer, killed)) for viewer in CLOUD)

    took = wait_for(
        declared_dead,
        DEAD_TIMEOUT_S,
        interval=POLL_INTERVAL_S,
        message=lambda: f"every cloud view says h0 dead after its SIGKILL\n{mesh.diagnosis()}",
    )
    print(f"every cloud view said h0 dead {took:.1f} s after its SIGKILL")


@pytest.mark.timeout(300)
def test_home_node_stays_alive_when_one_of_its_relays_is_killed(mesh: NatMesh) -> None:
    mesh.wait_home_alive()
    wait_relayed(mesh)
    relays = relays_of_home(mesh, "c0")
    by_id = {node: name for name, node in mesh.ids.items()}
    victim = by_id[relays[0]]
    survivor = next(name for name in CLOUD if name != victim)
    print(f"h0's relays as c0 sees them: {[by_id.get(r, r) for r in relays]}; killing {victim}")
    suspicions = mesh.suspicions_of(HOME, (survivor,))

    mesh.kill(victim)
    killed = time.monotonic()
    moved: list[float] = []

    def home_kept_alive() -> str | None:
        mesh.check_running(survivor, HOME)
        if (problem := never_left_alive(mesh, killed, [(survivor, HOME)])) is not None:
            return problem
        if mesh.suspicions_of(HOME, (survivor,)) != suspicions:
            return f"{survivor} logged a suspicion of h0 after {victim} died\n{mesh.diagnosis()}"
        current = relays_of_home(mesh, survivor)
        if not moved and current and mesh.ids[victim] not in current:
            moved.append(time.monotonic() - killed)
        return None

    hold(RELAY_LOSS_S, home_kept_alive)
    assert moved, f"h0's relays in {survivor}'s view still name {victim} (or none)\n{mesh.diagnosis()}"
    print(f"h0's relays in {survivor}'s view dropped {victim} {moved[0]:.1f} s after its SIGKILL")


@pytest.mark.timeout(300)
def test_home_node_recovers_from_a_nat_flush_by_itself(mesh: NatMesh) -> None:
    mesh.wait_home_alive()
    wait_relayed(mesh)
    tracked = mesh.net.connections()
    assert "ESTABLISHED" in tracked, f"nothing for the flush to forget:\n{tracked}"

    mesh.net.flush_nat()
    flushed = time.monotonic()
    pairs = [(viewer, HOME) for viewer in (*CLOUD, HOME)] + [(HOME, name) for name in CLOUD]
    last_problem = [flushed]

    def alive_again_and_steady() -> bool:
        mesh.check_running()
        for viewer, member in pairs:
            for sample in mesh.samples(viewer, last_problem[0]):
                if sample.members is not None and sample.status(member) != "alive":
                    last_problem[0] = max(last_problem[0], sample.t)
        return time.monotonic() - last_problem[0] >= FLUSH_STABLE_S

    wait_for(
        alive_again_and_steady,
        FLUSH_RECOVERY_S + FLUSH_STABLE_S,
        interval=POLL_INTERVAL_S,
        message=lambda: f"h0 alive in every view for {FLUSH_STABLE_S:g} s on end\n{mesh.diagnosis()}",
    )
    wavered = last_problem[0] - flushed
    print(
        "h0 always alive after the flush"
        if not wavered
        else f"last not alive {wavered:.1f} s after the flush"
    )
    print(f"{mesh.suspicions_of(HOME)} suspicions of h0 logged in all")
    wait_relayed(mesh)

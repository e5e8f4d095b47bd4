"""A mesh whose every node is busy: load news must not hold back failure detection or other news.

Every busy node republishes its load once per ``meta_min_interval_s`` (``node/load.py``), and each
update costs about ``N * retransmit_limit(N)`` sends mesh-wide, so past some size load news alone
wants more packets than gossip sends. Here 100 nodes with ~1.2 KB of metadata each (a few
deployments' replicas, hints and speeds) change their load every second, the ``local`` profile's
interval: several times what gossip carries. Load news then goes in the background
(``broadcast_queue.py``): a crash must still be known everywhere, and a change beyond load (a new
hint, as a replica becoming ready) must still reach every node, about as fast as in a quiet mesh.
Before, the fresh load news, never sent and newest, always went before them: in this mesh the
crash took 24 s to be known everywhere (2.4 s expected) and the hint 41 s (0.3 s expected).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.simulation import Simulation
from meshnode.mesh.types import NodeId, Status
from meshnode.mesh.wire import Alive, encoded_size

N = 100
SEED = 20261207
CONFIG = MembershipConfig.local()
LOAD_EVERY_S = CONFIG.meta_min_interval_s
STEP_S = 0.1


def described(node: NodeId, load: int, extra: tuple[str, ...] = ()) -> NodeMeta:
    """~1.2 KB of metadata: thirty hints of 32 characters, and a load."""
    hints = tuple(f"prefix-{node[:8]}-{i:04d}".ljust(32, "x") for i in range(30)) + extra
    return NodeMeta(name=node[:8], hints=hints, load={"cpu": load, "in_flight": load % 7})


class BusyMesh:
    """A settled mesh where every node but the ones set aside changes its load every LOAD_EVERY_S."""

    def __init__(self) -> None:
        self.sim = Simulation(CONFIG, seed=SEED)
        self.nodes = self.sim.bootstrap(N)
        self.rng = random.Random(SEED)
        for node in self.nodes:
            self.sim.update_meta(node, described(node, 0))
        self.sim.run_for(30.0)  # the wave of ~1.2 KB news from every node is sent its full count
        self.phase = {node: self.rng.random() * LOAD_EVERY_S for node in self.nodes}
        self.quiet: set[NodeId] = set()  # set aside: crashed, or changing something else
        self.elapsed = 0.0

    def run_for(self, seconds: float) -> None:
        end = self.elapsed + seconds
        while self.elapsed < end:
            self.step()

    def run_until(self, done: Callable[[], bool], seconds: float) -> float | None:
        """Busy steps until `done()`; the seconds it took, or None if it never happened."""
        start = self.elapsed
        while self.elapsed - start < seconds:
            if done():
                return self.elapsed - start
            self.step()
        return None

    def step(self) -> None:
        before, self.elapsed = self.elapsed, self.elapsed + STEP_S
        for node in self.nodes:
            due = int((self.elapsed - self.phase[node]) // LOAD_EVERY_S)
            if node not in self.quiet and due > int((before - self.phase[node]) // LOAD_EVERY_S):
                self.sim.update_meta(node, described(node, self.rng.randrange(100)))
        self.sim.run_for(STEP_S)

    def others(self, node: NodeId) -> list[NodeId]:
        return [other for other in self.nodes if other != node and other not in self.quiet]


def test_the_load_news_is_more_than_gossip_carries() -> None:
    # The premise: sends wanted per second per node, against the packets a node sends in a second.
    size = encoded_size(Alive(NodeId("x" * 32), 0, "sim-0:7946", 1, described(NodeId("x" * 32), 50)))
    assert size > CONFIG.packet_budget_bytes - 200  # one per packet: never piggybacked with others
    wanted = N / LOAD_EVERY_S * CONFIG.retransmit_limit(N)
    sent = (CONFIG.gossip_nodes / CONFIG.gossip_interval_s) + 2 / CONFIG.probe_interval_s
    assert wanted > 4 * sent


def test_a_crash_is_known_everywhere_in_time_while_every_node_is_busy() -> None:
    mesh = BusyMesh()
    mesh.run_for(5.0)
    victim = mesh.nodes[9]
    mesh.quiet.add(victim)
    mesh.sim.crash(victim)

    def known_dead() -> bool:
        return all(
            mesh.sim.nodes[other].core.members[victim].status == Status.DEAD for other in mesh.others(victim)
        )

    bound = 2 * CONFIG.expected_detection_s(N)
    took = mesh.run_until(known_dead, bound)
    assert took is not None, f"seed={SEED}: a crash was not known everywhere within {bound:.1f} s"
    live = mesh.others(victim)
    assert all(mesh.sim.nodes[a].core.members[b].status == Status.ALIVE for a in live for b in live if a != b)


def test_a_change_beyond_load_reaches_every_node_in_time_while_every_node_is_busy() -> None:
    mesh = BusyMesh()
    mesh.run_for(5.0)
    node = mesh.nodes[5]
    mesh.quiet.add(node)
    mesh.sim.update_meta(node, described(node, 1, extra=("a-replica-became-ready",)))
    version = mesh.sim.nodes[node].core.me.meta_version

    def everyone_knows() -> bool:
        views = [mesh.sim.nodes[other].core.members[node] for other in mesh.others(node)]
        return all(view.meta_version >= version for view in views)

    bound = 3 * CONFIG.dissemination_s(N)
    took = mesh.run_until(everyone_knows, bound)
    assert took is not None, f"seed={SEED}: the change reached part of the mesh only, in {bound:.2f} s"


def test_load_still_moves_in_every_view() -> None:
    # In the background, load news still spreads: no view of a busy node is left a minute behind.
    mesh = BusyMesh()
    held = {node: mesh.sim.nodes[node].core.me.meta_version for node in mesh.nodes}
    mesh.run_for(10.0)
    observer = mesh.sim.nodes[mesh.nodes[0]].core
    moved = [observer.members[node].meta_version > held[node] for node in mesh.nodes[1:]]
    assert all(moved), f"seed={SEED}: {moved.count(False)} nodes' load never moved in a view in 10 s"


def test_load_views_stay_within_an_update_of_the_owners_while_every_node_is_busy() -> None:
    # Load goes as a delta (``load_news.py``): ~60 bytes instead of the ~1.2 KB of metadata, so
    # gossip carries what every busy node says. Sent whole (before load news), 34 % of the views
    # lagged two updates or more in this mesh.
    mesh = BusyMesh()
    mesh.run_for(10.0)
    cores = [mesh.sim.nodes[node].core for node in mesh.nodes]
    behind = [
        core.members[other.node_id].meta_version <= other.me.meta_version - 2
        for core in cores
        for other in cores
        if other is not core
    ]
    share = behind.count(True) / len(behind)
    assert share < 0.05, f"seed={SEED}: {share:.0%} of the load views are two updates behind or more"

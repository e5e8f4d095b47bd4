"""One scenario on two networks: the simulator and real ZeroMQ stacks must reach the same outcomes.

The fake network ships in the package (docs/testing.md), and this test keeps it honest. Three nodes
join through a seed, one crashes, one leaves; after each step the surviving views are compared with
one expected table. It runs on

- ``Simulation`` with ``encode=True`` (every packet through ``wire.encode``/``wire.decode``), and
- three in-process stacks (``MembershipTransport`` + ``GossipRunner`` + ``Membership``) on 127.0.0.1
  in this test's event loop, where a crash stops the runner and closes the transport without a leave.

If the real transport drifts from the simulator (framing, addressing, limits, timing assumptions),
one of the two stops matching the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import pytest

from meshnode.membership.runner import GossipRunner
from meshnode.membership.transport import MembershipTransport
from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.effects import MemberChanged
from meshnode.mesh.membership import Membership
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.simulation import Change, Simulation
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.trust.keyring import SEAL_OVERHEAD_BYTES, Keyring

CONFIG = MembershipConfig.local()
SEED = 1234
TOKEN = "the token of this conformance mesh, 32+ chars"
# Per step. The simulator needs ~2 simulated seconds; real stacks share 2 busy cores with others.
STEP_TIMEOUT_S = 20.0
# GossipRunner.stop() only cancels two tasks: anything longer means a task ignored its cancellation.
RUNNER_STOP_TIMEOUT_S = 5.0

# {observer name: {member name: status}}
Views = dict[str, dict[str, str]]

EXPECTED: list[tuple[str, Views]] = [
    ("a, b, c joined through a", {name: {"a": "alive", "b": "alive", "c": "alive"} for name in "abc"}),
    ("c crashed", {name: {"a": "alive", "b": "alive", "c": "dead"} for name in "ab"}),
    ("b left", {"a": {"a": "alive", "b": "left", "c": "dead"}}),
]


class Stacks(Protocol):
    """Three membership cores named a, b, c on some network; c and b joined through a."""

    cores: dict[str, Membership]
    # (observer, member, status) for every MemberChanged the cores reported, in order.
    changes: list[tuple[str, str, str]]

    async def crash(self, name: str) -> None:
        """Stop the node without a word."""
        ...

    async def leave(self, name: str) -> None:
        """Start the node's graceful leave."""
        ...

    async def run_until(self, done: Callable[[], bool], timeout_s: float) -> None:
        """Let the network run until ``done()`` or the timeout (the outcome is checked afterwards)."""
        ...


def views(stacks: Stacks, observers: str) -> Views:
    """Each observer's view, by member name."""
    return {
        observer: {
            member.meta.name: member.status.value for member in stacks.cores[observer].members.values()
        }
        for observer in observers
    }


def status(stacks: Stacks, observer: str, name: str) -> Status | None:
    """How ``observer`` sees the node named ``name``."""
    for member in stacks.cores[observer].members.values():
        if member.meta.name == name:
            return member.status
    return None


async def scenario(stacks: Stacks) -> list[tuple[str, Views]]:
    """Join, crash, leave; the surviving views after each step."""
    outcomes: list[tuple[str, Views]] = []

    await stacks.run_until(
        lambda: all(status(stacks, observer, name) == Status.ALIVE for observer in "abc" for name in "abc"),
        STEP_TIMEOUT_S,
    )
    outcomes.append(("a, b, c joined through a", views(stacks, "abc")))

    await stacks.crash("c")
    await stacks.run_until(
        lambda: all(status(stacks, observer, "c") == Status.DEAD for observer in "ab"), STEP_TIMEOUT_S
    )
    outcomes.append(("c crashed", views(stacks, "ab")))

    await stacks.leave("b")
    await stacks.run_until(lambda: status(stacks, "a", "b") == Status.LEFT, STEP_TIMEOUT_S)
    outcomes.append(("b left", views(stacks, "a")))
    return outcomes


class SimulatedStacks:
    """The three nodes on the seeded discrete-event simulator, packets encoded as on the wire."""

    def __init__(self, seed: int) -> None:
        self.changes: list[tuple[str, str, str]] = []
        self.sim = Simulation(CONFIG, seed=seed, encode=True, on_change=self._record)
        a = self.sim.add_node(name="a")
        self.ids = {
            "a": a,
            "b": self.sim.add_node(seeds=[a], name="b"),
            "c": self.sim.add_node(seeds=[a], name="c"),
        }
        self.cores = {name: self.sim.nodes[node].core for name, node in self.ids.items()}

    def _record(self, change: Change) -> None:
        names = {node: name for name, node in self.ids.items()}
        self.changes.append((names[change.observer], names[change.node], change.status.value))

    async def crash(self, name: str) -> None:
        self.sim.crash(self.ids[name])

    async def leave(self, name: str) -> None:
        self.sim.leave(self.ids[name])

    async def run_until(self, done: Callable[[], bool], timeout_s: float) -> None:
        self.sim.run_until(done, self.sim.now + timeout_s)


class ZeroMQStacks:
    """The three nodes as real shells on 127.0.0.1, all in the running event loop."""

    def __init__(self, seed: int) -> None:
        self.mesh_id = f"conformance-{uuid.uuid4().hex[:12]}"
        self.rng = random.Random(seed)
        self.changes: list[tuple[str, str, str]] = []
        self.cores: dict[str, Membership] = {}
        self.runners: dict[str, GossipRunner] = {}

    def start(self, name: str, seeds: tuple[Address, ...]) -> None:
        transport = MembershipTransport(
            "127.0.0.1", 0, max_message_bytes=CONFIG.max_packet_bytes + SEAL_OVERHEAD_BYTES
        )
        addr = Address(f"127.0.0.1:{transport.bind()}")
        core = Membership(
            CONFIG,
            NodeId(uuid.uuid4().hex),
            addr,
            NodeMeta(name=name, mesh=addr),
            rng=random.Random(self.rng.random()),
            now=asyncio.get_running_loop().time(),
            seeds=seeds,
        )

        def record(change: MemberChanged) -> None:
            self.changes.append((name, core.members[change.node].meta.name, change.current.value))

        keyring = Keyring([TOKEN], self.mesh_id)
        runner = GossipRunner(
            core, transport, self.mesh_id, keyring, on_change=record, on_incarnation=lambda _: None
        )
        runner.start()
        self.cores[name], self.runners[name] = core, runner

    async def stop(self, name: str) -> None:
        """Stop the runner and close its transport (no leave)."""
        runner = self.runners.pop(name)
        try:
            await asyncio.wait_for(runner.stop(), RUNNER_STOP_TIMEOUT_S)
        except TimeoutError:
            pytest.fail(f"GossipRunner.stop() of {name} did not return: a task swallowed its cancellation")
        finally:
            runner.transport.close()

    async def crash(self, name: str) -> None:
        await self.stop(name)

    async def leave(self, name: str) -> None:
        runner = self.runners[name]
        # The runner keeps going, so the node gossips its `left` until the test ends.
        runner.carry_out(self.cores[name].leave(runner.now()))

    async def run_until(self, done: Callable[[], bool], timeout_s: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not done() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)  # a poll interval: the stacks run in this loop meanwhile

    async def close(self) -> None:
        for name in list(self.runners):
            await self.stop(name)


@contextlib.asynccontextmanager
async def simulated() -> AsyncIterator[Stacks]:
    yield SimulatedStacks(SEED)


@contextlib.asynccontextmanager
async def zeromq() -> AsyncIterator[Stacks]:
    stacks = ZeroMQStacks(SEED)
    try:
        stacks.start("a", seeds=())
        seed = stacks.cores["a"].me.addr
        stacks.start("b", seeds=(seed,))
        stacks.start("c", seeds=(seed,))
        yield stacks
    finally:
        await stacks.close()


@pytest.mark.parametrize("network", [simulated, zeromq], ids=["simulation", "zeromq"])
async def test_join_crash_leave_reach_the_same_outcomes(
    network: Callable[[], contextlib.AbstractAsyncContextManager[Stacks]],
) -> None:
    async with network() as stacks:
        outcomes = await scenario(stacks)
        changes = list(stacks.changes)

    assert outcomes == EXPECTED
    # A graceful leave is never mistaken for a failure, not even for a moment.
    assert ("a", "b", "dead") not in changes, changes

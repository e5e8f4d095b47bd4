"""The doctor's sealed probe against a real membership stack on 127.0.0.1 (``doctor_gossip.py``).

One ``MembershipTransport`` + ``GossipRunner`` + ``Membership`` runs in this test's event loop. The
probe sealed with its token and mesh id is answered with the node's full state, and leaves the
node's view as it was; a state too large for one packet comes in parts, and the probe lists the
members of all of them; one with another token, or the same token and another mesh id, is dropped
unread, and counted by the reason the doctor then reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from meshnode.cli.doctor_gossip import ask_gossip
from meshnode.membership.runner import GossipRunner
from meshnode.membership.transport import MembershipTransport
from meshnode.mesh import wire
from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.exchange import push_pull_parts
from meshnode.mesh.membership import Membership
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.trust.keyring import SEAL_OVERHEAD_BYTES, Keyring

CONFIG = MembershipConfig.local()
TOKEN = "the token of the doctor's probe test, 32+ chars"
OTHER_TOKEN = "another mesh's token, also 32 characters or more"
MESH = "doctor-test"
# The node answers at once; a silent one is waited for this long.
TIMEOUT_S = 2.0


@pytest.fixture
async def runner() -> AsyncIterator[GossipRunner]:
    async with running(CONFIG) as started:
        yield started


@contextlib.asynccontextmanager
async def running(config: MembershipConfig) -> AsyncIterator[GossipRunner]:
    transport = MembershipTransport(
        "127.0.0.1", 0, max_message_bytes=config.max_packet_bytes + SEAL_OVERHEAD_BYTES
    )
    addr = Address(f"127.0.0.1:{transport.bind()}")
    core = Membership(
        config,
        NodeId(uuid.uuid4().hex),
        addr,
        NodeMeta(name="seed", mesh=addr),
        rng=random.Random(7),
        now=asyncio.get_running_loop().time(),
    )
    runner = GossipRunner(
        core, transport, MESH, Keyring([TOKEN], MESH), on_change=lambda _: None, on_incarnation=lambda _: None
    )
    runner.start()
    try:
        yield runner
    finally:
        await runner.stop()
        transport.close()


async def test_a_node_of_the_mesh_answers_with_its_state_and_keeps_its_view(runner: GossipRunner) -> None:
    answer = await ask_gossip(runner.core.me.addr, Keyring([TOKEN], MESH), MESH, TIMEOUT_S)
    assert answer is not None
    sender, members = answer
    assert sender.node == runner.core.node_id and sender.name == "seed" and sender.addr == runner.core.me.addr
    assert [m.node for m in members] == [runner.core.node_id]
    assert len(list(runner.members())) == 1  # the probe merged nothing


@pytest.mark.parametrize(
    ("tokens", "mesh_id", "reason"),
    [([OTHER_TOKEN], MESH, "unknown_key"), ([TOKEN], "another-mesh", "forged")],
)
async def test_another_token_or_mesh_id_gets_silence_and_a_counted_drop(
    runner: GossipRunner, tokens: list[str], mesh_id: str, reason: str
) -> None:
    answer = await ask_gossip(runner.core.me.addr, Keyring(tokens, mesh_id), mesh_id, TIMEOUT_S)
    assert answer is None
    assert runner.dropped[reason] == 1, dict(runner.dropped)


async def test_nobody_listening_is_silence_too() -> None:
    assert await ask_gossip("127.0.0.1:9", Keyring([TOKEN], MESH), MESH, 0.3) is None


async def test_a_state_in_parts_is_read_to_its_last_part() -> None:
    # A node whose state is over half its packet limit answers in parts (mesh/exchange.py); 16 KiB
    # here stands for the 4 MiB default, which a thousand members of ~2 KB pass.
    async with running(replace(CONFIG, max_packet_bytes=16 * 1024)) as node:
        others = tuple(
            wire.MemberState(
                NodeId(f"{index:032x}"),
                Address(f"127.0.0.1:{20000 + index}"),
                1,
                Status.ALIVE,
                1,
                NodeMeta(name=f"member-{index}", mesh=Address(f"127.0.0.1:{20000 + index}")),
            )
            for index in range(300)
        )
        sender = others[0]
        loop = asyncio.get_running_loop()
        node.core.handle(
            wire.Packet(sender.node, sender.addr, (wire.PushPull(False, False, others),)),
            loop.time(),
            int(time.time() * 1000),
        )
        held = {member.node for member in node.members()}
        assert len(held) == 301
        assert len(push_pull_parts(wire.PushPull(False, False, others), 8 * 1024)) > 5  # the answer's parts
        answer = await ask_gossip(node.core.me.addr, Keyring([TOKEN], MESH), MESH, TIMEOUT_S)
    assert answer is not None
    answered, members = answer
    assert answered.name == "seed"
    assert {member.node for member in members} == held
    assert len(members) == len(held)

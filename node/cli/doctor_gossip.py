"""Asking a node in its own language: one full-state exchange sealed with the mesh's keys.

A TCP connection only says that something listens. To tell "a meshnode of this mesh answers" from
"something answers, but not with this mesh's token and mesh id", ``ask_gossip`` sends what a joining
node sends (``wire.PushPull``, sealed by ``trust/keyring.py`` with the doctor's tokens and the mesh
id as associated data) and waits for the answer. A node of this mesh opens it and answers with its
full state; any other node drops it unread and counts it (``unknown_key`` for another token,
``forged`` for another mesh id), so silence is the answer.

The probe changes nothing in the node it asks: it lists no member states (so nothing is merged),
no records or keys, and names itself by an id and an address (``.invalid``, RFC 2606) that no
member has; the node answers on the connection the probe opened, as it answers any sender it
cannot dial (``relaying.py``).

A large state comes in several parts (``mesh/exchange.py``: past half of ``max_packet_bytes``, about
a thousand members of ~2 KB), sent back to back and not numbered, so after the first the probe reads
on until ``PART_QUIET_S`` passes without another; reading only the first listed a subset of the
members at that size.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import zmq
import zmq.asyncio

from ..membership.transport import zmq_endpoint
from ..mesh import wire
from ..mesh.config import MembershipConfig
from ..mesh.types import Address, NodeId
from ..trust.keyring import SEAL_OVERHEAD_BYTES, Keyring, SealError
from .doctor_facts import Seen

__all__ = ["GossipAnswer", "ask_gossip"]

GossipAnswer = tuple[Seen, tuple[Seen, ...]]  # who answered, and every member it holds

# After a part of the state, the next comes within this (back to back on one connection) or never.
PART_QUIET_S = 0.3


async def ask_gossip(addr: str, keyring: Keyring, mesh_id: str, timeout_s: float) -> GossipAnswer | None:
    """The node at `addr` ("host:port" of its mesh port) and its members, or None if it never answered."""
    config = MembershipConfig()
    probe_id = f"doctor-{secrets.token_hex(6)}"
    packet = wire.Packet(
        NodeId(probe_id), Address(f"{probe_id}.invalid:1"), (wire.PushPull(True, False, ()),)
    )
    context = zmq.asyncio.Context()
    sock = context.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, config.max_packet_bytes + SEAL_OVERHEAD_BYTES)
        try:
            sock.connect(zmq_endpoint(addr))
        except zmq.ZMQError:  # an address libzmq cannot parse or resolve
            return None
        await sock.send(keyring.seal(wire.encode(packet, mesh_id)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        parts: list[tuple[NodeId, Address, wire.PushPull]] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline) as whole:
                while True:
                    part = _read(await sock.recv(), keyring, mesh_id, config)
                    if part is not None:
                        parts.append(part)
                        # The rest of the state follows at once; a pause this long means it is all here.
                        whole.reschedule(min(deadline, loop.time() + PART_QUIET_S))
        return _answer(parts) if parts else None
    finally:
        sock.close(linger=0)
        context.term()


def _read(
    data: bytes, keyring: Keyring, mesh_id: str, config: MembershipConfig
) -> tuple[NodeId, Address, wire.PushPull] | None:
    """The sender and the full state (or part of it) in one received frame, or None for anything else."""
    try:
        packet = wire.decode(
            keyring.open(data), mesh_id, max_bytes=config.max_packet_bytes, max_members=config.max_members
        )
    except (SealError, wire.WireError):
        return None
    for message in packet.messages:
        if isinstance(message, wire.PushPull):
            return packet.sender, packet.sender_addr, message
    return None


def _answer(parts: list[tuple[NodeId, Address, wire.PushPull]]) -> GossipAnswer:
    """Who answered and every member its parts list, each once, in the order they came."""
    sender, sender_addr, _ = parts[0]
    members: dict[str, Seen] = {}
    for _, _, part in parts:
        for state in part.states:
            name = state.meta.name or state.node[:8]
            members.setdefault(state.node, Seen(state.node, name, state.addr, state.status.value))
    answered = members.get(sender) or Seen(sender, sender[:8], sender_addr, "alive")
    return answered, tuple(members.values())

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
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while True:
                    answer = _read(await sock.recv(), keyring, mesh_id, config)
                    if answer is not None:
                        return answer
        return None
    finally:
        sock.close(linger=0)
        context.term()


def _read(data: bytes, keyring: Keyring, mesh_id: str, config: MembershipConfig) -> GossipAnswer | None:
    """The full state in one received frame, or None for anything else."""
    try:
        packet = wire.decode(
            keyring.open(data), mesh_id, max_bytes=config.max_packet_bytes, max_members=config.max_members
        )
    except (SealError, wire.WireError):
        return None
    for message in packet.messages:
        if isinstance(message, wire.PushPull):
            members = tuple(
                Seen(state.node, state.meta.name or state.node[:8], state.addr, state.status.value)
                for state in message.states
            )
            sender = next((m for m in members if m.node == packet.sender), None)
            return sender or Seen(packet.sender, packet.sender[:8], packet.sender_addr, "alive"), members
    return None

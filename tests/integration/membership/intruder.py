"""A raw peer on an agent's mesh port, for tests of what the agent drops (not a test module).

``Intruder`` sends any frames to an agent's membership socket over its own ZeroMQ DEALER, and then
a ping sealed with the mesh's token on the same connection: the ack proves that the agent has handled
everything sent before it. The agent answers on that connection (it answers a sender that is not a
member yet on the connection it came on) or on one it opens to the intruder's address; the intruder
listens on both. ``drops_since`` reads what the agent counted meanwhile.
"""

from __future__ import annotations

import itertools
import re
from contextlib import closing
from typing import Any

import msgpack
import zmq

from meshnode.membership.transport import zmq_endpoint
from meshnode.mesh import wire
from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.types import Address, NodeId
from meshnode.trust.keyring import Keyring
from tests.integration.agents import AgentProcess, wait_for

__all__ = ["ACK_TIMEOUT_S", "INTRUDER", "LIMITS", "Intruder", "dropped_by_reason", "drops_since", "pack"]

INTRUDER = NodeId("intruder")
LIMITS = MembershipConfig.local()
# A ping sent after the garbage is answered once everything before it on that connection was handled.
ACK_TIMEOUT_S = 15.0


class Intruder:
    """Speaks to an agent's mesh port as a peer would, and receives its answers on its own socket.

    It holds the mesh's token only to confirm: a ping sealed with it is answered, so it can tell when
    an agent has handled everything sent before (``send_and_confirm``), whoever the frames before it
    claim to be from and whatever they are sealed with.
    """

    def __init__(self, mesh_id: str, token: str) -> None:
        self.mesh_id = mesh_id
        self.token = token
        self.keyring = Keyring([token], mesh_id)
        self.context = zmq.Context()
        self.inbox = self.context.socket(zmq.ROUTER)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.addr = Address(f"127.0.0.1:{self.inbox.bind_to_random_port('tcp://127.0.0.1')}")
        self._seqs = itertools.count(1)

    def close(self) -> None:
        self.inbox.close()
        self.context.term()

    def packet(self, messages: list[Any], *, mesh_id: str | None = None, version: int | None = None) -> bytes:
        """A packet from the intruder, unsealed, with any version and mesh id; messages as wire lists."""
        version = wire.PROTOCOL_VERSION if version is None else version
        return pack([version, mesh_id or self.mesh_id, INTRUDER, self.addr, messages])

    def send_and_confirm(self, target: AgentProcess, messages: list[list[bytes]]) -> None:
        """Send the messages (each a list of frames), then a sealed ping, on one connection; wait for the ack.

        ZeroMQ keeps the order of one connection and the agent handles packets one at a time, so
        when the ping's ack is back every message before it has been opened or dropped.
        """
        seq = next(self._seqs)
        ping = wire.encode(
            wire.Packet(INTRUDER, self.addr, (wire.Ping(seq, NodeId(target.node_id)),)), self.mesh_id
        )
        with closing(self.context.socket(zmq.DEALER)) as dealer:
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(zmq_endpoint(target.mesh))
            for frames in messages:
                dealer.send_multipart(frames)
            dealer.send(self.keyring.seal(ping))
            self._wait_ack(seq, target, dealer)

    def _wait_ack(self, seq: int, target: AgentProcess, dealer: zmq.Socket[bytes]) -> None:
        def acked() -> bool:
            for sock in (dealer, self.inbox):
                while sock.poll(0):
                    packet = wire.decode(
                        self.keyring.open(sock.recv_multipart()[-1]),
                        self.mesh_id,
                        max_bytes=LIMITS.max_packet_bytes,
                        max_members=10,
                    )
                    if wire.Ack(seq) in packet.messages:
                        return True
            target.check_running()
            return False

        wait_for(acked, ACK_TIMEOUT_S, message=lambda: f"no ack for ping {seq}\n{target.describe()}")

    def send_oversized(self, target: AgentProcess, size: int) -> None:
        """Send one frame of ``size`` bytes and wait until the agent's libzmq cuts the connection."""
        with closing(self.context.socket(zmq.DEALER)) as dealer:
            dealer.setsockopt(zmq.LINGER, 0)
            monitor = dealer.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            try:
                dealer.connect(zmq_endpoint(target.mesh))
                dealer.send(b"\0" * size)
                assert monitor.poll(int(ACK_TIMEOUT_S * 1000)), (
                    f"the agent kept a connection that sent a {size}-byte frame\n{target.describe()}"
                )
            finally:
                dealer.disable_monitor()
                monitor.close()


def pack(value: object) -> bytes:
    """``value`` as msgpack."""
    packed = msgpack.packb(value)
    assert isinstance(packed, bytes)
    return packed


def dropped_by_reason(agent: AgentProcess) -> dict[str, float]:
    """``meshnode_gossip_dropped_total`` by its ``reason`` label, from ``GET /metrics``."""
    response = agent.get("/metrics")
    assert response.status_code == 200, f"GET /metrics answered {response.status_code}\n{agent.describe()}"
    counts: dict[str, float] = {}
    for line in response.text.splitlines():
        match = re.fullmatch(r"meshnode_gossip_dropped_total\{([^}]*)\}\s+(\S+)(\s+\d+)?", line.strip())
        if match:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[1]))
            counts[labels["reason"]] = counts.get(labels["reason"], 0.0) + float(match[2])
    return counts


def drops_since(agent: AgentProcess, before: dict[str, float]) -> dict[str, float]:
    """Packets the agent dropped since ``before``, by reason, leaving out reasons that did not move.

    ``send`` counts this agent's own sends that found a peer's queue full, not what it received.
    """
    after = dropped_by_reason(agent)
    moved = {reason: after.get(reason, 0.0) - before.get(reason, 0.0) for reason in {*before, *after}}
    return {reason: count for reason, count in moved.items() if count and reason != "send"}

"""The state of one probe round of the failure detector (SWIM): this node's own probe, and probes
it relays for others (``Membership`` owns both; nothing here reads a clock or sends anything).

A probe pings its target directly; without an ack by ``indirect_at`` it asks a few peers to ping
the target too (and sends a second direct ping); without any ack by ``fail_at`` the target becomes
suspect. Nacks from relays tell this node whether its own network is the problem (Lifeguard's local
health). A direct ack also measures the round-trip time that routing uses for locality.
"""

from __future__ import annotations

from dataclasses import dataclass

from .types import Address, NodeId

__all__ = ["Probe", "Relay"]


@dataclass
class Probe:
    """This node's probe in progress."""

    target: NodeId
    seq: int
    sent_at: float
    indirect_at: float
    fail_at: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(frozen=True)
class Relay:
    """A ping this node sends on behalf of a peer: where the ack goes back to, and until when."""

    origin_addr: Address
    origin_seq: int
    expires_at: float
    want_nack: bool

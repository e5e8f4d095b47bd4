"""What the membership core asks its shell to do: the effects ``handle`` and ``tick`` return."""

from __future__ import annotations

from dataclasses import dataclass

from .access import ApiKey
from .keyring_record import KeyringRecord
from .records import Record
from .types import Address, NodeId, Status
from .wire import Packet


@dataclass(frozen=True)
class Send:
    """Effect: send this packet to this address (best effort, like a datagram)."""

    addr: Address
    packet: Packet


@dataclass(frozen=True)
class MemberChanged:
    """Effect: a member appeared or changed status (``previous`` None for a new member)."""

    node: NodeId
    previous: Status | None
    current: Status


@dataclass(frozen=True)
class IncarnationChanged:
    """Effect: this node raised its own incarnation; persist it so a restart goes higher."""

    incarnation: int


@dataclass(frozen=True)
class RecordChanged:
    """Effect: a deployment record won (a new one, or one written here); persist it, re-plan."""

    record: Record


@dataclass(frozen=True)
class KeyChanged:
    """Effect: an API key was added or revoked (here or by gossip); persist it."""

    key: ApiKey


@dataclass(frozen=True)
class KeyringChanged:
    """Effect: a newer keyring (a token rotation's step) won; seal, open and connect with it."""

    record: KeyringRecord


Effect = Send | MemberChanged | IncarnationChanged | RecordChanged | KeyChanged | KeyringChanged

"""The messages that let a node nobody can dial take part in the mesh (issue 15; docs/edge.md).

They travel in ordinary membership packets (``wire.py``: sealed, versioned, validated) but are for
the shells, not the SWIM core: the runner takes them out of a packet before the core sees it.

- ``LinkHello``: "send what is for me over the connection this came on". A node that cannot be
  dialed sends it to each of its relays when it picks them and every ``relay_keepalive_s`` after,
  which also keeps the NAT's mapping of that connection alive.
- ``DialMe(nonce)``: "dial the address this packet names as mine and send ``Dialed(nonce)``
  there". How a node learns whether peers can reach it: the answer arrives on a connection a peer
  opened to it, or not at all.
- ``Dialed(nonce)``: that answer.
- ``Relayed(to, data)``: "pass `data` (a whole sealed packet) to node `to` over its link to you".
  The relay cannot read `data`'s messages any better than any member can, and needs not: it
  forwards the bytes as they came.

Every field is bounded here, as in the rest of the wire format: nonces are int64, ``data`` at most
``max_packet_bytes`` (the packet that carries it is bounded by the same limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .bounds import INT64_MAX, in_range
from .types import NodeId

__all__ = [
    "DialMe",
    "Dialed",
    "LinkHello",
    "LinkKind",
    "LinkMessage",
    "Relayed",
    "link_from_list",
    "link_to_list",
]


class LinkKind(IntEnum):
    """Message kinds of this module, after ``wire.Kind``'s."""

    LINK_HELLO = 20
    DIAL_ME = 21
    DIALED = 22
    RELAYED = 23


@dataclass(frozen=True)
class LinkHello:
    """Send what is for the sender over the connection this arrived on."""


@dataclass(frozen=True)
class DialMe:
    """Dial the sender's advertised mesh address and answer ``Dialed(nonce)`` there."""

    nonce: int


@dataclass(frozen=True)
class Dialed:
    """The answer to ``DialMe(nonce)``, sent on a connection the answering node opened."""

    nonce: int


@dataclass(frozen=True)
class Relayed:
    """A sealed packet for node `to`, which the receiver passes on over `to`'s link."""

    to: NodeId
    data: bytes


LinkMessage = LinkHello | DialMe | Dialed | Relayed


def link_to_list(message: LinkMessage) -> list[Any]:
    """The msgpack-ready form of one message."""
    match message:
        case LinkHello():
            return [LinkKind.LINK_HELLO]
        case DialMe(nonce):
            return [LinkKind.DIAL_ME, nonce]
        case Dialed(nonce):
            return [LinkKind.DIALED, nonce]
        case Relayed(to, data):
            return [LinkKind.RELAYED, to, data]


def link_from_list(kind: int, fields: list[Any], node_id: Any, max_data_bytes: int) -> LinkMessage | None:
    """The message of `kind` with `fields`, None for a kind not of this module; ValueError if malformed.

    `node_id` is the wire's own node id check (it raises ValueError), so ids are held to one rule.
    """
    match kind, fields:
        case LinkKind.LINK_HELLO, []:
            return LinkHello()
        case LinkKind.DIAL_ME, [nonce]:
            return DialMe(_nonce(nonce))
        case LinkKind.DIALED, [nonce]:
            return Dialed(_nonce(nonce))
        case LinkKind.RELAYED, [to, data]:
            if not isinstance(data, bytes) or not 0 < len(data) <= max_data_bytes:
                raise ValueError(f"relayed data must be 1..{max_data_bytes} bytes")
            return Relayed(node_id(to), data)
    if kind in LinkKind._value2member_map_:
        raise ValueError(f"wrong field count {len(fields)} for message kind {kind}")
    return None


def _nonce(value: object) -> int:
    if not in_range(value, INT64_MAX):
        raise ValueError(f"nonces must be integers in [0, {INT64_MAX}]")
    return value

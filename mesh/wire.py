"""Membership wire format: msgpack, versioned, tied to one mesh, validated strictly.

A packet is a msgpack array::

    [PROTOCOL_VERSION, mesh_id, sender_id, sender_addr, [message, ...]]

and each message an array whose first item is its kind (``Kind``). Decoding checks every type, size
and count before anything reaches the core; a packet that fails is rejected whole with a
``WireError`` whose ``reason`` the shell counts (``malformed``, ``oversized``, ``version``,
``mesh``). A message of a kind this version does not know (a later version's) is skipped and the
rest of its packet taken, so a new kind of message never cuts older nodes off the pings it rides on.
Nothing here ever unpickles or evaluates: msgpack extension types are refused (the built-in
Timestamp decodes to an object that every type check then rejects). Incarnations, metadata versions
and record stamps must lie within their documented maxima (``bounds.py``), sequence numbers within
an int64; past them a packet is ``malformed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

import msgpack

from .access import MAX_KEYS, ApiKey
from .bounds import INT64_MAX, MAX_INCARNATION, MAX_META_VERSION, MAX_STAMP
from .deployment import DeploymentSpec, SpecError, check_name
from .keyring_record import KeyringRecord
from .load_news import LOAD_KIND, Load, load_from_list, load_to_list
from .metadata import MetaError, NodeMeta
from .records import Record
from .relay_wire import LinkMessage, link_from_list, link_to_list
from .types import Address, NodeId, Status
from .wire_fields import address as _address
from .wire_fields import counter as _counter
from .wire_fields import flag as _flag
from .wire_fields import node_id as _node_id

PROTOCOL_VERSION = 1
MAX_MESSAGES = 512
MAX_COUNTER = INT64_MAX  # sequence numbers
MAX_RECORDS = 10_000
MAX_KIND = 255  # message kinds of later versions lie in (0, MAX_KIND]; skipped where not known

RejectReason = Literal["malformed", "oversized", "version", "mesh"]


class WireError(ValueError):
    """A packet that must be dropped; ``reason`` says which counter to bump."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectReason = reason
        self.detail = detail


class Kind(IntEnum):
    """Message kinds on the membership socket."""

    PING = 1
    INDIRECT_PING = 2
    ACK = 3
    NACK = 4
    ALIVE = 5
    SUSPECT = 6
    DEAD = 7
    PUSH_PULL = 8
    RECORD = 9
    KEY = 10
    KEYRING = 11
    LOAD = LOAD_KIND  # load_news.py


@dataclass(frozen=True)
class Ping:
    """Are you alive? Names the target so a reused address cannot answer for another node."""

    seq: int
    target: NodeId


@dataclass(frozen=True)
class IndirectPing:
    """Please probe `target` for me and relay its ack (or a nack if it stays silent)."""

    seq: int
    target: NodeId
    target_addr: Address
    want_nack: bool


@dataclass(frozen=True)
class Ack:
    """Answer to a ping, direct or relayed."""

    seq: int


@dataclass(frozen=True)
class Nack:
    """Lifeguard: the relay is alive but heard nothing from the target."""

    seq: int


@dataclass(frozen=True)
class Alive:
    """A node is alive at this incarnation, with this address and metadata."""

    node: NodeId
    incarnation: int
    addr: Address
    meta_version: int
    meta: NodeMeta


@dataclass(frozen=True)
class Suspect:
    """`source` suspects `node` at this incarnation."""

    node: NodeId
    incarnation: int
    source: NodeId


@dataclass(frozen=True)
class Dead:
    """`source` declares `node` dead; when source is the node itself it has left."""

    node: NodeId
    incarnation: int
    source: NodeId


@dataclass(frozen=True)
class MemberState:
    """One row of a full state exchange."""

    node: NodeId
    addr: Address
    incarnation: int
    status: Status
    meta_version: int
    meta: NodeMeta


@dataclass(frozen=True)
class PushPull:
    """Full state (anti-entropy and join). The receiver merges it and answers if asked."""

    reply_wanted: bool
    join: bool
    states: tuple[MemberState, ...]
    # Every deployment record the sender holds (``records.py``), tombstones included.
    records: tuple[Record, ...] = ()
    # Every API key the sender holds (``access.py``), revoked ones included.
    keys: tuple[ApiKey, ...] = ()
    # The mesh's tokens as the last rotation wrote them (``keyring_record.py``); None before any.
    keyring: KeyringRecord | None = None


# A deployment Record travels as a message of its own too (``Kind.RECORD``), piggybacked like news.
# The link messages (``relay_wire.py``) are for the shells; the core never sees them.
_Swim = Ping | IndirectPing | Ack | Nack | Alive | Suspect | Dead | PushPull | Load
Message = _Swim | Record | ApiKey | KeyringRecord | LinkMessage
Gossip = Alive | Suspect | Dead | Load | Record | ApiKey | KeyringRecord


@dataclass(frozen=True)
class Packet:
    """What travels in one ZeroMQ frame: a sender and its messages."""

    sender: NodeId
    sender_addr: Address
    messages: tuple[Message, ...]


# -- encoding ------------------------------------------------------------------------------


def message_to_list(message: Message) -> list[Any]:
    """The msgpack-ready form of one message."""
    match message:
        case Ping(seq, target):
            return [Kind.PING, seq, target]
        case IndirectPing(seq, target, target_addr, want_nack):
            return [Kind.INDIRECT_PING, seq, target, target_addr, want_nack]
        case Ack(seq):
            return [Kind.ACK, seq]
        case Nack(seq):
            return [Kind.NACK, seq]
        case Alive(node, incarnation, addr, meta_version, meta):
            return [Kind.ALIVE, node, incarnation, addr, meta_version, meta.to_wire()]
        case Suspect(node, incarnation, source):
            return [Kind.SUSPECT, node, incarnation, source]
        case Dead(node, incarnation, source):
            return [Kind.DEAD, node, incarnation, source]
        case PushPull(reply_wanted, join, states, records, keys, keyring):
            rows = [
                [s.node, s.addr, s.incarnation, s.status.value, s.meta_version, s.meta.to_wire()]
                for s in states
            ]
            tables: list[Any] = [[_record_row(r) for r in records], [k.to_wire() for k in keys]]
            if keyring is not None:
                tables.append(keyring.to_wire())
            elif not keys:
                tables.pop()  # what nodes before API keys send
            return [Kind.PUSH_PULL, reply_wanted, join, rows, *tables]
        case Record():
            return [Kind.RECORD, *_record_row(message)]
        case ApiKey():
            return [Kind.KEY, *message.to_wire()]
        case KeyringRecord():
            return [Kind.KEYRING, *message.to_wire()]
        case Load():
            return load_to_list(message)
        case _:
            return link_to_list(message)


def _record_row(record: Record) -> list[Any]:
    spec = None if record.spec is None else record.spec.wire
    return [record.name, record.stamp, record.origin, spec]


def encoded_size(message: Message) -> int:
    """Bytes this message adds to a packet (used for the piggyback budget)."""
    return len(msgpack.packb(message_to_list(message)))


def encode(packet: Packet, mesh_id: str) -> bytes:
    """Serialize a packet for `mesh_id`."""
    body = [message_to_list(m) for m in packet.messages]
    return msgpack.packb([PROTOCOL_VERSION, mesh_id, packet.sender, packet.sender_addr, body])


# -- decoding ------------------------------------------------------------------------------


def _refuse_ext(code: int, data: bytes) -> Any:
    raise WireError("malformed", f"msgpack extension type {code} is not allowed")


def decode(data: bytes, mesh_id: str, *, max_bytes: int, max_members: int) -> Packet:
    """Parse and validate one packet; raise WireError on anything unexpected."""
    if len(data) > max_bytes:
        raise WireError("oversized", f"{len(data)} bytes, limit {max_bytes}")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_refuse_ext, use_list=True)
    except WireError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise WireError("malformed", f"not msgpack: {type(exc).__name__}") from exc
    if not isinstance(raw, list) or len(raw) != 5:
        raise WireError("malformed", "packet must be a 5-item array")
    version, packet_mesh, sender, sender_addr, body = raw
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise WireError("version", f"protocol version {version!r}, expected {PROTOCOL_VERSION}")
    if type(packet_mesh) is not str or packet_mesh != mesh_id:
        raise WireError("mesh", "packet belongs to another mesh")
    if not isinstance(body, list) or len(body) > MAX_MESSAGES:
        raise WireError("malformed", f"messages must be an array of at most {MAX_MESSAGES}")
    try:
        parsed = (_message(item, max_members, max_bytes) for item in body)
        return Packet(_node_id(sender), _address(sender_addr), tuple(m for m in parsed if m is not None))
    except (MetaError, ValueError, TypeError) as exc:
        if isinstance(exc, WireError):
            raise
        raise WireError("malformed", str(exc)) from exc


def _message(item: object, max_members: int, max_bytes: int) -> Message | None:
    """One message; None for a kind this version does not know (a later one's), which is skipped."""
    if not isinstance(item, list) or not item:
        raise ValueError("message must be a non-empty array")
    kind, *fields = item
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise ValueError("message kind must be an integer")
    match kind, fields:
        case Kind.PING, [seq, target]:
            return Ping(_counter(seq, MAX_COUNTER), _node_id(target))
        case Kind.INDIRECT_PING, [seq, target, target_addr, want_nack]:
            return IndirectPing(
                _counter(seq, MAX_COUNTER), _node_id(target), _address(target_addr), _flag(want_nack)
            )
        case Kind.ACK, [seq]:
            return Ack(_counter(seq, MAX_COUNTER))
        case Kind.NACK, [seq]:
            return Nack(_counter(seq, MAX_COUNTER))
        case Kind.ALIVE, [node, incarnation, addr, meta_version, meta]:
            return Alive(
                _node_id(node),
                _counter(incarnation, MAX_INCARNATION),
                _address(addr),
                _counter(meta_version, MAX_META_VERSION),
                NodeMeta.from_wire(meta),
            )
        case Kind.SUSPECT, [node, incarnation, source]:
            return Suspect(_node_id(node), _counter(incarnation, MAX_INCARNATION), _node_id(source))
        case Kind.DEAD, [node, incarnation, source]:
            return Dead(_node_id(node), _counter(incarnation, MAX_INCARNATION), _node_id(source))
        case Kind.PUSH_PULL, [reply_wanted, join, rows, *more] if len(more) <= 3:
            if not isinstance(rows, list):
                raise ValueError("push-pull rows must be an array")
            if len(rows) > max_members:
                raise WireError("oversized", f"push-pull must list at most {max_members} members")
            records = more[0] if more else []
            keys = more[1] if len(more) >= 2 else []
            if not isinstance(records, list) or not isinstance(keys, list):
                raise ValueError("push-pull records and keys must be arrays")
            if len(records) > MAX_RECORDS or len(keys) > MAX_KEYS:
                raise WireError("oversized", f"push-pull carries at most {MAX_RECORDS} records and keys each")
            return PushPull(
                _flag(reply_wanted),
                _flag(join),
                tuple(_member_state(row) for row in rows),
                tuple(_record(row) for row in records),
                tuple(ApiKey.from_wire(row) for row in keys),
                KeyringRecord.from_wire(more[2]) if len(more) == 3 else None,
            )
        case Kind.RECORD, [name, stamp, origin, spec]:
            return _record([name, stamp, origin, spec])
        case Kind.KEY, row:
            return ApiKey.from_wire(row)
        case Kind.KEYRING, row:
            return KeyringRecord.from_wire(row)
        case Kind.LOAD, row:
            return load_from_list(row)
    link = link_from_list(kind, fields, _node_id, max_bytes)
    if link is not None:
        return link
    if kind in Kind._value2member_map_ or not 0 < kind <= MAX_KIND:
        raise ValueError(f"unknown message kind {kind} or wrong field count {len(fields)}")
    # A later version's message: skipped, and the rest of the packet taken (as memberlist takes the
    # parts of a compound message it knows), so a node of this version keeps probing and hearing
    # a newer one that piggybacks something new on its pings.
    return None


def _member_state(row: object) -> MemberState:
    if not isinstance(row, list) or len(row) != 6:
        raise ValueError("member state must be a 6-item array")
    node, addr, incarnation, status, meta_version, meta = row
    if status not in Status._value2member_map_:
        raise ValueError(f"unknown member status {status!r}")
    return MemberState(
        _node_id(node),
        _address(addr),
        _counter(incarnation, MAX_INCARNATION),
        Status(status),
        _counter(meta_version, MAX_META_VERSION),
        NodeMeta.from_wire(meta),
    )


def _record(row: object) -> Record:
    if not isinstance(row, list) or len(row) != 4:
        raise ValueError("a deployment record must be a 4-item array")
    name, stamp, origin, spec = row
    try:
        return Record(
            check_name(name),
            _counter(stamp, MAX_STAMP),
            _node_id(origin),
            None if spec is None else DeploymentSpec.from_wire(spec),
        )
    except SpecError as exc:
        raise ValueError(f"deployment record {name!r}: {exc}") from exc

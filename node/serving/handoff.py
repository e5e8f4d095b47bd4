"""What crosses a replica's handoff socket: peers' links to its worker, and the worker's reports back.

The socket is a ``SOCK_SEQPACKET`` pair the agent makes for each worker (``Replica``), beside the
pipe that carries envelopes. Each packet is one msgpack map:

- agent to worker, with the connection's descriptor attached (``SCM_RIGHTS``): the link's two
  directions (key and next frame number), the bytes read from it that make no whole frame yet, the
  peer's address, and the limits the worker applies to its calls (``encode_handed``);
- worker to agent: the calls it holds from links, the oldest one's seconds to its deadline, how many
  it answered since its last report and its smoothed service time, and those calls' request ids
  when the agent logs at debug level, so a request stays traced on every node it crossed
  (``encode_report``).

Both ends are this node's own processes, and both still read with bounds: a worker runs an app's
code, and nothing it writes may make the agent hold more than a report's size or fail.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

import msgpack

from ..dataplane.sealed_stream import SealedStream, StreamLimits
from ..mesh.envelope import MAX_ID_CHARS
from ..trust.sealed import MAX_FRAMES, Direction, LinkKeys

__all__ = [
    "HANDOFF_BYTES",
    "MAX_SERVED",
    "Handed",
    "Report",
    "Traced",
    "encode_handed",
    "encode_report",
    "read_handed",
    "read_report",
]

HANDOFF_BYTES = 256 * 1024  # one packet's largest size, either way
MAX_SERVED = 4096  # traced calls one report names at most
_MAX_COUNT = 1_000_000  # calls, slots, capacity: no node runs more
_MAX_SECONDS = 1e7
_KEY_BYTES = 32


@dataclass(eq=False)
class Handed:
    """A peer's link, taken over by the worker, and the bounds of its calls."""

    sock: socket.socket
    stream: SealedStream
    capacity: int  # calls the replica holds at once, the agent's and the links' together
    slots: int  # calls it runs at once
    max_in_flight: int  # calls of this link at once
    chunk_bytes: int  # a file answer larger than this goes in pieces
    trace: bool = False  # report the request ids of its calls (the agent logs each, at debug level)
    calls: int = 0  # held now


Traced = tuple[str, float]  # a call's request id and its seconds in the worker


@dataclass(frozen=True)
class Report:
    """A worker's calls from links, as its last report told them."""

    in_flight: int
    oldest_s: float | None  # seconds from the report to the oldest call's deadline (negative: past)
    served: int  # calls answered since the last report
    service_s: float | None  # the worker's smoothed service time of its lanes' calls (SpeedMeter's)
    traced: tuple[Traced, ...] = ()  # the answered calls by name, when the links were handed with ``trace``


def encode_handed(
    keys: LinkKeys,
    held: bytes,
    peer: str,
    *,
    capacity: int,
    slots: int,
    max_in_flight: int,
    chunk_bytes: int,
    trace: bool = False,
) -> bytes:
    """The packet that goes with a link's descriptor to the worker."""
    send_key, send_count = keys.send.state()
    receive_key, receive_count = keys.receive.state()
    return msgpack.packb(
        {
            "send": [send_key, send_count],
            "receive": [receive_key, receive_count],
            "held": held,
            "peer": peer,
            "capacity": capacity,
            "slots": slots,
            "max_in_flight": max_in_flight,
            "chunk_bytes": chunk_bytes,
            "trace": trace,
        }
    )


def read_handed(
    data: bytes,
    fds: list[int],
    limits: StreamLimits,
    on_frame: Callable[[Handed, bytes], None],
    on_close: Callable[[Handed], None],
    on_open: Callable[[Handed], None] = lambda _link: None,
) -> Handed | None:
    """The link a packet hands over, its stream made (not yet connected); None when it does not read."""
    socks = [socket.socket(fileno=fd) for fd in fds]
    fields = _map(data)
    directions = [_direction(fields.get(name)) for name in ("send", "receive")] if fields else []
    held, peer, trace = fields.get("held"), fields.get("peer"), fields.get("trace", False)
    numbers: list[Any] = [fields.get(name) for name in ("capacity", "slots", "max_in_flight", "chunk_bytes")]
    if (
        len(socks) != 1
        or None in directions
        or not isinstance(held, bytes)
        or not isinstance(peer, str)
        or not isinstance(trace, bool)
        or not all(_number(n, int) and 0 < n <= _MAX_COUNT * 1024 for n in numbers)
    ):
        for sock in socks:
            sock.close()
        return None
    send, receive = directions
    assert send is not None and receive is not None
    made: list[Handed] = []  # the stream's callbacks name the link it becomes part of
    stream = SealedStream(
        limits,
        lambda _stream, payload: on_frame(made[0], payload),
        adopted=(LinkKeys(send, receive), held),
        on_open=lambda _stream: on_open(made[0]),  # on connecting, before the bytes held are read
        on_close=lambda _stream: on_close(made[0]),
    )
    stream.peer = peer
    capacity, slots, max_in_flight, chunk_bytes = (int(number) for number in numbers)
    made.append(Handed(socks[0], stream, capacity, slots, max_in_flight, chunk_bytes, trace))
    return made[0]


def encode_report(
    in_flight: int, oldest_s: float | None, served: int, service_s: float | None, traced: list[Traced]
) -> bytes:
    """The worker's report to the agent (the newest ``MAX_SERVED`` traced calls)."""
    fields = {"in_flight": in_flight, "oldest_s": oldest_s, "served": served, "service_s": service_s}
    return msgpack.packb({**fields, "traced": traced[-MAX_SERVED:]})


def read_report(data: bytes) -> Report | None:
    """A report from the worker; None when it does not read."""
    fields = _map(data)
    in_flight: Any = fields.get("in_flight")
    served: Any = fields.get("served")
    oldest, service, traced = fields.get("oldest_s"), fields.get("service_s"), fields.get("traced")
    if not all(_number(n, int) and 0 <= n <= _MAX_COUNT * 1000 for n in (in_flight, served)):
        return None
    for seconds in (oldest, service):
        if seconds is not None and not (_number(seconds, float) and abs(seconds) <= _MAX_SECONDS):
            return None
    if service is not None and service < 0:
        return None
    if not isinstance(traced, list) or len(traced) > MAX_SERVED:
        return None
    rows: list[Traced] = []
    for row in traced:
        if not (isinstance(row, list) and len(row) == 2 and _number(row[1], float)):
            return None
        rid, seconds = row
        if not (isinstance(rid, str) and 0 < len(rid) <= MAX_ID_CHARS and 0 <= seconds <= _MAX_SECONDS):
            return None
        rows.append((rid, float(seconds)))
    return Report(
        int(in_flight),
        None if oldest is None else float(oldest),
        int(served),
        None if service is None else float(service),
        tuple(rows),
    )


def _number(value: object, kind: type[int] | type[float]) -> TypeGuard[float]:
    """An int (or, for a float, an int or float), never a bool."""
    allowed = (int,) if kind is int else (int, float)
    return isinstance(value, allowed) and not isinstance(value, bool)


def _map(data: bytes) -> dict[str, Any]:
    try:
        fields = msgpack.unpackb(data, raw=False)  # a packet holds at most HANDOFF_BYTES
    except (ValueError, msgpack.UnpackException):
        return {}
    return fields if isinstance(fields, dict) else {}


def _direction(value: object) -> Direction | None:
    if not (isinstance(value, list) and len(value) == 2):
        return None
    key, count = value
    if not (isinstance(key, bytes) and len(key) == _KEY_BYTES and _number(count, int)):
        return None
    return Direction(key, int(count)) if 0 <= count < MAX_FRAMES else None

"""What crosses a worker's handoff socket, read back with its bounds (``serving/handoff.py``)."""

from __future__ import annotations

import math
import os
import socket

import msgpack
import pytest

from meshnode.dataplane.sealed_stream import SealedStream, StreamLimits
from meshnode.serving.handoff import (
    MAX_SERVED,
    Handed,
    Report,
    encode_handed,
    encode_report,
    read_handed,
    read_report,
)
from meshnode.trust.sealed import Direction, LinkKeys

LIMITS = StreamLimits(max_frame_bytes=1 << 20)
BOUNDS = {"capacity": 9, "slots": 2, "max_in_flight": 64, "chunk_bytes": 4096}


def _keys() -> LinkKeys:
    send, receive = Direction(bytes(range(32)), 7), Direction(bytes(range(32, 64)), 3)
    return LinkKeys(send, receive)


def _read(packet: bytes, fds: list[int]) -> Handed | None:
    return read_handed(packet, fds, LIMITS, lambda _link, _payload: None, lambda _link: None)


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_a_handed_link_reads_back_with_its_keys_where_they_stopped_and_its_bounds() -> None:
    ours, theirs = socket.socketpair()
    keys = _keys()
    packet = encode_handed(keys, b"\x00\x00", "10.0.0.2:4100", **BOUNDS)
    try:
        handed = _read(packet, [os.dup(theirs.fileno())])
        assert handed is not None
        assert isinstance(handed.stream, SealedStream) and handed.stream.peer == "10.0.0.2:4100"
        assert (handed.capacity, handed.slots, handed.max_in_flight, handed.chunk_bytes) == (9, 2, 64, 4096)
        assert handed.calls == 0
        handed.sock.close()
    finally:
        ours.close()
        theirs.close()


@pytest.mark.parametrize(
    "change",
    [
        {"send": [b"short key", 0]},
        {"receive": [bytes(32), -1]},
        {"receive": [bytes(32), 2**64 - 1]},
        {"held": "not bytes"},
        {"peer": 5},
        {"capacity": 0},
        {"slots": "2"},
        {"chunk_bytes": 2**62},
        {"trace": "yes"},
    ],
)
def test_a_handed_link_that_does_not_read_is_refused_and_its_descriptor_closed(
    change: dict[str, object],
) -> None:
    fields = msgpack.unpackb(encode_handed(_keys(), b"", "peer", **BOUNDS))
    fields.update(change)
    ours, theirs = socket.socketpair()
    fd = os.dup(theirs.fileno())
    try:
        assert _read(msgpack.packb(fields), [fd]) is None
        assert _closed(fd)
    finally:
        ours.close()
        theirs.close()


def test_a_packet_with_no_descriptor_or_two_or_no_map_is_refused() -> None:
    packet = encode_handed(_keys(), b"", "peer", **BOUNDS)
    ours, theirs = socket.socketpair()
    try:
        assert _read(packet, []) is None
        two = [os.dup(theirs.fileno()), os.dup(theirs.fileno())]
        assert _read(packet, two) is None
        assert all(_closed(fd) for fd in two)
        for garbage in (b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb("text")):
            fd = os.dup(theirs.fileno())
            assert _read(garbage, [fd]) is None
            assert _closed(fd)
    finally:
        ours.close()
        theirs.close()


def test_a_report_reads_back() -> None:
    packet = encode_report(3, -0.25, 40, 0.002, [("trace-1", 0.5)])
    assert read_report(packet) == Report(3, -0.25, 40, 0.002, (("trace-1", 0.5),))
    assert read_report(encode_report(0, None, 0, None, [])) == Report(0, None, 0, None, ())


def test_a_report_names_only_the_newest_traced_calls() -> None:
    traced = [(f"r-{n}", float(n)) for n in range(MAX_SERVED + 10)]
    report = read_report(encode_report(0, None, len(traced), 0.1, traced))
    assert report is not None and len(report.traced) == MAX_SERVED and report.traced[0] == ("r-10", 10.0)


GOOD = {"in_flight": 1, "oldest_s": None, "served": 2, "service_s": 0.01, "traced": []}


@pytest.mark.parametrize(
    "change",
    [
        {"in_flight": -1},
        {"in_flight": 10**12},
        {"in_flight": True},
        {"served": -1},
        {"served": 1.5},
        {"oldest_s": math.inf},
        {"oldest_s": math.nan},
        {"oldest_s": "soon"},
        {"service_s": -0.1},
        {"service_s": math.nan},
        {"traced": [["r", -1.0]]},
        {"traced": [["r", math.nan]]},
        {"traced": [["", 1.0]]},
        {"traced": [["x" * 129, 1.0]]},
        {"traced": [[7, 1.0]]},
        {"traced": [["r"]]},
        {"traced": [["r", 1.0]] * (MAX_SERVED + 1)},
        {"traced": None},
    ],
)
def test_a_report_that_does_not_read_is_refused(change: dict[str, object]) -> None:
    assert read_report(msgpack.packb({**GOOD, **change})) is None


@pytest.mark.parametrize(
    "packet", [b"", b"\xc1", msgpack.packb([1, None, 2]), msgpack.packb({"in_flight": 1})]
)
def test_a_packet_that_is_no_report_is_refused(packet: bytes) -> None:
    assert read_report(packet) is None

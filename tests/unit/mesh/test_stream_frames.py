"""Frames on a byte stream and the handshake frames of a sealed link (mesh/stream_frames.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.mesh.stream_frames import (
    KEY_BYTES,
    KEY_ID_BYTES,
    FrameError,
    FrameSplitter,
    frame_header,
    hello_frame,
    parse_hello,
    parse_welcome,
    welcome_frame,
)


def _stream(frames: list[bytes]) -> bytes:
    return b"".join(frame_header(len(frame)) + frame for frame in frames)


@given(
    frames=st.lists(st.binary(max_size=300), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20),
)
def test_frames_come_out_whole_and_in_order_however_the_bytes_are_cut(
    frames: list[bytes], cuts: list[int]
) -> None:
    data = _stream(frames)
    splitter = FrameSplitter(300)
    out: list[bytes] = []
    start = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        out += splitter.feed(data[start:cut])
        start = max(start, cut)
    assert out == frames
    assert splitter.buffered == 0


def test_a_length_over_the_limit_is_refused_before_its_bytes_are_held() -> None:
    splitter = FrameSplitter(100)
    assert splitter.feed(frame_header(100) + bytes(100)) == [bytes(100)]
    with pytest.raises(FrameError, match="101 bytes is over the 100 byte limit"):
        splitter.feed(frame_header(101) + bytes(10))
    with pytest.raises(FrameError):
        FrameSplitter(100).feed(b"GET / HTTP/1.1\r\n")  # a stranger's bytes read as a huge length


def test_max_frames_leaves_the_rest_for_a_later_limit() -> None:
    splitter = FrameSplitter(8)
    data = _stream([b"hello", bytes(50)])
    assert splitter.feed(data, max_frames=1) == [b"hello"]
    splitter.limit = 64  # the handshake is done: the link's own limit from now on
    assert splitter.feed(b"") == [bytes(50)]
    with pytest.raises(ValueError):
        splitter.limit = 0


def test_hello_and_welcome_round_trip_and_refuse_anything_else() -> None:
    key_id, key = bytes(range(KEY_ID_BYTES)), bytes(range(KEY_BYTES))
    hello = parse_hello(hello_frame(key_id, key))
    assert (hello.key_id, hello.ephemeral) == (key_id, key)
    assert parse_welcome(welcome_frame(key)) == key
    for bad in (b"", hello_frame(key_id, key)[:-1], b"MNd\x02" + key_id + key, welcome_frame(key)):
        with pytest.raises(FrameError):
            parse_hello(bad)
    for bad in (b"", welcome_frame(key) + b"x", b"XXXX" + key):
        with pytest.raises(FrameError):
            parse_welcome(bad)
    with pytest.raises(ValueError):
        hello_frame(key_id[:4], key)


def test_the_bytes_held_short_of_a_frame_are_given_up_whole() -> None:
    splitter = FrameSplitter(100)
    whole, partial = frame_header(3) + b"abc", frame_header(5) + b"de"
    assert splitter.feed(whole + partial) == [b"abc"]
    assert splitter.take_buffered() == partial  # what another process must read first
    assert splitter.buffered == 0
    assert splitter.feed(frame_header(1) + b"z") == [b"z"]

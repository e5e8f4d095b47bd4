"""A worker's Reply read and amended as bytes: the request id read from its first bytes is the one
``decode_envelope`` reads, the queue added gives the frame ``encode_envelope`` would have made with
it, and anything but that plain Reply answers None (the caller then decodes it, as before)."""

from __future__ import annotations

from typing import Any

import pytest

from meshnode.mesh.envelope import (
    MAX_ID_CHARS,
    Call,
    Chunk,
    Envelope,
    Failure,
    Progress,
    Reply,
    decode_envelope,
    encode_envelope,
)
from meshnode.mesh.envelope_frames import reply_request_id, reply_with_queue

IDS = ["r", "a" * 31, "b" * 32, "c" * MAX_ID_CHARS, "3f2a9c0e1b7d4e5f8a6b9c0d1e2f3a4b", "été-λ-請求"]
DATA: list[Any] = [
    None,
    {"text": "hello"},
    [0.1] * 384,
    b"\x89PNG" + bytes(range(256)) * 40,
    "plain text",
    {"nested": {"deep": [1, 2, {"x": None}]}},
]


@pytest.mark.parametrize("rid", IDS)
@pytest.mark.parametrize("data", DATA)
def test_the_id_read_from_the_bytes_is_the_decoded_one_and_the_queue_lands_where_encoding_puts_it(
    rid: str, data: Any
) -> None:
    frame = encode_envelope(Reply(rid, data, "application/json"))
    assert reply_request_id(frame) == rid
    for queue in (0, 1, 127, 128, 65_535, 2**31 - 1):
        amended = reply_with_queue(frame, queue)
        assert amended == encode_envelope(Reply(rid, data, "application/json", queue))
        assert decode_envelope(amended, max_bytes=len(amended)) == Reply(rid, data, "application/json", queue)


@pytest.mark.parametrize(
    "message",
    [
        Reply("r1", {"a": 1}, "", 3),  # has its queue already
        Call("r1", "echo", {"a": 1}, None, False, "", 1000),
        Chunk("r1", 0, b"piece"),
        Failure("r1", "internal", "boom", False),
        Progress("r1", 1, 4),
    ],
)
def test_any_other_envelope_is_not_read_as_a_plain_reply(message: Envelope) -> None:
    frame = encode_envelope(message)
    assert reply_request_id(frame) is None
    assert reply_with_queue(frame, 0) is None


def test_an_id_past_what_the_bytes_hold_or_not_utf8_or_over_the_limit_is_not_read() -> None:
    frame = encode_envelope(Reply("abcdef", 1, ""))
    assert reply_request_id(frame[:6]) is None  # the id's bytes cut short
    assert reply_request_id(frame[:4]) is None
    assert reply_request_id(b"") is None
    broken = frame[:4] + b"\xff" + frame[5:]  # not UTF-8
    assert reply_request_id(broken) is None
    empty = encode_envelope(Reply("x", 1, "")).replace(b"\xa1x", b"\xa0", 1)  # an empty id
    assert reply_request_id(empty) is None
    long = "d" * 200  # a str8 id longer than any request id
    assert reply_request_id(encode_envelope(Reply(long, 1, ""))) is None


def test_a_queue_out_of_bounds_is_not_added() -> None:
    frame = encode_envelope(Reply("r", 1, ""))
    assert reply_with_queue(frame, -1) is None
    assert reply_with_queue(frame, 2**31) is None

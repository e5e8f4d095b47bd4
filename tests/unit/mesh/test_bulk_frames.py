"""``decode_bulk``: a bulk link's large pieces come as views of their frames, every answer else as
``decode_envelope`` gives it, and bad bytes raise ``EnvelopeError`` as there, never worse."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.mesh.bulk_frames import VIEW_MIN_BYTES, decode_bulk
from meshnode.mesh.envelope import (
    Chunk,
    Envelope,
    EnvelopeError,
    Failure,
    Reply,
    decode_envelope,
    encode_envelope,
)

LIMIT = 16 * 1024 * 1024
PIECE = bytes(range(256)) * (VIEW_MIN_BYTES // 256 * 4)  # 256 KiB: a pull's piece


def both(frame: bytes) -> tuple[Envelope | str, Envelope | str]:
    """What each decoder makes of `frame`: the envelope (data as bytes), or the error's type."""

    def run(decode):  # type: ignore[no-untyped-def]
        try:
            message = decode(frame, max_bytes=LIMIT)
        except EnvelopeError:
            return "EnvelopeError"
        if isinstance(message, Chunk | Reply) and isinstance(message.data, memoryview):
            return type(message)(**{**message.__dict__, "data": bytes(message.data)})
        return message

    return run(decode_envelope), run(decode_bulk)


def test_a_piece_is_a_view_of_its_frame_not_a_copy() -> None:
    frame = bytearray(encode_envelope(Chunk("models-1f", 3, PIECE)))
    message = decode_bulk(frame, max_bytes=LIMIT)
    assert isinstance(message, Chunk) and (message.request_id, message.seq) == ("models-1f", 3)
    assert isinstance(message.data, memoryview) and message.data == PIECE
    frame[-1] ^= 0xFF  # the view shows the frame's own bytes
    assert message.data[-1] == PIECE[-1] ^ 0xFF


def test_the_last_piece_comes_in_a_reply_with_its_queue() -> None:
    message = decode_bulk(
        encode_envelope(Reply("models-1f", PIECE, "application/octet-stream", 2)), max_bytes=LIMIT
    )
    assert isinstance(message, Reply) and isinstance(message.data, memoryview)
    assert (bytes(message.data), message.content_type, message.queue) == (
        PIECE,
        "application/octet-stream",
        2,
    )


@pytest.mark.parametrize(
    "message",
    [
        Chunk("r", 0, PIECE[:100]),  # small: copied, as decode_envelope does
        Reply("r", {"json": [1, 2]}, "application/json"),
        Reply("r", None, "application/octet-stream"),
        Failure("r", "not_found", "no such model", False, 0),
        Chunk("r" * 128, 2**40, PIECE),  # a long id (str8) and a wide seq (uint64)
        Chunk("ü" * 40, 200, PIECE),  # an id that is not ASCII
    ],
)
def test_every_answer_reads_as_decode_envelope_reads_it(message: Envelope) -> None:
    plain, bulk = both(encode_envelope(message))
    assert plain == bulk == message


def test_a_frame_over_the_limit_is_refused_as_before() -> None:
    frame = encode_envelope(Chunk("r", 0, PIECE))
    with pytest.raises(EnvelopeError, match="limit"):
        decode_bulk(frame, max_bytes=len(PIECE))


@settings(max_examples=300, deadline=None)
@given(
    rid=st.text(min_size=0, max_size=140),
    seq=st.integers(min_value=-(2**63), max_value=2**64 - 1),
    size=st.sampled_from([0, 10, VIEW_MIN_BYTES - 1, VIEW_MIN_BYTES, VIEW_MIN_BYTES + 7]),
    reply=st.booleans(),
    tail=st.lists(st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=5)), max_size=2),
)
def test_any_chunk_or_reply_layout_reads_the_same(
    rid: str, seq: int, size: int, reply: bool, tail: list[object]
) -> None:
    data = PIECE[:size] if size <= len(PIECE) else PIECE
    fields = [rid, data, *tail] if reply else [rid, seq, data, *tail]
    frame = msgpack.packb([1, 3 if reply else 2, *fields], use_bin_type=True)
    plain, bulk = both(frame)
    assert plain == bulk


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0, max_value=40), value=st.integers(0, 255), cut=st.integers(0, 8))
def test_damaged_frames_fail_or_read_as_decode_envelope_reads_them(
    position: int, value: int, cut: int
) -> None:
    frame = bytearray(encode_envelope(Chunk("models-0123456789abcdef", 17, PIECE)))
    frame[position] = value
    damaged = bytes(frame[: len(frame) - cut])
    plain, bulk = both(damaged)
    assert plain == bulk

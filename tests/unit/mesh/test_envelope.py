"""The data-plane envelope: every kind round-trips, and bad bytes raise EnvelopeError, never worse."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.mesh.envelope import (
    ENVELOPE_VERSION,
    Call,
    Cancel,
    Chunk,
    Envelope,
    EnvelopeError,
    Failure,
    Hello,
    Hints,
    Reply,
    decode_envelope,
    encode_envelope,
)

LIMIT = 1 << 20

MESSAGES: list[Envelope] = [
    Call("r1", "sd", {"prompt": "a fox", "steps": 4}, "image/png", False, "image/png", 30_000),
    Call("r2", "echo", {}, None, True, "", 1),
    Chunk("r2", 0, {"i": 0}),
    Chunk("r3", 7, b"\x89PNG"),
    Reply("r1", b"\x89PNG...", "image/png"),
    Reply("r1", {"ok": True}, "application/json", queue=3),
    Reply("r2", None, "text/event-stream", queue=0),
    Failure("r1", "overloaded", "full", True),
    Failure("r1", "predictor", "boom", False, queue=12),
    Cancel("r1"),
    Hello("replica-1", {"max_concurrency": 4, "hints": ["a"]}),
    Hints("replica-1", ("a", "b"), ("m",)),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_kind_round_trips(message: Envelope) -> None:
    assert decode_envelope(encode_envelope(message), max_bytes=LIMIT) == message


def test_the_queue_field_is_left_out_when_unset() -> None:
    plain = msgpack.unpackb(encode_envelope(Reply("r", 1, "application/json")))
    assert plain == [ENVELOPE_VERSION, 3, "r", 1, "application/json"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"\xc1", "not msgpack", id="not-msgpack"),
        pytest.param(msgpack.packb({"a": 1}), "array", id="not-an-array"),
        pytest.param(msgpack.packb([2, 5, "r"]), "version", id="wrong-version"),
        pytest.param(msgpack.packb([1, 5, ""]), "request id", id="empty-id"),
        pytest.param(msgpack.packb([1, 5, "x" * 200]), "request id", id="long-id"),
        pytest.param(msgpack.packb([1, 99, "r"]), "unknown", id="unknown-kind"),
        pytest.param(
            msgpack.packb([1, 1, "r", "sd", [], None, False, "", 1]), "wrong fields", id="body-list"
        ),
        pytest.param(msgpack.packb([1, 1, "r", "sd", {}, None, False, "", 0]), "timeout", id="zero-timeout"),
        pytest.param(msgpack.packb([1, 1, "r", "sd", {}, None, False, "", -5]), "timeout", id="past-timeout"),
        pytest.param(
            msgpack.packb([1, 1, "r", "sd", {}, None, False, "", 2**64 - 1]), "timeout", id="endless-timeout"
        ),
        pytest.param(msgpack.packb([1, 3, "r", 1, "json", -1]), "wrong fields", id="negative-queue"),
        pytest.param(msgpack.packb([1, 3, "r", 1, "json", True]), "wrong fields", id="bool-queue"),
        pytest.param(msgpack.packb([1, 3, "r", 1, "json", 1, 2]), "wrong fields", id="extra-field"),
        pytest.param(msgpack.packb([1, 4, "r", "k", "m", "yes"]), "wrong fields", id="retryable-str"),
        pytest.param(msgpack.packb([1, 7, "r", ["a", 1], []]), "strings", id="hint-int"),
        pytest.param(msgpack.packb([1, 5, "r", msgpack.ExtType(1, b"x")]), "extension", id="ext-type"),
    ],
)
def test_bad_frames_raise_envelope_error_with_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        decode_envelope(raw, max_bytes=LIMIT)


def test_an_oversized_frame_is_refused_before_parsing() -> None:
    with pytest.raises(EnvelopeError, match="over the 10 byte limit"):
        decode_envelope(encode_envelope(Cancel("a-long-request-id")), max_bytes=10)


@given(st.binary(max_size=256))
def test_random_bytes_never_raise_anything_but_envelope_error(raw: bytes) -> None:
    with contextlib.suppress(EnvelopeError):
        decode_envelope(raw, max_bytes=LIMIT)


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@given(st.integers(0, 9), st.lists(values, max_size=8))
def test_well_formed_msgpack_of_any_shape_is_decoded_or_refused(kind: int, fields: list[object]) -> None:
    raw = msgpack.packb([ENVELOPE_VERSION, kind, "rid", *fields], use_bin_type=True)
    try:
        message = decode_envelope(raw, max_bytes=LIMIT)
    except EnvelopeError:
        return
    assert decode_envelope(encode_envelope(message), max_bytes=LIMIT) == message

"""The data-plane envelope: every kind round-trips, and bad bytes raise EnvelopeError, never worse.

Progress frames are bounded like every number from the wire: their step and total, and the size and
kind of their preview.
"""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.mesh.envelope import (
    ENVELOPE_VERSION,
    JPEG_MAGIC,
    MAX_BATCH_SIZE,
    MAX_PREVIEW_BYTES,
    MAX_PROGRESS_STEPS,
    Attach,
    BatchSizes,
    Call,
    Cancel,
    Chunk,
    Encoded,
    Envelope,
    EnvelopeError,
    EnvelopeKind,
    Failure,
    Hello,
    Hints,
    Progress,
    RelayCall,
    Reply,
    decode_envelope,
    encode_envelope,
    progress_problem,
)

LIMIT = 1 << 20

MESSAGES: list[Envelope] = [
    Call("r1", "sd", {"prompt": "a fox", "steps": 4}, "image/png", False, "image/png", 30_000),
    Call("r2", "echo", {}, None, True, "", 1),
    Call("r3", "sd", {"prompt": "a fox"}, None, False, "application/json", 5_000, progress=True),
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
    Progress("r3", 0, 1),
    Progress("r3", 4, 20, JPEG_MAGIC + b"\xe0 rest of a jpeg"),
    Progress("r3", MAX_PROGRESS_STEPS, MAX_PROGRESS_STEPS, JPEG_MAGIC + bytes(MAX_PREVIEW_BYTES - 3)),
    RelayCall("r4", "edge-node", Call("r4", "echo", {"text": "hi"}, None, True, "", 5_000, progress=True)),
    Attach("edge-node"),
    BatchSizes("replica-1", ((1, 40), (8, 3), (MAX_BATCH_SIZE, 1))),
    BatchSizes("replica-1", ()),
]


@pytest.mark.parametrize(
    "rows",
    [
        [[0, 1]],  # no batch of size 0
        [[MAX_BATCH_SIZE + 1, 1]],
        [[2, -1]],
        [[2, 1.5]],
        [[True, 1]],
        [[2, 1, 3]],
        [{"2": 1}],
        "rows",
    ],
)
def test_batch_sizes_out_of_bounds_are_refused(rows: object) -> None:
    frame = msgpack.packb([ENVELOPE_VERSION, EnvelopeKind.BATCH_SIZES, "replica-1", rows])
    with pytest.raises(EnvelopeError):
        decode_envelope(frame, max_bytes=1 << 20)


@pytest.mark.parametrize(
    "fields",
    [
        ["edge", encode_envelope(Call("other-id", "echo", {}, None, False, "", 5_000))],  # ids differ
        ["edge", encode_envelope(Cancel("r9"))],  # only a call can be relayed
        ["edge", b"not msgpack"],
        ["", encode_envelope(Call("r9", "echo", {}, None, False, "", 5_000))],  # nobody to pass to
        ["edge"],
        [
            "edge",
            msgpack.packb([1, 9, "r9", "edge", encode_envelope(Call("r9", "e", {}, None, False, "", 1))]),
        ],
    ],
)
def test_a_relayed_call_must_hold_a_valid_call_of_its_own_id(fields: list[object]) -> None:
    with pytest.raises(EnvelopeError):
        decode_envelope(msgpack.packb([1, 9, "r9", *fields]), max_bytes=LIMIT)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_kind_round_trips(message: Envelope) -> None:
    assert decode_envelope(encode_envelope(message), max_bytes=LIMIT) == message


def test_the_queue_field_is_left_out_when_unset() -> None:
    plain = msgpack.unpackb(encode_envelope(Reply("r", 1, "application/json")))
    assert plain == [ENVELOPE_VERSION, 3, "r", 1, "application/json"]


def test_a_call_that_asks_no_progress_encodes_as_before_progress_existed() -> None:
    plain = msgpack.unpackb(encode_envelope(Call("r", "sd", {}, None, False, "", 10)))
    assert plain == [ENVELOPE_VERSION, 1, "r", "sd", {}, None, False, "", 10]
    asking = msgpack.unpackb(encode_envelope(Call("r", "sd", {}, None, False, "", 10, progress=True)))
    assert asking == [*plain, True]


JPEG = JPEG_MAGIC + b"\xe0"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        pytest.param([-1, 10, None], "step must be 0 to", id="negative-step"),
        pytest.param([11, 10, None], "step must be 0 to", id="step-past-total"),
        pytest.param([0, 0, None], "total must be 1 to", id="zero-total"),
        pytest.param([1, MAX_PROGRESS_STEPS + 1, None], "total must be 1 to", id="huge-total"),
        pytest.param([1, 2**64 - 1, None], "total must be 1 to", id="uint64-total"),
        pytest.param([True, 10, None], "integers", id="bool-step"),
        pytest.param([1.5, 10, None], "integers", id="float-step"),
        pytest.param([1, "10", None], "integers", id="string-total"),
        pytest.param([1, 10, "preview"], "bytes or nil", id="string-preview"),
        pytest.param([1, 10, b"\x89PNG\r\n"], "JPEG", id="png-preview"),
        pytest.param([1, 10, JPEG + bytes(MAX_PREVIEW_BYTES)], "byte limit", id="huge-preview"),
        pytest.param([1, 10], "wrong fields", id="no-preview-field"),
        pytest.param([1, 10, None, 1], "wrong fields", id="extra-field"),
    ],
)
def test_progress_frames_out_of_bounds_are_refused(fields: list[object], reason: str) -> None:
    raw = msgpack.packb([ENVELOPE_VERSION, 8, "r", *fields], use_bin_type=True)
    with pytest.raises(EnvelopeError, match=reason):
        decode_envelope(raw, max_bytes=LIMIT)


@pytest.mark.parametrize(
    "flags",
    [pytest.param([1], id="int"), pytest.param(["yes"], id="str"), pytest.param([True, {}, 1], id="three")],
)
def test_a_call_progress_flag_must_be_one_boolean(flags: list[object]) -> None:
    raw = msgpack.packb([ENVELOPE_VERSION, 1, "r", "sd", {}, None, False, "", 10, *flags])
    with pytest.raises(EnvelopeError, match="progress flag"):
        decode_envelope(raw, max_bytes=LIMIT)


def test_a_call_moderation_round_trips_and_must_be_a_map() -> None:
    call = Call("r", "sd", {"prompt": "x"}, None, False, "", 10, moderation={"check_output": True})
    assert decode_envelope(encode_envelope(call), max_bytes=LIMIT) == call
    plain = Call("r", "sd", {}, None, False, "", 10, progress=True)
    assert len(msgpack.unpackb(encode_envelope(plain))) == 10  # no moderation: the frame is as before
    raw = msgpack.packb([ENVELOPE_VERSION, 1, "r", "sd", {}, None, False, "", 10, False, ["x"]])
    with pytest.raises(EnvelopeError, match="moderation must be a map"):
        decode_envelope(raw, max_bytes=LIMIT)


def test_progress_problem_passes_what_is_in_bounds() -> None:
    assert progress_problem(0, 1, None) is None
    assert progress_problem(3, 3, JPEG) is None
    assert progress_problem(3, 3, bytearray(JPEG)) == "a progress preview must be bytes or nil"


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


def test_an_envelope_encoded_already_is_sent_as_it_is_and_reads_as_what_it_holds() -> None:
    frame = encode_envelope(Chunk("models-1", 2, b"piece"))
    assert encode_envelope(Encoded("models-1", frame)) is frame  # no copy, no second encoding
    assert decode_envelope(frame, max_bytes=1024) == Chunk("models-1", 2, b"piece")

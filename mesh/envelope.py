"""Data-plane envelope: requests, streamed chunks, results and errors between processes.

The agent talks to its replica workers over their links (node/serving/pipe.py) with these
messages, and agents forward requests to each other with the same ones (docs/architecture.md walks
the request path).
One message is one msgpack frame::

    [ENVELOPE_VERSION, kind, request_id, ...fields]

Deadlines travel as the time left in milliseconds, never as a clock reading: two processes (or two
machines) do not share a clock. Payloads are msgpack values (JSON-able data or raw bytes for files).
Decoding validates types and sizes; a bad frame raises ``EnvelopeError`` and is dropped by the caller.

Progress: a ``Call`` with ``progress`` set asks for ``Progress`` envelopes (step of total, an optional
small JPEG preview) while it runs, ahead of its chunks and final answer; a call without it never gets
one, so every answer a client that did not ask sees is exactly what it was before progress existed.
A progress envelope is output: the forwarder commits a request to the replica that sent one. Its
numbers are bounded (``progress_problem``) wherever a frame is decoded, and ``progress`` travels
only when set, so a call that did not ask encodes to the same bytes as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, cast

import msgpack

ENVELOPE_VERSION = 1
MAX_ID_CHARS = 128
# A call's deadline, in milliseconds: the most any node's HTTP edge accepts (X-Request-Timeout up to
# an hour), so a frame from the wire never asks a replica to hold a request longer than that.
MAX_CALL_TIMEOUT_MS = 3_600_000
# Progress from the wire: more steps than any sampler, epoch or job runs, and far inside msgpack's ints.
MAX_PROGRESS_STEPS = 1_000_000
# A preview is a small JPEG (64x64 is 1-3 KB): large enough for 256x256, small enough that a preview
# per step never competes with the answer on a shared connection.
MAX_PREVIEW_BYTES = 64 * 1024
JPEG_MAGIC = b"\xff\xd8\xff"
# A worker's batch sizes: one row per size it ran, sizes up to this (no app batches more).
MAX_BATCH_SIZE = 65_536
# A call's ``accept`` for a bulk transfer (a model pull's chunks): its large answer comes as the
# pieces it travels in (its ``Chunk``s, then the ``Reply`` with the last piece), unjoined, so the
# puller hashes and writes them as they are and never copies megabytes at once on its event loop;
# and it travels on a connection of its own, behind serving traffic (``node/dataplane/links.py``).
ACCEPT_BULK = "application/x-meshnode-bulk"


class EnvelopeError(ValueError):
    """A data-plane frame that must be dropped."""


class EnvelopeKind(IntEnum):
    """Message kinds on the data plane."""

    CALL = 1
    CHUNK = 2
    REPLY = 3
    FAILURE = 4
    CANCEL = 5
    HELLO = 6
    HINTS = 7
    PROGRESS = 8
    RELAY_CALL = 9
    ATTACH = 10
    BATCH_SIZES = 11


_CALL, _REPLY = int(EnvelopeKind.CALL), int(EnvelopeKind.REPLY)


@dataclass(frozen=True)
class Call:
    """Run `body` on `deployment`; stream the output when `stream` is set."""

    request_id: str
    deployment: str
    body: dict[str, Any]
    header: str | None
    stream: bool
    accept: str
    timeout_ms: int
    # Send Progress envelopes while it runs (the WebSocket route, jobs); off for everything else.
    progress: bool = False
    # The checks the replica's worker runs before and after the predictor: the deployment's
    # moderation section as the node that took the request knows it (``mesh/moderation.py``
    # ``Moderation.to_wire``); None: none. It travels only when set, as ``progress``.
    moderation: dict[str, Any] | None = None


@dataclass(frozen=True)
class Chunk:
    """One piece of a streamed answer, in order."""

    request_id: str
    seq: int
    data: Any


@dataclass(frozen=True)
class Reply:
    """The final answer (for a stream: its end, with `data` None).

    `queue`: set by a node answering a peer, its replica's other requests in flight at that moment,
    so the peer's router learns fresh load from every answer instead of only from gossip.
    """

    request_id: str
    data: Any
    content_type: str
    queue: int | None = None


@dataclass(frozen=True)
class Failure:
    """The request failed; `retryable` means it never started and may run elsewhere."""

    request_id: str
    kind: str
    message: str
    retryable: bool
    queue: int | None = None  # as in Reply


@dataclass(frozen=True)
class Cancel:
    """The caller went away or the deadline passed: stop working on this request."""

    request_id: str


@dataclass(frozen=True)
class Progress:
    """How far a running request is: `step` of `total`, with an optional small JPEG `preview`."""

    request_id: str
    step: int
    total: int
    preview: bytes | None = None


@dataclass(frozen=True)
class Hello:
    """A worker is ready: what it can do (`info`: hints, models, concurrency, batching)."""

    request_id: str  # the replica id, so every kind has an id in the same place
    info: dict[str, Any]


@dataclass(frozen=True)
class Hints:
    """A worker's routing hints or loaded models changed."""

    request_id: str  # the replica id
    hints: tuple[str, ...]
    models: tuple[str, ...]


@dataclass(frozen=True)
class RelayCall:
    """`call` for node `to`, which the receiver passes on over `to`'s link (docs/edge.md)."""

    request_id: str  # the call's own id
    to: str
    call: Call


@dataclass(frozen=True)
class Attach:
    """A node nobody can dial says, on its link to a relay: calls for me come this way."""

    request_id: str  # the node's id, so every kind has an id in the same place


@dataclass(frozen=True)
class BatchSizes:
    """A worker's batches so far: (size, how many batches of that size ran), for ``/metrics``."""

    request_id: str  # the replica id
    counts: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Encoded:
    """An envelope encoded already, sent as it is: never read from the wire (it decodes as what it holds).

    A model's pieces are encoded by the thread that reads them from disk (``models/chunk_server.py``),
    so the event loop of a node serving a pull only sends each, never allocates and copies it.
    """

    request_id: str
    frame: bytes


Envelope = (
    Call
    | Chunk
    | Reply
    | Failure
    | Cancel
    | Hello
    | Hints
    | Progress
    | RelayCall
    | Attach
    | BatchSizes
    | Encoded
)


def encode_envelope(message: Envelope) -> bytes:
    """One msgpack frame."""
    # Every request crosses as a Call and a Reply: those two first, without the match below, whose
    # class patterns cost a few µs a message on the hot path (bench/hop_floor.py).
    kind_of = type(message)
    if kind_of is Reply:
        reply = cast(Reply, message)
        row = [ENVELOPE_VERSION, _REPLY, reply.request_id, reply.data, reply.content_type]
        if reply.queue is not None:
            row.append(reply.queue)
        return msgpack.packb(row, use_bin_type=True)
    if kind_of is Call:
        call = cast(Call, message)
        if call.moderation is None:
            row = [ENVELOPE_VERSION, _CALL, call.request_id, call.deployment, call.body, call.header]
            row += [call.stream, call.accept, call.timeout_ms]
            if call.progress:
                row.append(True)
            return msgpack.packb(row, use_bin_type=True)
    match message:
        case Call(rid, deployment, body, header, stream, accept, timeout_ms, progress, moderation):
            fields: list[Any] = [deployment, body, header, stream, accept, timeout_ms]
            fields += [progress, moderation] if moderation is not None else [True] if progress else []
            kind = EnvelopeKind.CALL
        case Chunk(rid, seq, data):
            fields, kind = [seq, data], EnvelopeKind.CHUNK
        case Reply(rid, data, content_type, queue):
            fields, kind = [data, content_type, *_optional(queue)], EnvelopeKind.REPLY
        case Failure(rid, failure_kind, text, retryable, queue):
            fields, kind = [failure_kind, text, retryable, *_optional(queue)], EnvelopeKind.FAILURE
        case Cancel(rid):
            fields, kind = [], EnvelopeKind.CANCEL
        case Hello(rid, info):
            fields, kind = [info], EnvelopeKind.HELLO
        case Hints(rid, hints, models):
            fields, kind = [list(hints), list(models)], EnvelopeKind.HINTS
        case Progress(rid, step, total, preview):
            fields, kind = [step, total, preview], EnvelopeKind.PROGRESS
        case RelayCall(rid, to, call):
            fields, kind = [to, encode_envelope(call)], EnvelopeKind.RELAY_CALL
        case Attach(rid):
            fields, kind = [], EnvelopeKind.ATTACH
        case BatchSizes(rid, counts):
            fields, kind = [[list(row) for row in counts]], EnvelopeKind.BATCH_SIZES
        case Encoded(_, frame):
            return frame
    return msgpack.packb([ENVELOPE_VERSION, kind, rid, *fields], use_bin_type=True)


def _optional(queue: int | None) -> list[int]:
    return [] if queue is None else [queue]


def _refuse_ext(code: int, data: bytes) -> Any:
    raise EnvelopeError(f"msgpack extension type {code} is not allowed")


def decode_envelope(frame: bytes | bytearray, *, max_bytes: int, _in_relay_call: bool = False) -> Envelope:
    """Parse and validate one frame; raise EnvelopeError on anything unexpected."""
    if len(frame) > max_bytes:
        raise EnvelopeError(f"frame of {len(frame)} bytes is over the {max_bytes} byte limit")
    try:
        raw = msgpack.unpackb(frame, raw=False, strict_map_key=True, ext_hook=_refuse_ext)
    except EnvelopeError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise EnvelopeError(f"not msgpack: {type(exc).__name__}") from exc
    if not isinstance(raw, list) or len(raw) < 3:
        raise EnvelopeError("envelope must be an array [version, kind, id, ...]")
    version, kind, rid, *fields = raw
    if type(version) is not int or version != ENVELOPE_VERSION:
        raise EnvelopeError(f"envelope version {version!r}, expected {ENVELOPE_VERSION}")
    if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_CHARS:
        raise EnvelopeError("request id must be a non-empty string")
    # The hot kinds first, by plain checks that accept exactly what the match below accepts; what
    # they do not accept falls through to it, which says what is wrong.
    if kind == _REPLY and len(fields) >= 2 and isinstance(fields[1], str) and _queue_ok(fields[2:]):
        return Reply(rid, fields[0], fields[1], *fields[2:])
    if kind == _CALL and (plain := _plain_call(rid, fields)) is not None:
        return plain
    match kind, fields:
        case EnvelopeKind.CALL, [
            str() as deployment,
            dict() as body,
            header,
            bool() as stream,
            str() as accept,
            int() as timeout_ms,
            *flags,
        ]:
            if header is not None and not isinstance(header, str):
                raise EnvelopeError("call header must be a string or nil")
            if not 0 < timeout_ms <= MAX_CALL_TIMEOUT_MS:
                raise EnvelopeError(f"call timeout must be 1 to {MAX_CALL_TIMEOUT_MS} ms")
            if len(flags) > 2 or any(type(flag) is not bool for flag in flags[:1]):
                raise EnvelopeError("call progress flag must be one boolean, or absent")
            if len(flags) == 2 and not isinstance(flags[1], dict):
                raise EnvelopeError("call moderation must be a map, or absent")
            return Call(rid, deployment, body, header, stream, accept, timeout_ms, *flags)
        case EnvelopeKind.CHUNK, [int() as seq, data]:
            return Chunk(rid, seq, data)
        case EnvelopeKind.REPLY, [data, str() as content_type, *queue] if _queue_ok(queue):
            return Reply(rid, data, content_type, *queue)
        case EnvelopeKind.FAILURE, [str() as failure_kind, str() as text, bool() as retryable, *queue] if (
            _queue_ok(queue)
        ):
            return Failure(rid, failure_kind, text, retryable, *queue)
        case EnvelopeKind.CANCEL, []:
            return Cancel(rid)
        case EnvelopeKind.HELLO, [dict() as info]:
            return Hello(rid, info)
        case EnvelopeKind.HINTS, [list() as hints, list() as models]:
            if not all(isinstance(h, str) for h in hints + models):
                raise EnvelopeError("hints and models must be strings")
            return Hints(rid, tuple(hints), tuple(models))
        case EnvelopeKind.PROGRESS, [step, total, preview]:
            problem = progress_problem(step, total, preview)
            if problem is not None:
                raise EnvelopeError(problem)
            return Progress(rid, step, total, preview)
        case EnvelopeKind.RELAY_CALL, [str() as to, bytes() as inner] if 0 < len(to) <= MAX_ID_CHARS:
            if _in_relay_call:  # one level only: nesting would let a frame recurse without bound
                raise EnvelopeError("a relayed call cannot hold another")
            call = decode_envelope(inner, max_bytes=max_bytes, _in_relay_call=True)
            if not isinstance(call, Call) or call.request_id != rid:
                raise EnvelopeError("a relayed call must hold a call with the same request id")
            return RelayCall(rid, to, call)
        case EnvelopeKind.ATTACH, []:
            return Attach(rid)
        case EnvelopeKind.BATCH_SIZES, [list() as rows] if len(rows) <= MAX_BATCH_SIZE:
            counts = tuple(tuple(row) for row in rows if isinstance(row, list))
            if len(counts) != len(rows) or not all(_batch_row_ok(row) for row in counts):
                raise EnvelopeError(f"batch sizes must be [size 1..{MAX_BATCH_SIZE}, count >= 0] pairs")
            return BatchSizes(rid, counts)
    raise EnvelopeError(f"unknown envelope kind {kind!r} or wrong fields")


def progress_problem(step: object, total: object, preview: object) -> str | None:
    """Why a progress report is out of bounds, or None: ints with 0 <= step <= total, a small JPEG."""
    if type(step) is not int or type(total) is not int:
        return "progress step and total must be integers"
    if not 0 < total <= MAX_PROGRESS_STEPS:
        return f"progress total must be 1 to {MAX_PROGRESS_STEPS}, not {total}"
    if not 0 <= step <= total:
        return f"progress step must be 0 to its total {total}, not {step}"
    if preview is None:
        return None
    if not isinstance(preview, bytes):
        return "a progress preview must be bytes or nil"
    if len(preview) > MAX_PREVIEW_BYTES:
        return f"a progress preview is {len(preview)} bytes, over the {MAX_PREVIEW_BYTES} byte limit"
    if not preview.startswith(JPEG_MAGIC):
        return "a progress preview must be a JPEG image"
    return None


def _batch_row_ok(row: tuple[Any, ...]) -> bool:
    return (
        len(row) == 2
        and all(type(value) is int for value in row)
        and 0 < row[0] <= MAX_BATCH_SIZE
        and 0 <= row[1] < 2**63
    )


def _plain_call(rid: str, fields: list[Any]) -> Call | None:
    """The Call in `fields` when it has no moderation and every field is right, else None."""
    if not 6 <= len(fields) <= 7:
        return None
    deployment, body, header, stream, accept, timeout_ms, *flags = fields
    if (
        isinstance(deployment, str)
        and isinstance(body, dict)
        and (header is None or isinstance(header, str))
        and isinstance(stream, bool)
        and isinstance(accept, str)
        and isinstance(timeout_ms, int)
        and 0 < timeout_ms <= MAX_CALL_TIMEOUT_MS
        and all(type(flag) is bool for flag in flags)
    ):
        return Call(rid, deployment, body, header, stream, accept, timeout_ms, *flags)
    return None


def _queue_ok(rest: list[Any]) -> bool:
    """The optional trailing queue depth: absent, or one non-negative int (not a bool)."""
    return not rest or (len(rest) == 1 and type(rest[0]) is int and 0 <= rest[0] < 2**31)

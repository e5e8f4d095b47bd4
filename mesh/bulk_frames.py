"""Bulk answers decoded without copying their bytes: a model pull's pieces as views of their frames.

``decode_envelope`` makes a new ``bytes`` of every msgpack ``bin`` it reads. For a model pull's
pieces (256 KiB each, hundreds a second) that is an allocation and a copy per piece on the puller's
event loop, the copy's first touch of fresh pages included: ~0.3 ms a piece in this virtual machine,
the largest share of what a pull cost the loop that serves requests beside it (docs/benchmarks.md,
"Model pulls"). ``decode_bulk`` reads a CHUNK or REPLY whose data is a ``bin`` of at least
``VIEW_MIN_BYTES`` and hands the data on as a ``memoryview`` of the frame itself (ZeroMQ's buffer,
when the link reads without copying); the frame's other fields, few and small, are decoded and checked
by ``decode_envelope`` from a copy in which the data is nil. Any other frame, or one whose first
fields are not in the plain form every encoder here writes, goes to ``decode_envelope`` whole: the
answer is the same either way but for the data's type (property-tested), and a bad frame raises
``EnvelopeError`` as there.

The layout read (msgpack, as ``encode_envelope`` writes it)::

    fixarray | 0x01 (version) | kind (fixint) | rid (str) | CHUNK: seq (uint) | data (bin) | ...
"""

from __future__ import annotations

from dataclasses import replace

from .envelope import ENVELOPE_VERSION, Chunk, Envelope, EnvelopeKind, Reply, decode_envelope

__all__ = ["VIEW_MIN_BYTES", "decode_bulk"]

# Below this a copy costs less than the view and the second decode (a view keeps the whole frame).
VIEW_MIN_BYTES = 64 * 1024

_NIL = b"\xc0"
# msgpack's str, uint and bin headers: the byte that opens one, and how many length bytes follow.
_STR_LENGTH_BYTES = {0xD9: 1, 0xDA: 2, 0xDB: 4}
_UINT_BYTES = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_BIN_LENGTH_BYTES = {0xC4: 1, 0xC5: 2, 0xC6: 4}


def decode_bulk(frame: bytes | bytearray, *, max_bytes: int) -> Envelope:
    """``decode_envelope(frame)``, with a large data field as a view of `frame` (see module docstring)."""
    view = memoryview(frame).cast("B")
    where = _data_at(view) if len(view) <= max_bytes else None
    if where is None:
        return decode_envelope(frame, max_bytes=max_bytes)
    header, start, end = where
    rest = bytes(view[:header]) + _NIL + bytes(view[end:])
    message = decode_envelope(rest, max_bytes=max_bytes)
    if not isinstance(message, Chunk | Reply) or message.data is not None:
        return decode_envelope(frame, max_bytes=max_bytes)  # not the layout read: decode it all
    return replace(message, data=view[start:end])


def _data_at(view: memoryview) -> tuple[int, int, int] | None:
    """Where the data bin is: its header's offset, and its bytes' start and end; None: not this layout."""
    if len(view) < VIEW_MIN_BYTES or view[0] & 0xF0 != 0x90 or view[1] != ENVELOPE_VERSION:
        return None
    kind = view[2]
    if kind not in (EnvelopeKind.CHUNK, EnvelopeKind.REPLY):
        return None
    at = _after_str(view, 3)
    if at is not None and kind == EnvelopeKind.CHUNK:
        at = _after_uint(view, at)
    if at is None or at >= len(view) or view[at] not in _BIN_LENGTH_BYTES:
        return None
    width = _BIN_LENGTH_BYTES[view[at]]
    start = at + 1 + width
    length = int.from_bytes(view[at + 1 : start], "big")
    end = start + length
    if length < VIEW_MIN_BYTES or end > len(view):
        return None
    return at, start, end


def _after_str(view: memoryview, at: int) -> int | None:
    if at >= len(view):
        return None
    head = view[at]
    if 0xA0 <= head <= 0xBF:
        return at + 1 + (head & 0x1F)
    width = _STR_LENGTH_BYTES.get(head)
    if width is None:
        return None
    return at + 1 + width + int.from_bytes(view[at + 1 : at + 1 + width], "big")


def _after_uint(view: memoryview, at: int) -> int | None:
    if at >= len(view):
        return None
    head = view[at]
    if head <= 0x7F:
        return at + 1
    width = _UINT_BYTES.get(head)
    return None if width is None else at + 1 + width

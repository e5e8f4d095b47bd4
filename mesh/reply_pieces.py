"""A file answer split into the frames that carry it between nodes.

A ``Reply`` whose data is more than ``chunk_bytes`` of bytes (an image) leaves as ``Chunk``s of
that size and a last ``Reply`` with the rest, so on a link that many requests share one large answer
never holds up the others; the receiving end joins them (``PeerLinks``). Pieces are views of the
data, not copies. Anything else is one frame.
"""

from __future__ import annotations

from dataclasses import replace

from .envelope import Chunk, Envelope, Reply

__all__ = ["reply_pieces"]


def reply_pieces(message: Envelope, chunk_bytes: int) -> list[Envelope]:
    """`message` as the envelopes that carry it: a large file Reply in pieces, anything else as it is."""
    match message:
        case Reply(rid, bytes() as data) if len(data) > chunk_bytes:
            view = memoryview(data)
            pieces = [view[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]
            chunks: list[Envelope] = [Chunk(rid, seq, piece) for seq, piece in enumerate(pieces[:-1])]
            return [*chunks, replace(message, data=pieces[-1])]
    return [message]

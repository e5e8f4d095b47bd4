"""Frames on a byte stream, and the two handshake frames that open a sealed data-plane link.

A sealed link (``node/trust/sealed.py``, ``node/dataplane/sealed_stream.py``) is one TCP
connection carrying frames, each a 4-byte big-endian length and then that many bytes. TCP hands
bytes over in whatever pieces it likes; ``FrameSplitter.feed`` takes them as they come and returns
every frame they complete. A declared length over the splitter's limit is refused
(``FrameError``) before a byte of that frame is held, so no peer can make a node buffer more than
one frame's limit.

The link opens with two frames of fixed layout, before anything is sealed::

    HELLO    client -> server   MAGIC (4) | key id (8) | client's ephemeral X25519 key (32)
    WELCOME  server -> client   MAGIC (4) | server's ephemeral X25519 key (32)

``MAGIC`` names the format and its version: a peer speaking another version is refused at its
first frame, never misread. Everything after these two frames is sealed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "HEADER_BYTES",
    "KEY_BYTES",
    "KEY_ID_BYTES",
    "MAGIC",
    "FrameError",
    "FrameSplitter",
    "Hello",
    "frame_header",
    "hello_frame",
    "parse_hello",
    "parse_welcome",
    "welcome_frame",
]

MAGIC = b"MNd\x01"  # meshnode data plane, format 1
HEADER_BYTES = 4
KEY_ID_BYTES = 8
KEY_BYTES = 32  # an X25519 public key
_HELLO_BYTES = len(MAGIC) + KEY_ID_BYTES + KEY_BYTES
_WELCOME_BYTES = len(MAGIC) + KEY_BYTES
_LENGTH = struct.Struct(">I")
# The largest length a header can say (4 bytes); limits above it are meaningless.
MAX_FRAME_LIMIT = 2**32 - 1


class FrameError(ValueError):
    """Bytes that are not frames of this format; the link that sent them is closed."""


def frame_header(size: int) -> bytes:
    """The 4-byte header of a frame of `size` bytes."""
    return _LENGTH.pack(size)


@dataclass(frozen=True)
class Hello:
    """A client's first frame: which token it holds (by key id) and its ephemeral key."""

    key_id: bytes
    ephemeral: bytes


def hello_frame(key_id: bytes, ephemeral: bytes) -> bytes:
    """A HELLO frame's body."""
    if len(key_id) != KEY_ID_BYTES or len(ephemeral) != KEY_BYTES:
        raise ValueError("a hello holds an 8-byte key id and a 32-byte key")
    return MAGIC + key_id + ephemeral


def parse_hello(frame: bytes) -> Hello:
    """The HELLO in `frame`; FrameError when it is not one of this version."""
    if len(frame) != _HELLO_BYTES or frame[: len(MAGIC)] != MAGIC:
        raise FrameError("the first frame is not a data-plane hello of this version")
    start = len(MAGIC)
    return Hello(bytes(frame[start : start + KEY_ID_BYTES]), bytes(frame[start + KEY_ID_BYTES :]))


def welcome_frame(ephemeral: bytes) -> bytes:
    """A WELCOME frame's body."""
    if len(ephemeral) != KEY_BYTES:
        raise ValueError("a welcome holds a 32-byte key")
    return MAGIC + ephemeral


def parse_welcome(frame: bytes) -> bytes:
    """The server's ephemeral key in a WELCOME `frame`; FrameError when it is not one."""
    if len(frame) != _WELCOME_BYTES or frame[: len(MAGIC)] != MAGIC:
        raise FrameError("the answer is not a data-plane welcome of this version")
    return bytes(frame[len(MAGIC) :])


class FrameSplitter:
    """Splits a byte stream into frames of at most `max_frame_bytes` each."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.limit = max_frame_bytes
        self._buffer = bytearray()

    @property
    def limit(self) -> int:
        """The largest frame accepted, in bytes."""
        return self._max

    @limit.setter
    def limit(self, max_frame_bytes: int) -> None:
        # Raised after a handshake (whose frames are small) to the link's own limit.
        if not 0 < max_frame_bytes <= MAX_FRAME_LIMIT:
            raise ValueError(f"a frame limit is 1 to {MAX_FRAME_LIMIT} bytes")
        self._max = max_frame_bytes

    @property
    def buffered(self) -> int:
        """Bytes held of a frame not yet complete."""
        return len(self._buffer)

    def take_buffered(self) -> bytes:
        """The bytes held that make no whole frame yet, given up (a link handed to another process)."""
        held = bytes(self._buffer)
        self._buffer.clear()
        return held

    def feed(self, data: bytes, max_frames: int | None = None) -> list[bytes]:
        """The frames `data` completes, in order; FrameError for a length over the limit.

        With `max_frames`, at most that many; the rest stays held for the next call (``feed(b"")``
        takes it), so a handshake can raise the limit before the frames after it are read.
        """
        frames: list[bytes] = []
        if not self._buffer:
            # The common case: a piece that starts at a frame's header. Read it in place, and hold
            # only what is left of its last frame.
            offset = self._take(data, frames, max_frames)
            if offset < len(data):
                self._buffer += memoryview(data)[offset:]
            return frames
        self._buffer += data
        offset = self._take(self._buffer, frames, max_frames)
        del self._buffer[:offset]
        return frames

    def _take(self, data: bytes | bytearray, frames: list[bytes], max_frames: int | None) -> int:
        """Append the whole frames at the start of `data` to `frames`; return where they end."""
        offset, size = 0, len(data)
        while size - offset >= HEADER_BYTES and (max_frames is None or len(frames) < max_frames):
            (length,) = _LENGTH.unpack_from(data, offset)
            if length > self._max:
                raise FrameError(f"a frame of {length} bytes is over the {self._max} byte limit")
            end = offset + HEADER_BYTES + length
            if end > size:
                break
            frames.append(bytes(data[offset + HEADER_BYTES : end]))
            offset = end
        return offset

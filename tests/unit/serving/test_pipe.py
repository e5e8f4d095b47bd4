"""The agent-worker link: frames over a real socket pair, whole and in order, and bounded."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from meshnode.serving.pipe import FramePipe, LinkClosed, open_pipe

WAIT_S = 10.0
LIMIT = 8 * 1024 * 1024


class End:
    """One end of a link, with what arrived and whether the link was lost."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.lost = asyncio.Event()
        self._arrived = asyncio.Event()
        self.pipe: FramePipe | None = None

    def on_frame(self, frame: bytes | bytearray) -> None:
        self.frames.append(bytes(frame))
        self._arrived.set()

    async def until(self, count: int) -> list[bytes]:
        async with asyncio.timeout(WAIT_S):
            while len(self.frames) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.frames


async def link(limit: int = LIMIT) -> tuple[End, End]:
    left, right = End(), End()
    a, b = socket.socketpair()
    left.pipe = await open_pipe(a, left.on_frame, left.lost.set, limit)
    right.pipe = await open_pipe(b, right.on_frame, right.lost.set, limit)
    return left, right


async def test_frames_of_every_size_arrive_whole_and_in_order() -> None:
    left, right = await link()
    assert left.pipe is not None
    # Empty, small, around the read buffer (256 KiB) and well past it, mixed.
    sizes = [0, 1, 100, 64 * 1024, 256 * 1024 - 4, 256 * 1024, 256 * 1024 + 1, 3 * 1024 * 1024, 5, 0]
    sent = [os.urandom(size) for size in sizes]
    for frame in sent:
        assert left.pipe.send(frame) is None
    assert await right.until(len(sent)) == sent
    left.pipe.close()


async def test_many_small_frames_in_one_read_are_all_handed_on() -> None:
    left, right = await link()
    assert left.pipe is not None and right.pipe is not None
    sent = [i.to_bytes(4, "little") * (i % 50) for i in range(5000)]
    for frame in sent:
        left.pipe.send(frame)
    assert await right.until(len(sent)) == sent
    # And back the other way on the same link.
    right.pipe.send(b"answer")
    assert await left.until(1) == [b"answer"]
    left.pipe.close()


async def test_a_frame_over_the_limit_closes_the_link_before_it_is_read() -> None:
    left, right = await link(limit=1024)
    assert left.pipe is not None and right.pipe is not None
    left.pipe.send(b"fits")
    left.pipe.send(b"x" * 1025)
    left.pipe.send(b"never")
    async with asyncio.timeout(WAIT_S):
        await right.lost.wait()
        await left.lost.wait()  # the other end sees it close too
    assert right.frames == [b"fits"]
    assert isinstance(left.pipe.send(b"more"), LinkClosed)


async def test_closing_one_end_tells_the_other() -> None:
    left, right = await link()
    assert left.pipe is not None and right.pipe is not None
    left.pipe.close()
    async with asyncio.timeout(WAIT_S):
        await right.lost.wait()
    assert right.pipe.closed
    assert isinstance(right.pipe.send(b"late"), LinkClosed)


@pytest.mark.parametrize("split", [1, 3, 4, 5, 7])
async def test_a_frame_that_arrives_in_pieces_is_put_together(split: int) -> None:
    """Bytes written by hand, a few at a time: the header and the body may each be cut anywhere."""
    right = End()
    a, b = socket.socketpair()
    right.pipe = await open_pipe(b, right.on_frame, right.lost.set, LIMIT)
    a.setblocking(False)
    loop = asyncio.get_running_loop()
    raw = b"".join(len(f).to_bytes(4, "little") + f for f in (b"hello", b"", b"world" * 3))
    for i in range(0, len(raw), split):
        await loop.sock_sendall(a, raw[i : i + split])
    assert await right.until(3) == [b"hello", b"", b"world" * 3]
    a.close()
    async with asyncio.timeout(WAIT_S):
        await right.lost.wait()

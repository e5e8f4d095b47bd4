"""``FrameReader`` on real ZeroMQ sockets (inproc): every message reaches its callback, in order,
and a burst of large frames leaves the event loop between looks instead of holding it."""

from __future__ import annotations

import asyncio

import zmq

from meshnode.dataplane.frames import DRAIN_BYTES, DRAIN_MESSAGES, FrameReader

LARGE = DRAIN_BYTES // 2  # two of these fill one look


async def _burst(sizes: list[int]) -> list[object]:
    """Send a frame per size before the reader exists, then log frames and a marker as the loop runs them."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    receiver, sender = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    receiver.bind("inproc://burst")
    sender.connect("inproc://burst")
    for index, size in enumerate(sizes):
        sender.send(index.to_bytes(4, "big") + bytes(size))
    events: list[object] = []
    every = asyncio.Event()

    def on_frames(frames: list[bytes]) -> None:
        events.append(int.from_bytes(frames[0][:4], "big"))
        if len(events) - ("marker" in events) == len(sizes):
            every.set()

    reader = FrameReader(receiver, on_frames)  # its first look is scheduled now
    asyncio.get_running_loop().call_soon(events.append, "marker")  # and this right after it
    try:
        async with asyncio.timeout(10):
            await every.wait()
    finally:
        reader.close()
        sender.close(linger=0)
        ctx.term()
    return events


async def test_large_frames_yield_the_loop_between_looks() -> None:
    events = await _burst([LARGE] * 8)
    assert [event for event in events if event != "marker"] == list(range(8))  # all, in order
    # One look took two frames (DRAIN_BYTES), then the marker that was waiting ran before the rest.
    assert events.index("marker") == 2, events


async def test_small_frames_yield_after_a_look_of_drain_messages() -> None:
    events = await _burst([10] * (DRAIN_MESSAGES + 5))
    assert [event for event in events if event != "marker"] == list(range(DRAIN_MESSAGES + 5))
    assert events.index("marker") == DRAIN_MESSAGES, events[DRAIN_MESSAGES - 2 : DRAIN_MESSAGES + 2]

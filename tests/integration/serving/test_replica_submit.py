"""A peer's request submitted to a real replica (its worker a real process, supervised here by
``Replica``, no agent): the worker gets the call's bytes as the peer sent them, and its Reply comes
back as the worker wrote it, for the data-plane server to relay with its queue added; a stream's
reader (the direct path) still gets every answer decoded; and a failure comes decoded either way."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from meshnode.mesh.envelope import Call, Encoded, Envelope, Failure, Reply, decode_envelope, encode_envelope
from meshnode.serving.replica import Replica

from .replica_here import replica_settings


async def test_a_submitted_reply_comes_back_as_the_worker_wrote_it_and_a_streamed_one_decoded(
    tmp_path: Path,
) -> None:
    changed = asyncio.Event()
    replica = Replica(
        "echo",
        "meshnode.apps.echo:Echo",
        replica_id=f"echo-{os.getpid()}",
        data_dir=tmp_path,
        settings=replica_settings(),
        on_change=changed.set,
    )
    await replica.start()
    try:
        async with asyncio.timeout(60):
            while not replica.serving:
                await changed.wait()
                changed.clear()
        loop = asyncio.get_running_loop()

        async def submitted(call: Call) -> Envelope:
            answered: asyncio.Future[Envelope] = loop.create_future()
            replica.submit(call, answered.set_result, encode_envelope(call))
            return await asyncio.wait_for(answered, 30)

        call = Call("peer-1", "echo", {"text": "hello", "n": [1, 2.5]}, None, False, "", 30_000)
        answer = await submitted(call)
        assert isinstance(answer, Encoded) and answer.request_id == "peer-1"
        reply = decode_envelope(answer.frame, max_bytes=1 << 20)
        assert reply == Reply("peer-1", {"echo": {"text": "hello", "n": [1, 2.5]}}, reply.content_type)
        assert replica.in_flight == 0 and replica.speed.service_s is not None  # measured, as a Reply is

        bad = Call("peer-2", "echo", {"delay_s": "soon"}, None, False, "", 30_000)
        failure = await submitted(bad)
        assert isinstance(failure, Failure) and failure.kind == "invalid_request", failure

        streamed = [m async for m in replica.call(Call("local-1", "echo", {"x": 1}, None, False, "", 30_000))]
        assert streamed == [Reply("local-1", {"echo": {"x": 1}}, streamed[0].content_type)]
        assert replica.in_flight == 0
    finally:
        await replica.stop()

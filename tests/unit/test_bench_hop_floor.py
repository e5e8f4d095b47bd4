"""bench/hop_floor.py's hop: frames split anywhere reassemble, answers find their calls, tampering fails."""

from __future__ import annotations

import asyncio
import os

import pytest
from cryptography.exceptions import InvalidTag

from .bench_scripts import load_bench

bench = load_bench("hop_floor")


class Wire:
    """A transport that keeps what is written, for the test to hand to the other side."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def take(self) -> bytes:
        data, self.written = bytes(self.written), bytearray()
        return data


def test_calls_cross_to_the_backend_and_back_in_pieces_of_any_size() -> None:
    async def main() -> list[bytes]:
        key = os.urandom(32)
        link, backend = bench.Link(key), bench.Backend(key)
        to_backend, to_link = Wire(), Wire()
        link.connection_made(to_backend)
        backend.connection_made(to_link)
        calls = [link.call(b'{"text": "%d"}' % i) for i in range(3)]
        sent = to_backend.take()
        for i in range(len(sent)):  # one byte at a time: every split of a frame
            backend.data_received(sent[i : i + 1])
        answers = to_link.take()
        link.data_received(answers[:5])
        link.data_received(answers[5:])
        return [await call for call in calls]

    assert asyncio.run(main()) == [b'{"echo":{"text":"%d"}}' % i for i in range(3)]


def test_a_frame_altered_on_the_wire_is_refused() -> None:
    key = os.urandom(32)
    sealer, opener = bench.Sealer(key), bench.Sealer(key)
    sealed = bytearray(sealer.seal(b"hello"))
    sealed[0] ^= 1
    with pytest.raises(InvalidTag):
        opener.open(1, bytes(sealed))

"""The @models channel on a real store: manifests and chunks for good requests, clear refusals otherwise."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from meshnode.mesh.envelope import (
    Call,
    Chunk,
    Encoded,
    Envelope,
    Failure,
    Reply,
    decode_envelope,
    encode_envelope,
)
from meshnode.mesh.model_manifest import MIN_CHUNK_BYTES, Manifest
from meshnode.models.chunk_server import MODELS_CHANNEL, ChunkServer
from meshnode.models.store import ModelStore
from meshnode.models.throttle import Throttle

DATA = bytes(range(256)) * 40


def tiny_store(tmp_path: Path) -> ModelStore:
    """A store holding ``tiny``: one file of DATA, in chunks of MIN_CHUNK_BYTES."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "weights.bin").write_bytes(DATA)
    store = ModelStore(tmp_path / "store")
    store.scan()
    store.add("tiny", source, chunk_bytes=MIN_CHUNK_BYTES)
    return store


@pytest.fixture
def server(tmp_path: Path) -> ChunkServer:
    return ChunkServer(tiny_store(tmp_path), Throttle(0))


def wire(message: Envelope) -> Envelope:
    """`message` as the peer reads it (a piece comes encoded already, by the reading thread)."""
    return decode_envelope(encode_envelope(message), max_bytes=1 << 24)


def answers_to(server: ChunkServer, body: dict[str, Any]) -> list[Envelope]:
    async def run() -> list[Envelope]:
        call = Call("r1", MODELS_CHANNEL, body, None, False, "", 1000)
        return [message async for message in server.serve_peer(call)]

    return asyncio.run(run())


def ask(server: ChunkServer, body: dict[str, Any]) -> Envelope:
    answers = answers_to(server, body)
    assert len(answers) == 1
    return wire(answers[0])


def test_a_manifest_and_its_chunks_are_served(server: ChunkServer) -> None:
    answer = ask(server, {"op": "manifest", "name": "tiny"})
    assert isinstance(answer, Reply)
    manifest = Manifest.from_wire(answer.data["manifest"])
    assert answer.data["digest"] == manifest.digest and answer.data["name"] == "tiny"
    pieces = []
    for chunk in manifest.chunks():
        body = {"op": "chunk", "digest": manifest.digest, "file": 0, "chunk": chunk.chunk_index}
        reply = ask(server, body)
        assert isinstance(reply, Reply)
        pieces.append(reply.data)
    assert b"".join(pieces) == DATA
    assert server.served_chunks == 3 and server.served_bytes == len(DATA)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"op": "manifest", "name": "other"}, "not_found"),
        ({"op": "manifest", "name": "../etc"}, "bad_request"),
        ({"op": "manifest"}, "bad_request"),
        ({"op": "chunk", "digest": "0" * 64, "file": 0, "chunk": 0}, "not_found"),
        ({"op": "chunk", "digest": "../../x", "file": 0, "chunk": 0}, "bad_request"),
        ({"op": "chunk", "digest": "DIGEST", "file": 0, "chunk": 3}, "bad_request"),
        ({"op": "chunk", "digest": "DIGEST", "file": 1, "chunk": 0}, "bad_request"),
        ({"op": "chunk", "digest": "DIGEST", "file": -1, "chunk": 0}, "bad_request"),
        ({"op": "chunk", "digest": "DIGEST", "file": True, "chunk": 0}, "bad_request"),
        ({"op": "chunk", "digest": "DIGEST", "file": 0, "chunk": 2**40}, "bad_request"),
        ({"op": "chunk", "digest": "DIGEST", "file": "0", "chunk": 0}, "bad_request"),
        ({"op": "delete", "name": "tiny"}, "bad_request"),
    ],
)
def test_bad_or_unknown_requests_get_a_clear_refusal(
    server: ChunkServer, body: dict[str, Any], kind: str
) -> None:
    manifest = ask(server, {"op": "manifest", "name": "tiny"})
    assert isinstance(manifest, Reply)
    body = {key: manifest.data["digest"] if value == "DIGEST" else value for key, value in body.items()}
    answer = ask(server, body)
    assert isinstance(answer, Failure) and answer.kind == kind and not answer.retryable, answer
    assert server.refused[kind] >= 1


def test_under_a_bound_a_chunk_leaves_in_pieces_paced_at_the_rate(tmp_path: Path) -> None:
    """Each piece waits for its own bytes in the throttle: the chunk is not one burst at full speed."""
    store = tiny_store(tmp_path)
    model = store.get("tiny")
    assert model is not None
    piece, rate = 1024, 100_000.0
    server = ChunkServer(store, Throttle(rate, burst_bytes=piece), piece_bytes=piece)

    async def run() -> tuple[float, list[tuple[float, Envelope]]]:
        loop = asyncio.get_running_loop()
        body = {"op": "chunk", "digest": model.digest, "file": 0, "chunk": 0}
        call = Call("r1", MODELS_CHANNEL, body, None, False, "", 1000)
        asked_at = loop.time()
        return asked_at, [(loop.time(), message) async for message in server.serve_peer(call)]

    asked_at, sent = asyncio.run(run())
    assert all(isinstance(message, Encoded) for _, message in sent)  # encoded by the reading thread
    answers = [(at, wire(message)) for at, message in sent]
    *pieces, (last_at, last) = answers
    assert all(isinstance(message, Chunk) for _, message in pieces) and isinstance(last, Reply)
    assert [message.seq for _, message in pieces if isinstance(message, Chunk)] == [0, 1, 2]
    data = [message.data for _, message in answers if isinstance(message, Chunk | Reply)]
    assert b"".join(data) == DATA[:MIN_CHUNK_BYTES] and all(len(part) == piece for part in data)
    # One piece may go at once (the burst); the other three wait for their bytes at the rate. From
    # the ask, not the first piece's arrival: reading that piece in its thread may take a while (CI
    # saw 3 ms), and the rate's clock runs meanwhile.
    assert last_at - asked_at >= 0.9 * 3 * piece / rate
    assert server.served_chunks == 1 and server.served_bytes == MIN_CHUNK_BYTES

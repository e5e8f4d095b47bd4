"""The messages that hand a link to a worker, and a file answer's pieces (pure)."""

from __future__ import annotations

from meshnode.mesh.envelope import Chunk, Failure, Hello, Reply, decode_envelope, encode_envelope
from meshnode.mesh.reply_pieces import reply_pieces
from meshnode.mesh.worker_link import BIND_ID, ask_for_worker, asked_for, declined, is_bound, worker_bound


def _wire(message: Hello | Failure) -> Hello | Failure:
    decoded = decode_envelope(encode_envelope(message), max_bytes=4096)
    assert isinstance(decoded, Hello | Failure)
    return decoded


def test_the_three_messages_survive_the_wire_and_are_told_apart() -> None:
    ask, bound, no = _wire(ask_for_worker("echo")), _wire(worker_bound()), _wire(declined("no replica here"))
    assert asked_for(ask) == "echo"
    assert asked_for(bound) is None and asked_for(no) is None
    assert is_bound(bound) and not is_bound(ask) and not is_bound(no)
    assert isinstance(no, Failure) and (no.request_id, no.kind, no.retryable) == (BIND_ID, "declined", False)


def test_a_hello_asks_for_a_worker_only_when_it_names_a_deployment() -> None:
    assert asked_for(Hello(BIND_ID, {"replica": 5})) is None
    assert asked_for(Hello(BIND_ID, {})) is None
    assert not is_bound(Hello(BIND_ID, {"bound": "yes"}))


def test_a_file_answer_goes_in_pieces_of_the_chunk_size_and_anything_else_whole() -> None:
    pieces = reply_pieces(Reply("r", b"abcdefghij", "image/png", 3), 4)
    assert [type(piece) for piece in pieces] == [Chunk, Chunk, Reply]
    assert [bytes(piece.data) for piece in pieces] == [b"abcd", b"efgh", b"ij"]  # type: ignore[union-attr]
    assert [piece.seq for piece in pieces[:2]] == [0, 1]  # type: ignore[union-attr]
    last = pieces[-1]
    assert isinstance(last, Reply) and (last.content_type, last.queue) == ("image/png", 3)
    small, text = Reply("r", b"abcd", "image/png"), Reply("r", {"x": "y" * 100}, "application/json")
    failure = Failure("r", "internal", "x" * 100, False)
    assert reply_pieces(small, 4) == [small]
    assert reply_pieces(text, 4) == [text]
    assert reply_pieces(failure, 4) == [failure]

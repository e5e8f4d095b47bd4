"""``InFlight``: a replica's calls at its worker. A peer's submitted call gets its Reply as the
worker wrote it (bytes, not decoded); a stream's reader gets every answer decoded; an answer for a
call that ended goes nowhere; a worker that exits fails every call as retryable; a call the worker
still has past its deadline and the grace is named as hung until the worker is restarted."""

from __future__ import annotations

import asyncio

from meshnode.dataplane.answers import Answers
from meshnode.mesh.envelope import Call, Chunk, Encoded, Envelope, Failure, Reply, encode_envelope
from meshnode.serving.in_flight import InFlight
from meshnode.serving.submitted import Submitted


def make_call(rid: str) -> Call:
    return Call(rid, "echo", {"text": "hi"}, None, False, "", 60_000)


def submitted(rid: str, answers: list[Envelope]) -> Submitted:
    return Submitted(make_call(rid), answers.append, lambda _answer: None)


async def test_a_submitted_call_gets_its_reply_as_the_worker_wrote_it() -> None:
    table, answers = InFlight(), []
    now = asyncio.get_running_loop().time()
    table.add("peer-1", submitted("peer-1", answers), now + 60)
    frame = encode_envelope(Reply("peer-1", {"echo": "hi"}, "application/json"))
    assert table.take_reply(frame)
    assert answers == [Encoded("peer-1", frame)]
    assert table.hung(now + 3600, 1.0) == []  # answered: no longer the worker's to finish
    table.close()


async def test_a_streams_reader_gets_decoded_answers_and_frames_it_cannot_take_are_left_to_decode() -> None:
    table = InFlight()
    now = asyncio.get_running_loop().time()
    answers: Answers[Envelope | None] = Answers()
    table.add("local-1", answers, now + 60)
    reply = Reply("local-1", {"echo": "hi"}, "application/json")
    frame = encode_envelope(reply)
    assert not table.take_reply(frame)  # a stream's: decoded by the replica, then answered
    assert not table.take_reply(bytearray(frame))  # a large frame's own buffer: decoded too
    assert not table.take_reply(encode_envelope(Chunk("local-1", 0, "piece")))
    assert not table.take_reply(encode_envelope(Reply("nobody", 1, "")))  # no such call
    table.answer(Chunk("local-1", 0, "piece"))
    table.answer(reply)
    assert [await answers.get(), await answers.get()] == [Chunk("local-1", 0, "piece"), reply]
    table.close()


async def test_an_ended_call_counts_no_more_and_its_late_answers_go_nowhere() -> None:
    table, answers = InFlight(), []
    now = asyncio.get_running_loop().time()
    deadline = table.add("gone", submitted("gone", answers), now + 60)
    assert "gone" in table and len(table) == 1
    deadline.cancel()
    table.forget("gone")
    assert "gone" not in table and len(table) == 0
    assert not table.take_reply(encode_envelope(Reply("gone", 1, "")))
    table.answer(Failure("gone", "internal", "late", False))
    assert answers == []
    table.close()


async def test_a_worker_that_exits_fails_every_call_as_retryable_and_none_is_hung() -> None:
    table, first, second = InFlight(), [], []
    now = asyncio.get_running_loop().time()
    table.add("a", submitted("a", first), now + 1)
    table.add("b", submitted("b", second), now + 60)
    assert table.hung(now + 1.5, 1.0) == []  # within the grace
    assert table.hung(now + 2.5, 1.0) == ["a"]
    table.fail_all("the replica's worker exited with code -9")
    assert first == [Failure("a", "replica_crashed", "the replica's worker exited with code -9", True)]
    assert second == [Failure("b", "replica_crashed", "the replica's worker exited with code -9", True)]
    assert table.hung(now + 3600, 1.0) == []
    table.close()


async def test_a_call_past_its_deadline_hears_of_it_from_the_timer() -> None:
    table = InFlight()
    answers: Answers[Envelope | None] = Answers()
    table.add("slow", answers, asyncio.get_running_loop().time() + 0.02)
    assert await asyncio.wait_for(answers.get(), 5) is None  # its reader answers 504
    assert table.hung(asyncio.get_running_loop().time() + 10, 1.0) == ["slow"]  # the worker still has it
    table.forgive()
    assert table.hung(asyncio.get_running_loop().time() + 10, 1.0) == []
    table.close()

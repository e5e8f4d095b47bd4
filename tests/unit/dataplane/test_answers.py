"""``Answers``: a call's answers reach its one reader in order, waiting or not, and a reader that
stops waiting (cancelled: its client went away) loses none of them. ``LastAnswer``: a call that
wants only its last answer gets that one, a file's pieces joined into it."""

from __future__ import annotations

import asyncio

import pytest

from meshnode.dataplane.answers import Answers, LastAnswer
from meshnode.mesh.envelope import Chunk, Failure, Progress, Reply


async def test_answers_come_in_order_whether_they_were_there_or_awaited() -> None:
    answers: Answers[int | None] = Answers()
    answers.put_nowait(1)
    answers.put_nowait(2)
    assert [await answers.get(), await answers.get()] == [1, 2]
    loop = asyncio.get_running_loop()
    loop.call_soon(answers.put_nowait, 3)
    loop.call_soon(answers.put_nowait, None)  # the deadline's marker is an answer like any other
    assert await asyncio.wait_for(answers.get(), 5) == 3
    assert await asyncio.wait_for(answers.get(), 5) is None
    assert answers.qsize() == 0


async def test_a_cancelled_wait_loses_nothing_and_a_later_put_still_reaches_the_next_get() -> None:
    answers: Answers[str] = Answers()
    waiting = asyncio.create_task(answers.get())
    await asyncio.sleep(0)  # the task is now waiting on its future
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    answers.put_nowait("late")  # no reader waits: kept, never an error on a cancelled future
    assert answers.qsize() == 1
    assert await asyncio.wait_for(answers.get(), 5) == "late"


async def test_a_put_wakes_the_waiting_reader_once() -> None:
    answers: Answers[int] = Answers()
    reader = asyncio.create_task(answers.get())
    await asyncio.sleep(0)
    answers.put_nowait(7)
    answers.put_nowait(8)  # the reader's future is already done: no second wake-up, no error
    assert await asyncio.wait_for(reader, 5) == 7
    assert await asyncio.wait_for(answers.get(), 5) == 8


async def test_the_last_answer_joins_a_files_pieces_drops_progress_and_takes_nothing_after_it() -> None:
    answer = LastAnswer()
    answer.put_nowait(Progress("r-1", 1, 4))
    answer.put_nowait(Chunk("r-1", 0, b"ab"))
    answer.put_nowait(Chunk("r-1", 1, b"cd"))
    answer.put_nowait(Reply("r-1", b"ef", "image/png", 3))
    answer.put_nowait(Failure("r-1", "peer_lost", "too late", True))
    answer.put_nowait(None)

    assert await asyncio.wait_for(answer.wait(), 5) == Reply("r-1", b"abcdef", "image/png", 3)


async def test_the_last_answer_is_a_failure_or_none_for_the_deadline_as_it_came_first() -> None:
    failed, late = LastAnswer(), LastAnswer()
    failed.put_nowait(Failure("r-1", "predictor", "bad input", False))
    late.put_nowait(None)
    late.put_nowait(Reply("r-2", {"ok": True}, "application/json"))

    assert await asyncio.wait_for(failed.wait(), 5) == Failure("r-1", "predictor", "bad input", False)
    assert await asyncio.wait_for(late.wait(), 5) is None

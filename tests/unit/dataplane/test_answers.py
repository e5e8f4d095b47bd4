"""``Answers``: a call's answers reach its one reader in order, waiting or not, and a reader that
stops waiting (cancelled: its client went away) loses none of them."""

from __future__ import annotations

import asyncio

import pytest

from meshnode.dataplane.answers import Answers


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

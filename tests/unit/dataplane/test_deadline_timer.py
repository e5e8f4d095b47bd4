"""``DeadlineTimer``: a call's sink hears of its deadline when it passes (on the real event loop),
never after it was cancelled, whatever order deadlines were set in; and one expiry that fails
does not keep the others from theirs."""

from __future__ import annotations

import asyncio

from meshnode.dataplane.deadline_timer import DeadlineTimer


async def test_each_deadline_expires_its_item_when_it_passes_earliest_first() -> None:
    loop = asyncio.get_running_loop()
    expired: list[str] = []
    timer: DeadlineTimer[str] = DeadlineTimer(expired.append)
    now = loop.time()
    timer.at(now + 0.06, "later")
    timer.at(now + 0.02, "sooner")  # earlier than the one armed: the timer is armed for it instead
    done = loop.create_future()
    timer.at(now + 0.08, "last")
    DeadlineTimer(lambda _: done.set_result(None)).at(now + 0.1, "after all")
    await asyncio.wait_for(done, 5)
    assert expired == ["sooner", "later", "last"]
    assert len(timer) == 0
    assert loop.time() >= now + 0.08 - 0.001


async def test_a_cancelled_deadline_never_expires_and_the_others_still_do() -> None:
    loop = asyncio.get_running_loop()
    expired: list[str] = []
    timer: DeadlineTimer[str] = DeadlineTimer(expired.append)
    now = loop.time()
    answered = timer.at(now + 0.01, "answered")
    timer.at(now + 0.03, "waiting")
    answered.cancel()
    done = loop.create_future()
    DeadlineTimer(lambda _: done.set_result(None)).at(now + 0.06, "after all")
    await asyncio.wait_for(done, 5)
    assert expired == ["waiting"]


async def test_an_expiry_that_fails_does_not_keep_the_others_from_theirs() -> None:
    loop = asyncio.get_running_loop()
    expired: list[str] = []

    def expire(item: str) -> None:
        if item == "broken":
            raise RuntimeError("a sink that fails")
        expired.append(item)

    timer: DeadlineTimer[str] = DeadlineTimer(expire)
    now = loop.time()
    timer.at(now + 0.01, "broken")
    timer.at(now + 0.01, "fine")
    timer.at(now + 0.03, "next")
    done = loop.create_future()
    DeadlineTimer(lambda _: done.set_result(None)).at(now + 0.06, "after all")
    await asyncio.wait_for(done, 5)
    assert expired == ["fine", "next"]


async def test_an_expiry_may_set_a_new_deadline() -> None:
    loop = asyncio.get_running_loop()
    expired: list[str] = []
    done = loop.create_future()

    def expire(item: str) -> None:
        expired.append(item)
        if item == "first":
            timer.at(loop.time() + 0.01, "set by the first")
        else:
            done.set_result(None)

    timer: DeadlineTimer[str] = DeadlineTimer(expire)
    timer.at(loop.time() + 0.01, "first")
    await asyncio.wait_for(done, 5)
    assert expired == ["first", "set by the first"]


async def test_a_closed_timer_expires_nothing() -> None:
    loop = asyncio.get_running_loop()
    expired: list[str] = []
    timer: DeadlineTimer[str] = DeadlineTimer(expired.append)
    timer.at(loop.time() + 0.01, "held")
    timer.close()
    done = loop.create_future()
    DeadlineTimer(lambda _: done.set_result(None)).at(loop.time() + 0.05, "after all")
    await asyncio.wait_for(done, 5)
    assert expired == []

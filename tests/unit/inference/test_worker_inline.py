"""Fast sync predicts run inline on the worker's loop; everything that needs the pool stays on it."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from meshnode.inference.inline_calls import DEFAULT_PROBATION
from meshnode.inference.predictor import InvalidRequest
from meshnode.inference.progress import report_progress
from meshnode.inference.worker import Worker
from meshnode.mesh.envelope import Call, Failure, Progress, Reply

from ..loop_turns import until
from .test_worker import WAIT_S, Sent, call


class Threads:
    """A one-at-a-time predictor that says which thread ran it."""

    def __init__(self) -> None:
        self.threads: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.running = 0
        self.overlapped = False

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        self.running += 1
        self.overlapped |= self.running > 1
        try:
            self.threads.append(threading.get_ident())
            match request.get("do"):
                case "sleep":
                    time.sleep(float(request["s"]))  # a slow model's work
                case "hold":
                    self.started.set()
                    return {"released": self.release.wait(WAIT_S)}
                case "raise":
                    raise ValueError("predictor says no")
                case "invalid":
                    raise InvalidRequest('"x" must be a number')
                case "report":
                    report_progress(1, 2)
                    report_progress(2, 2)
            return {"n": request.get("n")}
        finally:
            self.running -= 1


async def _warm(worker: Worker, sent: Sent, calls: int = DEFAULT_PROBATION) -> None:
    """Answer `calls` fast calls, one after the other, so the worker learns the predictor is fast."""
    for i in range(calls):
        worker.handle(call(f"warm{i}", {"n": i}))
        await sent.final(f"warm{i}")
        await _settled(worker)


async def _settled(worker: Worker) -> None:
    """Until the task that answered has ended: its done callbacks run a loop turn after its answer."""
    await until(lambda: not worker._tasks, "the worker has answered every call")


async def test_a_fast_predictor_runs_on_the_loop_after_its_probation() -> None:
    app, sent = Threads(), Sent()
    worker = Worker(app, "r1", sent)
    await _warm(worker, sent)
    assert threading.get_ident() not in app.threads  # the probation ran on the pool
    worker.handle(call("q1", {"n": 7}))
    # Answered before handle() returned: no task, no thread.
    assert sent.of("q1") == [Reply("q1", {"n": 7}, "application/json")]
    assert app.threads[-1] == threading.get_ident()
    worker.close()


async def test_a_slow_call_sends_the_predictor_back_to_the_pool() -> None:
    app, sent = Threads(), Sent()
    worker = Worker(app, "r1", sent)
    await _warm(worker, sent)
    worker.handle(call("slow", {"do": "sleep", "s": 0.01}))
    assert isinstance(sent.of("slow")[-1], Reply)
    worker.handle(call("next", {"n": 1}))
    await sent.final("next")
    assert app.threads[-1] != threading.get_ident()
    worker.close()


async def test_errors_of_inline_calls_are_answered_as_on_the_pool() -> None:
    app, sent = Threads(), Sent()
    worker = Worker(app, "r1", sent)
    await _warm(worker, sent)
    worker.handle(call("bad", {"do": "raise"}))
    worker.handle(call("invalid", {"do": "invalid"}))
    bad, invalid = sent.of("bad"), sent.of("invalid")
    assert app.threads[-1] == threading.get_ident()
    assert len(bad) == 1 and isinstance(bad[0], Failure) and bad[0].kind == "predictor"
    assert "predictor says no" in bad[0].message
    assert len(invalid) == 1 and isinstance(invalid[0], Failure) and invalid[0].kind == "invalid_request"
    worker.close()


async def test_a_call_that_asks_for_progress_runs_on_the_pool_and_gets_it() -> None:
    app, sent = Threads(), Sent()
    worker = Worker(app, "r1", sent)
    await _warm(worker, sent)
    asked = Call("p1", "dep", {"do": "report"}, None, False, "application/json", 10_000, progress=True)
    worker.handle(asked)
    assert isinstance(await sent.final("p1"), Reply)
    assert app.threads[-1] != threading.get_ident()
    assert [type(m) for m in sent.of("p1")] == [Progress, Progress, Reply]
    worker.close()


async def test_calls_behind_one_on_the_pool_wait_their_turn_there() -> None:
    app, sent = Threads(), Sent()
    worker = Worker(app, "r1", sent)
    await _warm(worker, sent)
    asked = Call("p1", "dep", {"do": "report"}, None, False, "application/json", 10_000, progress=True)
    worker.handle(asked)  # fast, but it wants progress: on the pool
    for i in range(5):
        worker.handle(call(f"q{i}", {"n": i}))  # not inline ahead of it
    for i in range(5):
        await sent.final(f"q{i}")
    order = [m.request_id for m in sent.messages if isinstance(m, Reply)][-6:]
    assert order == ["p1", "q0", "q1", "q2", "q3", "q4"]
    assert not app.overlapped
    worker.close()


async def test_an_app_that_runs_calls_side_by_side_gets_them_inline_too_when_fast() -> None:
    class Parallel(Threads):
        max_concurrency = 4

    app, sent = Parallel(), Sent()
    worker = Worker(app, "r1", sent)
    await _warm(worker, sent)
    worker.handle(call("q1", {"n": 1}))
    assert sent.of("q1") and app.threads[-1] == threading.get_ident()
    worker.close()


async def test_an_app_that_says_no_never_gets_inline_calls() -> None:
    class Never(Threads):
        inline_calls = False

    app, sent = Never(), Sent()
    worker = Worker(app, "r1", sent)
    await _warm(worker, sent, DEFAULT_PROBATION * 2)
    assert threading.get_ident() not in app.threads
    worker.close()


async def test_the_loop_stays_free_while_a_slow_predictor_runs_on_the_pool() -> None:
    app, sent = Threads(), Sent()
    worker = Worker(app, "r1", sent)
    worker.handle(call("slow", {"do": "hold"}))  # inline, this would hold the loop for WAIT_S
    assert await asyncio.to_thread(app.started.wait, WAIT_S)  # the loop hands the result back
    app.release.set()
    assert await sent.final("slow") == Reply("slow", {"released": True}, "application/json")
    worker.close()

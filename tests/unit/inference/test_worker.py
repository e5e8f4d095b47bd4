"""The worker's core without a socket: envelopes in through ``handle``, envelopes out through ``send``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from meshnode.inference.predictor import InvalidRequest, Predictor, declared_kinds
from meshnode.inference.worker import EXIT_SETUP_FAILED, Worker, set_up
from meshnode.mesh.envelope import (
    Call,
    Cancel,
    Chunk,
    Envelope,
    Failure,
    Hello,
    Hints,
    Progress,
    Reply,
    encode_envelope,
)

WAIT_S = 10.0


class Echo:
    max_concurrency = 2

    def __init__(self) -> None:
        self.hints = ["a"]
        self.closed = False

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        match request.get("do"):
            case "raise":
                raise ValueError("predictor says no")
            case "invalid":
                raise InvalidRequest('"x" must be a number')
            case "unencodable":
                return {1, 2}  # a set: msgpack cannot carry it
            case "hint":
                self.hints = ["a", "b"]
        return {"echo": request, "header": header}

    async def async_predict(self, request: dict[str, Any]) -> AsyncIterator[dict[str, int]]:
        for i in range(int(request.get("n", 3))):
            if request.get("forever"):
                await asyncio.Event().wait()  # until cancelled
            yield {"i": i}

    def provide_hints(self) -> list[str]:
        return self.hints

    def close(self) -> None:
        self.closed = True


class Batches:
    max_batch_size = 4
    max_batch_wait_s = 0.05

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        return self.predict_batch([request])[0]

    def predict_batch(self, requests: list[dict[str, Any]]) -> list[Any]:
        self.sizes.append(len(requests))
        return [{"n": r["n"], "batch": len(requests)} for r in requests]


class Sent:
    """What a worker sent, and a way to wait for the final answer of a request."""

    def __init__(self) -> None:
        self.messages: list[Envelope] = []
        self._changed = asyncio.Event()

    def __call__(self, message: Envelope) -> None:
        encode_envelope(message)  # what a socket would do first: a value msgpack refuses raises here
        self.messages.append(message)
        self._changed.set()

    async def final(self, request_id: str) -> Reply | Failure:
        async with asyncio.timeout(WAIT_S):
            while True:
                for message in self.messages:
                    if isinstance(message, Reply | Failure) and message.request_id == request_id:
                        return message
                self._changed.clear()
                await self._changed.wait()

    def of(self, request_id: str) -> list[Envelope]:
        return [m for m in self.messages if m.request_id == request_id]


def call(rid: str, body: dict[str, Any], *, stream: bool = False, accept: str = "application/json") -> Call:
    return Call(rid, "dep", body, accept, stream, accept, 10_000)


async def test_hello_tells_the_agent_what_the_replica_can_do() -> None:
    worker = Worker(Echo(), "r1", Sent())
    hello = worker.hello()
    assert isinstance(hello, Hello)
    assert hello.request_id == "r1"
    assert hello.info["hints"] == ["a"] and hello.info["models"] == ["a"]
    assert hello.info["max_concurrency"] == 2 and hello.info["streaming"] is True
    worker.close()


async def test_a_call_is_answered_with_a_reply() -> None:
    sent = Sent()
    worker = Worker(Echo(), "r1", sent)
    worker.handle(call("q1", {"x": 1}))
    assert await sent.final("q1") == Reply(
        "q1", {"echo": {"x": 1}, "header": "application/json"}, "application/json"
    )
    worker.close()


@pytest.mark.parametrize(
    ("do", "kind"), [("raise", "predictor"), ("invalid", "invalid_request"), ("unencodable", "predictor")]
)
async def test_a_failing_predict_is_answered_with_a_failure(do: str, kind: str) -> None:
    sent = Sent()
    worker = Worker(Echo(), "r1", sent)
    worker.handle(call("q1", {"do": do}))
    failure = await sent.final("q1")
    assert isinstance(failure, Failure)
    assert failure.kind == kind and not failure.retryable
    worker.close()


async def test_a_stream_sends_chunks_in_order_then_an_empty_reply() -> None:
    sent = Sent()
    worker = Worker(Echo(), "r1", sent)
    worker.handle(call("s1", {"n": 3}, stream=True))
    await sent.final("s1")
    assert sent.of("s1") == [
        Chunk("s1", 0, {"i": 0}),
        Chunk("s1", 1, {"i": 1}),
        Chunk("s1", 2, {"i": 2}),
        Reply("s1", None, "text/event-stream"),
    ]
    worker.close()


async def test_cancel_stops_a_stream_and_says_so() -> None:
    sent = Sent()
    worker = Worker(Echo(), "r1", sent)
    worker.handle(call("s1", {"forever": True}, stream=True))
    await asyncio.sleep(0)  # let the stream start
    worker.handle(Cancel("s1"))
    assert await sent.final("s1") == Failure("s1", "cancelled", "cancelled by the caller", False)
    worker.close()


async def test_changed_hints_follow_the_answer() -> None:
    sent = Sent()
    worker = Worker(Echo(), "r1", sent)
    worker.hello()
    worker.handle(call("q1", {"do": "hint"}))
    await sent.final("q1")
    for _ in range(10):  # the hints go right after the reply, in the same task
        if any(isinstance(m, Hints) for m in sent.messages):
            break
        await asyncio.sleep(0)
    assert Hints("r1", ("a", "b"), ("a", "b")) in sent.messages
    worker.close()


async def test_concurrent_calls_of_a_batching_app_share_a_batch() -> None:
    sent = Sent()
    app = Batches()
    worker = Worker(app, "r1", sent)
    for n in range(3):
        worker.handle(call(f"q{n}", {"n": n}))
    answers = [await sent.final(f"q{n}") for n in range(3)]
    assert [a.data for a in answers if isinstance(a, Reply)] == [{"n": n, "batch": 3} for n in range(3)]
    assert app.sizes == [3]
    worker.close()


def test_close_closes_the_app() -> None:
    app = Echo()
    Worker(app, "r1", Sent()).close()
    assert app.closed


def test_set_up_returns_none_when_the_app_cannot_load(tmp_path: Path) -> None:
    assert set_up(f"{tmp_path / 'missing.py'}:Nothing", tmp_path) is None
    assert EXIT_SETUP_FAILED == 3  # the supervisor reads this exit code


class Chat(Predictor):
    serves = ("chat", "completions")

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        return {}


class Misspelt:
    serves = ("embedding",)  # no such kind: "embeddings"

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        return {}


class Lettered:
    serves = "chat"  # a bare string, not a tuple

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        return {}


async def test_hello_says_what_the_app_serves_subclass_or_not() -> None:
    for app, expected in ((Chat(), ["chat", "completions"]), (Echo(), [])):
        worker = Worker(app, "r1", Sent())
        assert worker.hello().info["serves"] == expected
        worker.close()


@pytest.mark.parametrize(("app", "error"), [(Misspelt, ValueError), (Lettered, TypeError)])
def test_a_wrong_serves_declaration_is_refused_naming_it(app: type, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"embedding|chat"):
        declared_kinds(app())


def test_set_up_fails_an_app_with_an_unknown_kind_before_its_setup(tmp_path: Path) -> None:
    source = tmp_path / "misspelt.py"
    source.write_text(
        "class Misspelt:\n"
        "    serves = ('embedding',)\n"
        "    def setup(self):\n"
        "        raise AssertionError('setup must not run')\n"
        "    def predict(self, request, header=None):\n"
        "        return {}\n"
    )
    assert set_up(f"{source}:Misspelt", tmp_path) is None


# -- progress ------------------------------------------------------------------------------------


class Reporting(Predictor):
    """Reports each of `steps` steps from predict (a thread) and from async_predict (the loop)."""

    max_concurrency = 2

    def __init__(self) -> None:
        self.started = threading.Event()

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        steps = int(request.get("steps", 3))
        for step in range(1, steps + 1):
            if request.get("until_cancelled"):
                self.started.set()
                # Work that takes a while: 1 ms a step, at most 20 s, unless cancelled.
                time.sleep(0.001)
                self.report_progress(1, 2)
                continue
            self.report_progress(step, steps, JPEG)
        return {"steps": steps}

    async def async_predict(self, request: dict[str, Any]) -> AsyncIterator[str]:
        for step in range(1, 4):
            self.report_progress(step, 3)
            yield f"piece {step}"


JPEG = b"\xff\xd8\xff\xe0 a jpeg"
HOUR_S = 3600.0


def progress_call(rid: str, body: dict[str, Any], *, stream: bool = False, progress: bool = True) -> Call:
    return Call(rid, "dep", body, None, stream, "application/json", 10_000, progress=progress)


async def test_progress_from_predict_arrives_before_the_reply_when_asked() -> None:
    sent = Sent()
    # Throttled at an hour: the first step and the last.
    worker = Worker(Reporting(), "r1", sent, progress_interval_s=HOUR_S)
    worker.handle(progress_call("p1", {"steps": 3}))
    await sent.final("p1")
    assert sent.of("p1") == [
        Progress("p1", 1, 3, JPEG),
        Progress("p1", 3, 3, JPEG),
        Reply("p1", {"steps": 3}, "application/json"),
    ]
    worker.close()


async def test_a_call_that_did_not_ask_gets_exactly_the_answer_without_progress() -> None:
    sent = Sent()
    worker = Worker(Reporting(), "r1", sent)
    worker.handle(progress_call("p1", {"steps": 3}, progress=False))
    worker.handle(progress_call("s1", {}, stream=True, progress=False))
    await sent.final("p1")
    await sent.final("s1")
    assert sent.of("p1") == [Reply("p1", {"steps": 3}, "application/json")]
    assert [type(m) for m in sent.of("s1")] == [Chunk, Chunk, Chunk, Reply]
    worker.close()


async def test_progress_from_a_stream_is_in_order_with_its_chunks() -> None:
    sent = Sent()
    worker = Worker(Reporting(), "r1", sent, progress_interval_s=HOUR_S)
    worker.handle(progress_call("s1", {}, stream=True))
    await sent.final("s1")
    assert sent.of("s1") == [
        Progress("s1", 1, 3),
        Chunk("s1", 0, "piece 1"),
        Chunk("s1", 1, "piece 2"),
        Progress("s1", 3, 3),  # step 2 came within the throttle's interval
        Chunk("s1", 2, "piece 3"),
        Reply("s1", None, "text/event-stream"),
    ]
    worker.close()


@pytest.mark.parametrize("progress", [True, False])
async def test_cancel_stops_a_running_predict_at_its_next_report(progress: bool) -> None:
    sent = Sent()
    app = Reporting()
    worker = Worker(app, "r1", sent)
    worker.handle(progress_call("p1", {"steps": 20_000, "until_cancelled": True}, progress=progress))
    assert await asyncio.to_thread(app.started.wait, WAIT_S)
    worker.handle(Cancel("p1"))
    assert await sent.final("p1") == Failure("p1", "cancelled", "cancelled by the caller", False)
    # The thread is free again: the next request answers.
    worker.handle(progress_call("p2", {"steps": 1}, progress=False))
    assert await sent.final("p2") == Reply("p2", {"steps": 1}, "application/json")
    worker.close()

"""The predict lane answers first and finishes the call after: a call's bookkeeping once its Reply
was read (the link's or the replica's) is off the request's latency, and never lost."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

from fastapi import FastAPI
from starlette.types import Message

from meshnode.dataplane.forward import Served
from meshnode.http.predict import PredictLane, PredictLimits
from meshnode.mesh.envelope import Call, Envelope, Reply


def lane_answering(data: object, events: list[str]) -> PredictLane:
    """A lane whose every call answers `data` and notes in `events` when its bookkeeping ran."""

    async def serve(call: Call, hint: str | None = None, *, affinity: str | None = None) -> Served:
        async def rest() -> AsyncGenerator[Envelope, None]:
            events.append("bookkeeping")
            return
            yield

        return Served(Reply(call.request_id, data, None), rest(), ("n0", "n1"), 1)

    return PredictLane(FastAPI(), serve, PredictLimits(5.0, 1000))


async def post(lane: PredictLane, events: list[str]) -> list[Message]:
    sent: list[Message] = []
    body = json.dumps({"x": 1}).encode()
    received = False

    async def receive() -> Message:
        nonlocal received
        assert not received, "one body message is all there is"
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        events.append(message["type"])
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/predict/echo",
        "headers": [(b"content-length", str(len(body)).encode())],
        "query_string": b"",
    }
    await lane(scope, receive, send)
    return sent


async def test_a_call_s_bookkeeping_runs_after_its_answer_left() -> None:
    events: list[str] = []
    sent = await post(lane_answering({"echo": 1}, events), events)
    assert events == ["http.response.start", "http.response.body", "bookkeeping"]
    assert sent[0]["status"] == 200 and json.loads(sent[1]["body"]) == {"echo": 1}
    assert (b"x-mesh-route", b"n0,n1") in sent[0]["headers"]


async def test_an_answer_json_cannot_hold_is_a_500_once_the_call_finished() -> None:
    events: list[str] = []
    sent = await post(lane_answering({"x": float("nan")}, events), events)
    assert events == ["bookkeeping", "http.response.start", "http.response.body"]
    assert sent[0]["status"] == 500
    assert json.loads(sent[1]["body"])["error"]["type"] == "internal"

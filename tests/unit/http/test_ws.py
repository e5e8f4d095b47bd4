"""The WebSocket predict route in process: the real gate and app, a scripted forwarder, ASGI messages.

Each test plays the client's end of one socket (``Client``) against ``Gate`` around the node's app
with ``add_ws_routes``; ``Script`` stands where the forwarder is and answers by the body's ``"do"``.
The real sockets, agents and model are in tests/integration/http/test_ws_predict.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import pytest

from meshnode.dataplane.forward import Served
from meshnode.errors import NotFound
from meshnode.http.app import create_app
from meshnode.http.gate import Gate
from meshnode.http.keys import add_key_routes
from meshnode.http.predict import PredictLimits
from meshnode.http.ws import add_ws_routes
from meshnode.mesh.envelope import Call, Chunk, Envelope, Failure, Progress, Reply
from tests.unit.http.test_gate import LOCAL, REMOTE, Keys, Node, make

WAIT_S = 10.0
JPEG = b"\xff\xd8\xff\xe0 a jpeg"
LIMIT = 4096


class Script:
    """Stands where ``Forwarder.serve`` is: answers by the body's ``"do"``, records what it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[Call, str | None]] = []
        self.started = asyncio.Event()
        self.closed = asyncio.Event()  # the served generator was closed: the forwarder sends Cancel

    async def __call__(self, call: Call, hint: str | None = None, *, affinity: str | None = None) -> Served:
        self.calls.append((call, hint))
        rid = call.request_id
        match call.body.get("do"):
            case "missing":
                raise NotFound(f"no deployment named {call.deployment!r} in the mesh")
            case "fail":
                return Served(Failure(rid, "predictor", "ValueError: boom", False), self._rest([]), ("a",), 1)
            case "stream":
                rest = [Chunk(rid, 1, {"i": 1}), Reply(rid, None, "text/event-stream")]
                return Served(Chunk(rid, 0, {"i": 0}), self._rest(rest), ("a",), 1)
            case "forever":
                return Served(Progress(rid, 1, 100), self._forever(), ("a", "b"), 1)
            case "file":
                return Served(Reply(rid, b"\x89PNG", "image/png"), self._rest([]), ("a",), 1)
        rest = [Progress(rid, 2, 2), Reply(rid, {"ok": True}, "application/json")]
        return Served(Progress(rid, 1, 2, JPEG), self._rest(rest), ("a", "b"), 1)

    async def _rest(self, messages: list[Envelope]) -> AsyncGenerator[Envelope, None]:
        for message in messages:
            yield message

    async def _forever(self) -> AsyncGenerator[Envelope, None]:
        try:
            self.started.set()
            await asyncio.Event().wait()
            yield Reply("never", None, "application/json")
        finally:
            self.closed.set()


class Client:
    """The client's end of one ASGI WebSocket."""

    def __init__(self, app: Gate, path: str, *, client: tuple[str, int] = LOCAL, key: str = "") -> None:
        path, _, query = path.partition("?")
        headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": headers,
            "client": client,
            "server": ("node", 8470),
            "subprotocols": [],
        }
        self.to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.to_app.put_nowait({"type": "websocket.connect"})
        self.task = asyncio.create_task(app(scope, self.to_app.get, self.from_app.put))

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            return await self.from_app.get()

    def send(self, body: object) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        self.to_app.put_nowait({"type": "websocket.receive", "text": text})

    async def run(self, body: object) -> tuple[list[dict[str, Any]], int]:
        """Send `body`; the events until the server closes, and its close code."""
        assert (await self.next())["type"] == "websocket.accept"
        self.send(body)
        events = []
        while (message := await self.next())["type"] == "websocket.send":
            events.append(json.loads(message["text"]))
        assert message["type"] == "websocket.close"
        async with asyncio.timeout(WAIT_S):
            await self.task
        return events, int(message["code"])


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def gate(script: Script, keys: Keys) -> Gate:
    app = create_app(Node())
    add_key_routes(app, keys)
    add_ws_routes(app, script, PredictLimits(default_timeout_s=30.0, max_request_bytes=LIMIT))
    return Gate(app, keys.key, insecure=False)


async def test_progress_events_then_the_result_then_a_normal_close(gate: Gate, script: Script) -> None:
    events, code = await Client(gate, "/v1/ws/predict/t2i").run({"prompt": "a fox", "seed": 7})
    first, second, result = events
    assert first == {"type": "progress", "step": 1, "total": 2, "preview": base64.b64encode(JPEG).decode()}
    assert second == {"type": "progress", "step": 2, "total": 2}
    assert result["type"] == "result" and result["data"] == {"ok": True}
    assert result["route"] == ["a", "b"] and result["request_id"]
    assert code == 1000
    (call, hint), *_ = script.calls
    # The body reaches the predictor untouched; the call asks for progress and answers as JSON.
    assert (call.deployment, call.body, call.progress, call.stream) == (
        "t2i",
        {"prompt": "a fox", "seed": 7},
        True,
        False,
    )
    assert call.accept == "application/json" and hint is None


async def test_query_parameters_carry_the_hint_and_the_deadline(gate: Gate, script: Script) -> None:
    await Client(gate, "/v1/ws/predict/t2i?hint=tiny-sd&timeout=2.5").run({})
    (call, hint), *_ = script.calls
    assert hint == "tiny-sd"
    assert 2000 < call.timeout_ms <= 2500


async def test_a_stream_sends_chunk_events_and_a_null_result(gate: Gate) -> None:
    events, code = await Client(gate, "/v1/ws/predict/words").run({"do": "stream", "stream": True})
    assert [(e["type"], e.get("data")) for e in events] == [
        ("chunk", {"i": 0}),
        ("chunk", {"i": 1}),
        ("result", None),
    ]
    assert code == 1000


async def test_a_file_answer_comes_as_predicts_base64_json(gate: Gate) -> None:
    events, _ = await Client(gate, "/v1/ws/predict/t2i").run({"do": "file"})
    assert events[0]["data"] == {"content_type": "image/png", "base64": base64.b64encode(b"\x89PNG").decode()}


@pytest.mark.parametrize(
    ("path", "body", "kind", "code"),
    [
        pytest.param("/v1/ws/predict/t2i", "{not json", "bad_request", 4400, id="bad-json"),
        pytest.param("/v1/ws/predict/t2i", "[1, 2]", "unprocessable", 4422, id="not-an-object"),
        pytest.param("/v1/ws/predict/t2i", '{"x": 1e400}', "bad_request", 4400, id="infinite-number"),
        pytest.param("/v1/ws/predict/t2i", {"p": "x" * LIMIT}, "too_large", 4413, id="oversized"),
        pytest.param("/v1/ws/predict/nope", {"do": "missing"}, "not_found", 4404, id="unknown-deployment"),
        pytest.param("/v1/ws/predict/t2i", {"do": "fail"}, "predictor", 4500, id="predictor-failed"),
        pytest.param("/v1/ws/predict/t2i?timeout=abc", {}, "bad_request", 4400, id="bad-timeout"),
        pytest.param("/v1/ws/predict/t2i?timeout=99999", {}, "bad_request", 4400, id="endless-timeout"),
        pytest.param("/v1/ws/predict/t2i?timeout=1e-9", {}, "bad_request", 4400, id="tiny-timeout"),
        pytest.param("/v1/ws/predict/t2i?hint=" + "h" * 200, {}, "bad_request", 4400, id="long-hint"),
    ],
)
async def test_bad_input_gets_an_error_event_and_a_close_code(
    gate: Gate, path: str, body: object, kind: str, code: int
) -> None:
    events, closed_with = await Client(gate, path).run(body)
    assert len(events) == 1, events
    (event,) = events
    assert event["type"] == "error" and event["status"] == code - 4000
    assert event["error"]["type"] == kind and event["error"]["message"] and event["error"]["request_id"]
    assert closed_with == code


async def test_a_binary_message_of_json_is_a_request_too(gate: Gate) -> None:
    client = Client(gate, "/v1/ws/predict/t2i")
    assert (await client.next())["type"] == "websocket.accept"
    client.to_app.put_nowait({"type": "websocket.receive", "bytes": b'{"prompt": "a fox"}'})
    while (message := await client.next())["type"] == "websocket.send":
        last = json.loads(message["text"])
    assert last["type"] == "result" and message["code"] == 1000


async def test_no_request_before_the_deadline_is_a_504_error(gate: Gate) -> None:
    client = Client(gate, "/v1/ws/predict/t2i?timeout=0.2")
    assert (await client.next())["type"] == "websocket.accept"
    event = json.loads((await client.next())["text"])  # without sending anything
    assert event["error"]["type"] == "deadline_exceeded"
    assert (await client.next())["code"] == 4504


async def test_closing_the_socket_closes_the_served_answer_which_cancels_upstream(
    gate: Gate, script: Script
) -> None:
    client = Client(gate, "/v1/ws/predict/t2i")
    assert (await client.next())["type"] == "websocket.accept"
    client.send({"do": "forever"})
    assert json.loads((await client.next())["text"])["type"] == "progress"
    await script.started.wait()
    client.to_app.put_nowait({"type": "websocket.disconnect", "code": 1001})
    async with asyncio.timeout(WAIT_S):
        await script.closed.wait()
        await client.task
    assert client.from_app.empty()  # nothing more was sent to a client that left


async def test_a_client_that_leaves_before_sending_costs_nothing(gate: Gate, script: Script) -> None:
    client = Client(gate, "/v1/ws/predict/t2i")
    assert (await client.next())["type"] == "websocket.accept"
    client.to_app.put_nowait({"type": "websocket.disconnect", "code": 1000})
    async with asyncio.timeout(WAIT_S):
        await client.task
    assert script.calls == []


async def test_a_remote_socket_needs_a_key_and_is_served_with_one(
    gate: Gate, keys: Keys, script: Script
) -> None:
    refused = Client(gate, "/v1/ws/predict/t2i", client=REMOTE)
    message = await refused.next()
    assert (message["type"], message["code"]) == ("websocket.close", 1008)  # before any accept
    assert script.calls == []
    transport = httpx.ASGITransport(app=gate, client=LOCAL)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as local:
        invoke = await make(local, "invoke")  # as the CLI makes one, over loopback
    events, code = await Client(gate, "/v1/ws/predict/t2i", client=REMOTE, key=invoke).run({})
    assert events[-1]["type"] == "result" and code == 1000

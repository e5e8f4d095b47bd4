"""The dashboard's routes behind the API-key gate, and the event stream's wire behaviour, in process."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from meshnode.http import events as events_module
from meshnode.http.app import create_app
from meshnode.http.dashboard import add_dashboard_routes
from meshnode.http.events import EventFeed, add_event_routes
from meshnode.http.gate import Gate
from meshnode.mesh.access import KeyTable, Scope, make_key

REMOTE = ("10.0.0.5", 40000)


class Node:
    node_id = "a" * 32

    def mesh_view(self) -> dict[str, Any]:
        return {"self": self.node_id, "members": []}

    def readiness(self) -> tuple[bool, str]:
        return True, "ready"


def feed(**limits: int) -> EventFeed:
    return EventFeed(Node().mesh_view, list, **limits)


async def test_a_remote_browser_gets_the_page_but_the_feed_only_with_a_key() -> None:
    table = KeyTable()
    text, key = make_key(os.urandom(6), os.urandom(32), "dashboard", Scope.INVOKE, 0)
    table.merge(key)
    app = create_app(Node())
    add_event_routes(app, feed(max_streams=0))  # every stream refused: the answer shows the gate let it by
    add_dashboard_routes(app)
    transport = httpx.ASGITransport(app=Gate(app, table.get, insecure=False), client=REMOTE)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert '<script src="/dashboard/dashboard.js"' in page.text
        for asset in ("dashboard.js", "dashboard.css"):
            assert (await client.get(f"/dashboard/{asset}")).status_code == 200
        assert (await client.get("/dashboard/other.js")).status_code == 401
        assert (await client.get("/v1/events")).status_code == 401
        assert (await client.get("/v1/events?key=" + text)).status_code == 401  # never in a URL
        refused = await client.get("/v1/events", headers={"Authorization": f"Bearer {text}"})
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "overloaded"


class Wire:
    """An ASGI server's side of one response: what was sent, and a client that may stop reading."""

    def __init__(self, *, blocked: bool = False) -> None:
        self.chunks: list[bytes] = []
        self.blocked = blocked
        self.left = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        if self.blocked and message["type"] == "http.response.body":
            await asyncio.Event().wait()  # a client that never reads: the socket buffer stays full
        self.chunks.append(message.get("body", b""))

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}


async def until(condition: Callable[[], bool]) -> None:
    """Return once `condition` holds (callers bound the wait with asyncio.wait_for)."""
    while not condition():
        await asyncio.sleep(0.01)


async def test_an_idle_stream_gets_keep_alives_and_ends_when_the_node_stops() -> None:
    events = EventFeed(Node().mesh_view, list, keepalive_s=0.05)
    response = events_module._EventStream(events, events.open())
    wire = Wire()
    served = asyncio.create_task(response({"type": "http"}, wire.receive, wire.send))
    await asyncio.wait_for(until(lambda: b": keep-alive" in b"".join(wire.chunks)), 5)
    events.close()
    await asyncio.wait_for(served, 2)
    text = b"".join(wire.chunks).decode()
    assert text.startswith("retry: 1000\n\n") and "event: snapshot" in text
    assert ": keep-alive\n\n" in text
    assert wire.chunks[-1] == b""  # the response was ended properly


async def test_a_client_that_stops_reading_is_dropped_and_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_module, "SEND_TIMEOUT_S", 0.1)
    events = feed(max_queued=2)
    response = events_module._EventStream(events, events.open())
    wire = Wire(blocked=True)
    served = asyncio.create_task(response({"type": "http"}, wire.receive, wire.send))
    for index in range(5):
        events.publish("member", {"id": str(index)})
    assert events.streams == 0 and events.cut_streams == 1  # nothing more is queued for it
    await asyncio.wait_for(served, 2)  # and its blocked send gives up: the connection is dropped


async def test_a_client_that_leaves_is_forgotten() -> None:
    events = feed()
    response = events_module._EventStream(events, events.open())
    wire = Wire()
    served = asyncio.create_task(response({"type": "http"}, wire.receive, wire.send))
    await asyncio.wait_for(until(lambda: bool(wire.chunks)), 5)  # the stream is being served
    wire.left.set()
    await asyncio.wait_for(served, 2)
    assert events.streams == 0

"""Server-Sent Events responses that say ``: keep-alive`` when they have been quiet a while.

Proxies and load balancers cut a response that sent nothing for a while (nginx's
``proxy_read_timeout`` and AWS load balancers' idle timeout are 60 s by default), and a predictor
may think longer than that between two pieces of a stream. A comment line (``:`` first) is ignored
by every SSE client (EventSource, the OpenAI SDKs, meshnode's client), so sending one after
a quiet spell keeps the connection open at no cost to what the client reads. Every SSE stream of
the node does: predict and the OpenAI streams through ``EventStream``, after the node's
``sse_keepalive_s`` (``AgentConfig``); ``/v1/events`` (``events.py``) and a job's events
(``jobs.py``) in their own loops, after ``KEEPALIVE_S``, the knob's default.

``EventStream`` wraps the ASGI ``send`` rather than the body's iterator: the chunks still go out
from the response's own task as soon as they are yielded, with no queue or task between, and a
timer that wakes once per interval (not per chunk) sends the comment when nothing went out
meanwhile. A lock keeps a comment from going out in the middle of another send; uncontended, it
never suspends, so a chunk pays one lock and one clock read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, Mapping
from typing import Literal

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from ..config import AgentConfig

__all__ = ["KEEPALIVE", "KEEPALIVE_S", "EventStream"]

# The knob's default (a quarter to a half of the usual proxy idle timeouts, 30-60 s): job events
# and /v1/events use it as is, predict and the OpenAI streams take the node's setting.
KEEPALIVE_S: float = AgentConfig.sse_keepalive_s
KEEPALIVE = b": keep-alive\n\n"


class EventStream(StreamingResponse):
    """A ``text/event-stream`` response of `content`, with a comment after `keepalive_s` of quiet."""

    def __init__(
        self,
        content: AsyncIterable[bytes],
        *,
        keepalive_s: float = KEEPALIVE_S,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.keepalive_s = keepalive_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        quiet = _QuietWatch(send, self.keepalive_s)
        try:
            await super().__call__(scope, receive, quiet.send)
        finally:
            quiet.stop()


class _QuietWatch:
    """`send`, and a timer that sends a keep-alive comment when the body has been quiet too long."""

    def __init__(self, send: Send, every_s: float) -> None:
        self._send = send
        self._every_s = every_s
        self._loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        self._last = self._loop.time()
        self._state: Literal["before", "open", "over"] = "before"  # of the response's body
        self._comment: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(every_s, self._due)

    async def send(self, message: Message) -> None:
        """Send `message` (never while a comment is going out) and note when."""
        async with self._lock:
            await self._send(message)
        self._last = self._loop.time()
        if message["type"] == "http.response.start":
            self._state = "open"
        elif not message.get("more_body", False):
            self._state = "over"

    def stop(self) -> None:
        """The response is over: no more comments."""
        self._state = "over"
        if self._timer is not None:
            self._timer.cancel()
        if self._comment is not None:
            self._comment.cancel()

    def _due(self) -> None:
        quiet_s = self._loop.time() - self._last
        if quiet_s < self._every_s:
            self._arm(self._every_s - quiet_s)  # something went out meanwhile
        elif self._state != "open" or self._lock.locked():
            self._arm(self._every_s)  # not started yet, or a send is waiting on a slow client
        else:
            self._comment = self._loop.create_task(self._keep_alive())

    async def _keep_alive(self) -> None:
        # A client gone away ends the response by itself; the comment only stops trying.
        with contextlib.suppress(OSError, RuntimeError):
            async with self._lock:
                if self._state == "open":
                    await self._send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                    self._last = self._loop.time()
        self._comment = None
        self._arm(self._every_s)

    def _arm(self, delay_s: float) -> None:
        self._timer = None if self._state == "over" else self._loop.call_later(delay_s, self._due)

"""What an answer means to the client: a ``Result``, or the chunks of a Server-Sent Events stream.

Shared by the sync and asyncio clients: pure decoding, and the plans that read an answer
(``fetch``, ``StreamedAnswer._next_chunk``) for their drivers to carry out. A streamed answer
(``"stream": true`` with ``Accept: text/event-stream``, node/http/predict.py) is a sequence of
events::

    data: {"i": 0}          one chunk: JSON-decoded when it is JSON, else the text itself
                            (a text chunk with newlines spans several data lines)
    event: done             the stream is complete
    event: error            the stream broke; data is {"error": {"type", "message", "request_id"}}

A body that ends without ``done`` was cut off (the node died mid-answer) and counts as broken too.
A deployment whose predictor does not stream answers a streamed request all at once (a plain JSON
or text body): the stream then has that one chunk.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Final

import httpx

from .errors import ClientError, RequestTimeout, StreamBroken, error_fields
from .exchange import Opened, Planner, PredictRequest
from .steps import Close, NextLine, Read, Steps

__all__ = [
    "END",
    "Result",
    "SseDecoder",
    "StreamedAnswer",
    "answer_broken",
    "decode_chunk",
    "fetch",
    "read_result",
    "route_of",
]

SSE_TYPE = "text/event-stream"
ROUTE_HEADER = "x-mesh-route"
REQUEST_ID_HEADER = "x-request-id"
#: What the plan of a stream's next chunk returns once the stream is complete (a chunk may be None).
END: Final = object()


@dataclass(frozen=True)
class Result:
    """One answer and where it came from."""

    # The decoded JSON answer, or the raw bytes of any other answer (a file).
    data: Any
    # The answer's media type, e.g. "application/json" or "image/png".
    content_type: str
    # Names of the nodes the request crossed (X-Mesh-Route), first to last.
    route: tuple[str, ...]
    # The request's id (X-Request-Id): the one sent, or the one the node gave it.
    request_id: str
    # Base URL of the node the client sent the request to.
    node: str


def route_of(response: httpx.Response) -> tuple[str, ...]:
    """The node names in ``X-Mesh-Route``, first to last."""
    return tuple(name.strip() for name in response.headers.get(ROUTE_HEADER, "").split(",") if name.strip())


def fetch(planner: Planner, request: PredictRequest, *, decode: bool = True) -> Steps[Result]:
    """Send ``request`` (failing over as the planner decides) and read its whole answer."""
    opened = yield from planner.exchange(request)
    try:
        content = yield Read(opened.response)
    except httpx.RequestError as exc:
        raise answer_broken(exc, opened) from exc
    return read_result(opened, content, decode=decode)


def read_result(opened: Opened, content: bytes, *, decode: bool = True) -> Result:
    """The ``Result`` of an answer whose body is ``content``; JSON is decoded unless ``decode`` is off."""
    response = opened.response
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    request_id = response.headers.get(REQUEST_ID_HEADER, "")
    data: Any = content
    if decode and (content_type == "application/json" or content_type.endswith("+json")):
        try:
            data = json.loads(content)
        except ValueError as exc:
            raise StreamBroken(
                f"{opened.node} answered a body that is not valid JSON",
                kind="bad_answer",
                request_id=request_id,
                node=opened.node,
            ) from exc
    return Result(data, content_type, route_of(response), request_id, opened.node)


def decode_chunk(data: str) -> Any:
    """A chunk's value: the JSON it holds, or the text itself."""
    try:
        return json.loads(data)
    except ValueError:
        return data


class SseDecoder:
    """Collects the chunks of a Server-Sent Events body fed to it line by line."""

    def __init__(self, request_id: str = "", node: str = "", *, whole: bool = False) -> None:
        """Decode the stream of ``request_id`` from ``node`` (both only for error messages).

        With ``whole`` the body is not an event stream but one answer, which becomes one chunk.
        """
        self.chunks: deque[Any] = deque()
        self.done = False
        self._request_id = request_id
        self._node = node
        self._whole: list[str] | None = [] if whole else None
        self._event = ""
        self._data: list[str] | None = None

    def wants_more(self) -> bool:
        """Whether another line is needed before the next chunk (or the end) is known."""
        return not self.chunks and not self.done

    def feed(self, line: str | None) -> None:
        """Take one line (without its newline); ``None`` means the body ended."""
        if self._whole is not None:
            self._collect(line, self._whole)
        elif line is None:
            self._ended()
        elif self.done or line.startswith(":"):
            return  # after `done`, or a comment
        elif not line:
            self._dispatch()
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                self._event = value
            elif field == "data":
                self._data = [*(self._data or []), value]

    def _collect(self, line: str | None, lines: list[str]) -> None:
        if line is not None:
            lines.append(line)
        elif not self.done:
            self.chunks.append(decode_chunk("\n".join(lines)))
            self.done = True

    def _dispatch(self) -> None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", None
        if event == "message" and data is not None:
            self.chunks.append(decode_chunk("\n".join(data)))
        elif event == "done":
            self.done = True
        elif event == "error":
            kind, message, request_id = error_fields("\n".join(data or []).encode(), {}, 500)
            raise StreamBroken(message, kind=kind, request_id=request_id or self._request_id, node=self._node)
        # Other events are for later versions of the node; skipping them keeps old clients working.

    def _ended(self) -> None:
        if self.done:
            return
        raise StreamBroken(
            f"the stream from {self._node or 'the node'} ended before it was complete",
            kind="disconnected",
            request_id=self._request_id,
            node=self._node,
        )


def answer_broken(exc: httpx.HTTPError, opened: Opened) -> ClientError:
    """The client error for a transport failure after an answer started (it is never sent again)."""
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeout(f"the answer from {opened.node} stalled past the deadline")
    return StreamBroken(
        f"the connection to {opened.node} broke mid-answer: {exc or type(exc).__name__}",
        kind="disconnected",
        request_id=opened.response.headers.get(REQUEST_ID_HEADER, ""),
        node=opened.node,
    )


class StreamedAnswer:
    """One streamed answer, shared by the sync and asyncio streams: where it came from, and its chunks."""

    def __init__(self, opened: Opened, lines: Iterator[str] | AsyncIterator[str]) -> None:
        """Stream the ``opened`` answer, whose body is read from ``lines``."""
        response = opened.response
        #: Names of the nodes the request crossed (X-Mesh-Route), first to last.
        self.route = route_of(response)
        #: The request's id (X-Request-Id).
        self.request_id = response.headers.get(REQUEST_ID_HEADER, "")
        #: Base URL of the node the client sent the request to.
        self.node = opened.node
        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        self._decoder = SseDecoder(self.request_id, self.node, whole=media_type != SSE_TYPE)
        self._opened = opened
        self._lines = lines

    def _next_chunk(self) -> Steps[object]:
        """The next chunk, or ``END`` once the stream is complete; either end closes the connection.

        Whatever breaks the stream closes it before it is raised, a transport error as the client
        error it means (``answer_broken``).
        """
        try:
            while self._decoder.wants_more():
                self._decoder.feed((yield NextLine(self._lines)))
        except GeneratorExit:
            raise  # abandoned by its driver, which carries nothing out any more
        except BaseException as exc:
            yield Close(self._opened.response)
            raise self._failed(exc)  # noqa: B904 - _failed sets the cause of what it translates
        if self._decoder.chunks:
            return self._decoder.chunks.popleft()
        yield Close(self._opened.response)
        return END

    @staticmethod
    def _chunk_or(end: type[Exception], chunk: object) -> Any:
        """``chunk``, or ``end`` raised where it is ``END``: the iterator protocol's way to stop."""
        if chunk is END:
            raise end
        return chunk

    def _failed(self, exc: BaseException) -> BaseException:
        """What to raise for ``exc`` from reading the stream: transport errors become client errors."""
        if not isinstance(exc, httpx.HTTPError):
            return exc
        error = answer_broken(exc, self._opened)
        error.__cause__ = exc
        return error

    def __repr__(self) -> str:
        return f"<{type(self).__name__} request {self.request_id} via {self.node}>"

"""A replica's final ``Reply`` as the HTTP answer's bytes, sent as two ASGI messages.

The predict lane's every non-streamed answer ends here, so it skips starlette's ``Response``
objects (a header mapping built and then encoded, a ``MutableHeaders`` to add the request id) and
writes the raw header list once, with the bytes and header order starlette's ``JSONResponse`` and
``Response`` would send:

- JSON data: ``json.dumps`` as ``JSONResponse`` renders it (UTF-8, no spaces, and ``NaN`` refused:
  a ``ValueError`` the lane answers with a 500, never a body that is not JSON);
- bytes (a file): as they are, with the content type the predictor gave (``text/...`` with
  ``; charset=utf-8`` added, as starlette does).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.types import Receive, Scope, Send

__all__ = ["PlainAnswer", "json_bytes", "reply_answer"]

_JSON_TYPE = (b"content-type", b"application/json")


class PlainAnswer:
    """A complete answer: status, raw headers and body, ready to send."""

    __slots__ = ("body", "raw_headers", "status_code")

    def __init__(self, status_code: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status_code
        self.raw_headers = raw_headers
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send it: the start, then the whole body."""
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


def json_bytes(data: Any) -> bytes:
    """`data` as starlette's ``JSONResponse`` renders it; ValueError for NaN or infinity."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


def reply_answer(data: Any, content_type: str | None, headers: Sequence[tuple[str, str]]) -> PlainAnswer:
    """The 200 for a Reply's `data`: `headers` first (names lower-cased), then length and type."""
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    if isinstance(data, bytes):
        body = data
        raw.append((b"content-length", str(len(body)).encode()))
        if content_type is not None:
            if content_type.startswith("text/") and "charset=" not in content_type.lower():
                content_type += "; charset=utf-8"
            raw.append((b"content-type", content_type.encode("latin-1")))
    else:
        body = json_bytes(data)
        raw.append((b"content-length", str(len(body)).encode()))
        raw.append(_JSON_TYPE)
    return PlainAnswer(200, raw, body)

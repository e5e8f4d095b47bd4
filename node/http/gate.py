"""The gate every HTTP request and WebSocket passes first: API keys (``mesh/access.py``).

It wraps the whole ASGI app (the predict lane and FastAPI), so no route, today's or one added
later, is reachable from the network without the scope ``access.need_for`` names for it. A
loopback client passes with a cheap address check and nothing else; others need
``Authorization: Bearer KEY`` (what the OpenAI SDKs send). A refusal is the one JSON error shape
with ``WWW-Authenticate: Bearer`` (RFC 6750): 401 without a valid key, 403 for a key of too small
a scope; a refused WebSocket is closed with code 1008 (policy violation) before it is accepted.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from ..mesh.access import ApiKey, Verdict, decide, is_loopback, need_for
from .app import REQUEST_ID_HEADER, error_response, request_id_of

__all__ = ["Gate", "KeyLookup"]

log = logging.getLogger(__name__)

KeyLookup = Callable[[str], ApiKey | None]
_KINDS = {Verdict.UNAUTHENTICATED: "unauthenticated", Verdict.FORBIDDEN: "forbidden"}
# WebSocket close code for a refused handshake (RFC 6455: policy violation).
_POLICY_VIOLATION = 1008


@functools.lru_cache(maxsize=4096)
def _loopback(host: str | None) -> bool:
    return is_loopback(host)


class Gate:
    """Lets a request through to `app` only if ``access.decide`` allows it."""

    def __init__(self, app: ASGIApp, keys: KeyLookup, *, insecure: bool) -> None:
        self._app = app
        self._keys = keys
        self._insecure = insecure
        self.refused: dict[str, int] = {"unauthenticated": 0, "forbidden": 0}  # for /metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        client = scope.get("client")
        if self._insecure or _loopback(client[0] if client else None):
            await self._app(scope, receive, send)
            return
        needed = need_for(scope.get("method", "GET"), scope.get("path", ""))
        verdict, reason = decide(
            needed, loopback=False, insecure=False, authorization=_header(scope), lookup=self._keys
        )
        if verdict is Verdict.ALLOW:
            await self._app(scope, receive, send)
            return
        self.refused[_KINDS[verdict]] += 1
        if kind == "websocket":
            await send({"type": "websocket.close", "code": _POLICY_VIOLATION, "reason": reason})
            return
        rid = request_id_of(scope)
        response = error_response(
            verdict.value, _KINDS[verdict], reason, rid, {"WWW-Authenticate": 'Bearer realm="meshnode"'}
        )
        response.headers[REQUEST_ID_HEADER] = rid
        await response(scope, receive, send)


def _header(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return value.decode("latin-1")
    return None

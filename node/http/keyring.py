"""``/v1/keyring``: the mesh token rotation's steps, from any node (admin scope).

``GET /v1/keyring`` shows the fingerprints of the tokens this node holds, primary first (never a
token). ``POST /v1/keyring`` makes one step (``trust/rotation.py``) and gossips it:
``{"op": "install", "token": NEW}``, ``{"op": "use", "key_id": ID}``, ``{"op": "remove", "key_id": ID}``.
Every member's fingerprints are in ``GET /v1/mesh`` (``key_ids``), so a caller sees each step reach
every node before it takes the next; ``meshnode token rotate`` does exactly that.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI, Request

from ..errors import Unprocessable
from ..trust.keyring import key_id
from .app import read_json

__all__ = ["RotationView", "add_keyring_routes"]

MAX_KEYRING_REQUEST_BYTES = 4096
_FIELDS = {"op", "token", "key_id"}


class RotationView(Protocol):
    """This node's ring and its rotation steps (``trust/rotation.py``)."""

    @property
    def tokens(self) -> tuple[str, ...]:
        """The tokens held, primary first."""
        ...

    def step(self, op: str, *, token: str | None = None, key: str | None = None) -> tuple[str, ...]:
        """Make one rotation step; ValueError when it is wrong."""
        ...


def add_keyring_routes(app: FastAPI, rotation: RotationView) -> None:
    """Mount ``GET/POST /v1/keyring``."""

    @app.get("/v1/keyring")
    async def keyring() -> dict[str, Any]:
        """The fingerprints of the tokens this node holds, primary first."""
        return _ring(rotation.tokens)

    @app.post("/v1/keyring")
    async def rotate(request: Request) -> dict[str, Any]:
        """One rotation step, gossiped to every node."""
        body = await read_json(request, MAX_KEYRING_REQUEST_BYTES, "a keyring request")
        if not isinstance(body, dict) or not set(body) <= _FIELDS or "op" not in body:
            raise Unprocessable('a keyring request is {"op": "install"|"use"|"remove", "token" or "key_id"}')
        token, key = body.get("token"), body.get("key_id")
        if (
            not isinstance(body["op"], str)
            or not isinstance(token, str | None)
            or not isinstance(key, str | None)
        ):
            raise Unprocessable("op, token and key_id are strings")
        try:
            return _ring(rotation.step(body["op"], token=token, key=key))
        except ValueError as exc:
            raise Unprocessable(str(exc)) from exc


def _ring(tokens: tuple[str, ...]) -> dict[str, Any]:
    ids = [key_id(token).hex() for token in tokens]
    return {"primary": ids[0], "key_ids": ids}

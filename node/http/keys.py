"""``/v1/keys``: make, list and revoke the mesh's API keys from any node (admin scope).

``POST /v1/keys`` with ``{"scope": "invoke"|"admin", "name": "..."}`` makes a key and answers it
once, with 201: ``{"id", "key", "name", "scope", "created_ms"}``; nodes keep only its digest
(``mesh/access.py``). The key is gossiped (``mesh/shared_tables.py``), so it works on every node
within a gossip round or two. ``GET /v1/keys`` lists every key, never a secret. ``DELETE
/v1/keys/{id}`` revokes one everywhere, for good (404 for an id nobody made).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..errors import NotFound, Unprocessable
from ..mesh.access import KEY_SECRET_BYTES, MAX_KEY_NAME_CHARS, ApiKey, Scope, make_key
from .app import read_json

__all__ = ["KeysView", "add_key_routes"]

# A key request is a few dozen bytes.
MAX_KEY_REQUEST_BYTES = 4096
_SCOPES = {scope.value: scope for scope in Scope}


class KeysView(Protocol):
    """The mesh's key table as the membership runner keeps it (``membership/runner.py``)."""

    def key(self, key_id: str) -> ApiKey | None:
        """One key, revoked or not."""
        ...

    def all_keys(self) -> list[ApiKey]:
        """Every key."""
        ...

    def merge_key(self, key: ApiKey) -> None:
        """Take a new or revoked key and gossip it."""
        ...


def describe(key: ApiKey) -> dict[str, Any]:
    """A key as the API shows it: everything but its digest."""
    return {
        "id": key.id,
        "name": key.name,
        "scope": key.scope.value,
        "created_ms": key.created_ms,
        "revoked": key.revoked,
    }


def add_key_routes(app: FastAPI, keys: KeysView) -> None:
    """Mount ``GET/POST /v1/keys`` and ``DELETE /v1/keys/{id}``."""

    @app.get("/v1/keys")
    async def list_keys() -> dict[str, Any]:
        """Every API key of the mesh, revoked ones included, oldest first; never a secret."""
        return {"keys": [describe(key) for key in keys.all_keys()]}

    @app.post("/v1/keys", status_code=201)
    async def create_key(request: Request) -> JSONResponse:
        """Make a key; its text is in this answer and nowhere else."""
        body = await read_json(request, MAX_KEY_REQUEST_BYTES, "a key request")
        scope, name = _fields(body)
        text, key = make_key(
            os.urandom(6), os.urandom(KEY_SECRET_BYTES), name, scope, int(time.time() * 1000)
        )
        keys.merge_key(key)
        return JSONResponse({**describe(key), "key": text}, status_code=201)

    @app.delete("/v1/keys/{key_id}")
    async def revoke_key(key_id: str) -> dict[str, Any]:
        """Revoke a key on every node, for good."""
        key = keys.key(key_id)
        if key is None:
            raise NotFound(f"no API key with id {key_id!r}")
        if not key.revoked:
            keys.merge_key(dataclasses.replace(key, revoked=True))
        return {"id": key_id, "revoked": True}


def _fields(body: object) -> tuple[Scope, str]:
    if not isinstance(body, dict) or not set(body) <= {"scope", "name"}:
        raise Unprocessable('a key request is {"scope": "invoke" or "admin", "name": "..."}')
    scope = body.get("scope")
    if not isinstance(scope, str) or scope not in _SCOPES:
        raise Unprocessable('scope: must be "invoke" or "admin"')
    name = body.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_KEY_NAME_CHARS or not name.isprintable():
        raise Unprocessable(f"name: at most {MAX_KEY_NAME_CHARS} printable characters")
    return _SCOPES[scope], name

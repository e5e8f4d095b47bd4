"""``GET /.well-known/meshnode/jwks.json``: the public keys that verify this mesh's webhooks.

Every node answers with the same document, because every node derives the keys from the same
tokens (``trust/webhook_keys.py``): the key of each token the node holds, primary (the signer)
first, so during a token rotation both the old and the new key verify. It is read on every request
from the node's current ring, so a rotation shows at once. No API key is needed to read it
(``mesh/access.py`` lists it as open): a public key is public, and receivers of webhooks are
programs outside the mesh.

``Cache-Control: public, max-age=300``: a receiver may keep it five minutes, the same as the
signature's timestamp window; one that meets a key id it does not know fetches it again.
"""

from __future__ import annotations

from typing import Protocol

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ..trust.webhook_keys import jwks

__all__ = ["JWKS_PATH", "TokenRing", "add_wellknown_routes"]

JWKS_PATH = "/.well-known/meshnode/jwks.json"
_CACHE_CONTROL = "public, max-age=300"


class TokenRing(Protocol):
    """The mesh tokens this node holds now (``trust/rotation.py``'s ``Rotation``)."""

    @property
    def tokens(self) -> tuple[str, ...]:
        """The tokens held, primary first."""
        ...


def add_wellknown_routes(app: FastAPI, ring: TokenRing) -> None:
    """Mount ``GET /.well-known/meshnode/jwks.json``."""

    @app.get(JWKS_PATH)
    async def webhook_jwks() -> JSONResponse:
        """The JSON Web Key Set (RFC 7517, RFC 8037) that verifies this mesh's webhook signatures."""
        return JSONResponse(jwks(ring.tokens), headers={"Cache-Control": _CACHE_CONTROL})

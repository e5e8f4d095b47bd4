"""The JWKS route (node/http/wellknown.py), in process behind the real gate: open to every client."""

from __future__ import annotations

import httpx

from meshnode.http.app import create_app
from meshnode.http.gate import Gate
from meshnode.http.wellknown import JWKS_PATH, add_wellknown_routes
from meshnode.trust.webhook_keys import jwks, sign_webhook, verify_webhook
from tests.unit.http.test_gate import REMOTE, Keys, Node

OLD = "the old token of this mesh, 32+ characters"
NEW = "the new token of this mesh, 32+ characters"


class Ring:
    """The rotation's ring as the route reads it: a rotation step replaces ``tokens``."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = tokens


def stranger(ring: Ring) -> httpx.AsyncClient:
    """A client on another machine with no API key, through the gate of a node holding `ring`."""
    app = create_app(Node())
    add_wellknown_routes(app, ring)
    gate = Gate(app, Keys().key, insecure=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=gate, client=REMOTE), base_url="http://node")


async def test_a_client_with_no_key_reads_the_jwks_and_verifies_a_webhook_with_it() -> None:
    async with stranger(Ring(OLD)) as client:
        response = await client.get(JWKS_PATH)
        assert (await client.get("/v1/mesh")).status_code == 401  # the gate is on: only this is open
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == jwks([OLD])
    body, now_s = b'{"status":"completed"}', 1_750_000_000
    verify_webhook(sign_webhook([OLD], "job_1", now_s, body), body, response.json(), now_s=now_s)


async def test_the_jwks_follows_a_rotation_at_once() -> None:
    ring = Ring(OLD)
    async with stranger(ring) as client:
        ring.tokens = (OLD, NEW)  # install
        installed = (await client.get(JWKS_PATH)).json()
        ring.tokens = (NEW,)  # use, then remove the old one
        finished = (await client.get(JWKS_PATH)).json()
    assert installed == jwks([OLD, NEW]) and len(installed["keys"]) == 2
    assert finished == jwks([NEW])

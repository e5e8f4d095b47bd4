"""``GET /.well-known/meshnode/jwks.json`` on real agents: every node publishes the same keys.

Two agents of one mesh; each derives the webhook key from the mesh token on its own, with nothing
exchanged. A webhook signed with that token (as whichever node delivers it would sign it) verifies
with the JWKS fetched, with no API key, from either node. That the route is open to clients on other
machines is checked in process, behind the real gate (tests/unit/http/test_wellknown.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from meshnode import verify_webhook
from meshnode.trust.webhook_keys import sign_webhook
from tests.integration.agents import Mesh

JWKS_PATH = "/.well-known/meshnode/jwks.json"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(tmp_path_factory.mktemp("jwks-mesh"), 2) as started:
        yield started


def test_every_node_publishes_the_same_jwks_and_it_verifies_the_mesh_s_webhooks(mesh: Mesh) -> None:
    responses = [agent.get(JWKS_PATH) for agent in mesh.agents]
    for agent, response in zip(mesh.agents, responses, strict=True):
        assert response.status_code == 200, f"{response.status_code} {response.text}\n{agent.describe()}"
        assert response.headers["cache-control"] == "public, max-age=300"
    documents = [response.json() for response in responses]
    assert documents[0] == documents[1]
    assert [key["kty"] for key in documents[0]["keys"]] == ["OKP"]

    body = json.dumps({"id": "Zk3vQ0b4Rr2c8s9XyA_-1w", "status": "completed"}).encode()
    now_s = int(time.time())
    headers = sign_webhook([mesh.token], "Zk3vQ0b4Rr2c8s9XyA_-1w", now_s, body)
    for document in documents:
        verify_webhook(headers, body, document, now_s=time.time())

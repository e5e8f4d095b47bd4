"""The two receivers in docs/webhooks.md work as printed: run against real HTTP servers, real keys."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshnode.mesh.webhook_schedule import DEFAULT_SCHEDULE, WebhookSchedule, delays_s
from meshnode.trust.webhook_keys import jwks, sign_webhook

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "webhooks.md").read_text()
WITH_MESHNODE, WITHOUT_MESHNODE = re.findall(r"```python\n(.*?)```", DOC, re.DOTALL)
OLD = "the old token of this mesh, 32+ characters"
NEW = "the new token of this mesh, 32+ characters"
JOB = "Zk3vQ0b4Rr2c8s9XyA_-1w"
BODY = json.dumps({"id": JOB, "status": "completed"}).encode()


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class Mesh:
    """The JWKS route as a node answers it, from a ring a test rotates."""

    tokens: tuple[str, ...] = (OLD,)


class JwksHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(jwks(Mesh.tokens)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    """The doc's meshnode receiver, on a free port, reading the JWKS from a stand-in node."""
    Mesh.tokens = (OLD,)
    node, node_url = serve(JwksHandler)
    code = WITH_MESHNODE.replace(
        "http://127.0.0.1:8470/.well-known/meshnode/jwks.json", f"{node_url}/.well-known/meshnode/jwks.json"
    ).replace("REFETCH_AFTER_S = 60.0", "REFETCH_AFTER_S = 0.0")
    namespace: dict[str, Any] = {"__name__": "receiver"}
    exec(compile(code, "docs/webhooks.md", "exec"), namespace)  # the doc's code, run as printed
    handler = namespace["Receiver"]
    handler.log_message = lambda *args: None
    server, url = serve(handler)
    yield url
    for running in (server, node):
        running.shutdown()
        running.server_close()


def post(url: str, headers: dict[str, str], body: bytes = BODY) -> int:
    return httpx.post(url, headers=headers, content=body, trust_env=False, timeout=10).status_code


def test_the_meshnode_receiver_accepts_the_mesh_s_webhooks_only(receiver: str) -> None:
    signed = sign_webhook([OLD], JOB, int(time.time()), BODY)
    assert post(receiver, signed) == 204
    assert post(receiver, signed, BODY.replace(b"completed", b"failed")) == 401
    assert post(receiver, sign_webhook([NEW], JOB, int(time.time()), BODY)) == 401  # not the mesh's key
    assert post(receiver, sign_webhook([OLD], JOB, int(time.time()) - 600, BODY)) == 401


def test_the_meshnode_receiver_follows_a_rotation(receiver: str) -> None:
    Mesh.tokens = (NEW, OLD)  # the mesh installed NEW and made it primary since the receiver started
    assert post(receiver, sign_webhook(Mesh.tokens, JOB, int(time.time()), BODY)) == 204


def test_the_cryptography_only_receiver_agrees() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(WITHOUT_MESHNODE, "docs/webhooks.md", "exec"), namespace)
    verify, keys = namespace["verify"], namespace["public_keys"](jwks([OLD, NEW]))
    now = int(time.time())
    assert verify(sign_webhook([OLD], JOB, now, BODY), BODY, keys)
    assert verify(sign_webhook([NEW, OLD], JOB, now, BODY), BODY, keys)
    assert not verify(sign_webhook([OLD], JOB, now, BODY), BODY + b" ", keys)
    assert not verify(sign_webhook([OLD], JOB, now - 301, BODY), BODY, keys)
    assert not verify(sign_webhook(["a third token, of another mesh entirely"], JOB, now, BODY), BODY, keys)
    assert not verify({}, BODY, keys)


def test_the_documented_schedule_is_the_code_s() -> None:
    nominal = delays_s(random.Random(0), WebhookSchedule(jitter=0.0))
    row = " | ".join(["-", *(spoken(wait) for wait in nominal)])
    assert f"| wait before it | {row} |" in DOC
    assert f"up to {DEFAULT_SCHEDULE.tries} tries in all" in DOC
    assert f"answers any `2xx` within {DEFAULT_SCHEDULE.timeout_s:g} seconds" in DOC


def spoken(seconds: float) -> str:
    """15 s, 1 min, 1 h: as the doc's table writes a wait."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"

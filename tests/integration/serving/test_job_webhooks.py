"""Job webhooks on real agents: signed, verified with the published JWKS, retried, and never lost.

A real HTTP server in the test is the receiver. Agents run with a 0.3 s first retry wait (``--set
job_webhook_first_delay_s=0.3``) so the retry schedule plays out in seconds.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshnode import verify_webhook
from tests.integration.agents import Mesh, metric, wait_for

APPS = Path(__file__).parents[1] / "serving_apps.py"
FAST = ["--set", "job_webhook_first_delay_s=0.3"]
PROBE = ["--deploy", f"probe={APPS}:Probe"]


class Receiver:
    """A webhook receiver on loopback that answers with the statuses it is told, and records each POST."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []  # answered in order; 200 once used up
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.posts.append((dict(self.headers.items()), body))
                    status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def for_job(self, job_id: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for h, b in self.posts if h.get("webhook-id") == job_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    args = {0: FAST, 1: [*FAST, *PROBE], 2: [*FAST, *PROBE]}
    with Mesh(tmp_path_factory.mktemp("job-webhooks"), 3, extra_args=args) as started:
        started.wait_formed()
        entry = started.agents[0]
        wait_for(lambda: httpx.post(f"{entry.url}/v1/predict/probe", json={}).status_code == 200, 60)
        yield started


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def submit(mesh: Mesh, body: dict[str, Any], webhook: str, via: int = 0) -> str:
    answer = httpx.post(f"{mesh.agents[via].url}/v1/jobs/probe", json=body, params={"webhook": webhook})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def delivery(mesh: Mesh, job_id: str, via: int = 0) -> dict[str, Any]:
    view = httpx.get(f"{mesh.agents[via].url}/v1/jobs/{job_id}").json()
    return dict(view.get("webhook") or {})


def test_a_terminal_status_is_posted_once_signed_with_the_published_key(
    mesh: Mesh, receiver: Receiver
) -> None:
    job_id = submit(mesh, {"x": 7}, receiver.url)
    wait_for(
        lambda: delivery(mesh, job_id).get("state") == "delivered",
        30,
        0.1,
        lambda: str(delivery(mesh, job_id)),
    )
    posts = receiver.for_job(job_id)
    assert len(posts) == 1
    headers, body = posts[0]
    jwks = httpx.get(f"{mesh.agents[2].url}/.well-known/meshnode/jwks.json").json()
    verify_webhook(headers, body, jwks, now_s=time.time())  # raises when anything is off
    sent = json.loads(body)
    assert sent["id"] == job_id and sent["status"] == "completed"
    assert sent["result"] == httpx.post(f"{mesh.agents[0].url}/v1/predict/probe", json={"x": 7}).json()
    delivered = sum(
        metric(a, "meshnode_webhook_deliveries_total", "outcome").get("delivered", 0) for a in mesh.agents
    )
    assert delivered >= 1
    tampered = body.replace(b"completed", b"failed!!!")
    with pytest.raises(ValueError):
        verify_webhook(headers, tampered, jwks, now_s=time.time())


def test_a_failing_receiver_gets_retries_until_it_answers_2xx(mesh: Mesh, receiver: Receiver) -> None:
    receiver.answers = [500, 503, 500]
    job_id = submit(mesh, {"do": "raise"}, receiver.url, via=1)
    wait_for(
        lambda: delivery(mesh, job_id).get("state") == "delivered",
        60,
        0.1,
        lambda: str(delivery(mesh, job_id)),
    )
    posts = receiver.for_job(job_id)
    assert len(posts) == 4 and delivery(mesh, job_id)["tries"] == 4
    retried = sum(
        metric(a, "meshnode_webhook_deliveries_total", "outcome").get("retry", 0) for a in mesh.agents
    )
    assert retried >= 3
    assert {json.loads(body)["status"] for _, body in posts} == {"failed"}
    stamps = [int(headers["webhook-timestamp"]) for headers, _ in posts]
    assert stamps == sorted(stamps)


def test_a_receiver_that_was_down_gets_the_webhook_once_it_is_up(mesh: Mesh, receiver: Receiver) -> None:
    down = Receiver()
    url = down.url
    down.close()  # nothing listens on its port now: connections are refused
    job_id = submit(mesh, {"x": 1}, url)
    wait_for(
        lambda: delivery(mesh, job_id).get("tries", 0) >= 2, 60, 0.1, lambda: str(delivery(mesh, job_id))
    )
    assert delivery(mesh, job_id)["state"] == "pending"


def test_delivery_carries_on_after_the_delivering_node_dies(mesh: Mesh, receiver: Receiver) -> None:
    receiver.answers = [500] * 1000  # failing until the test says otherwise
    job_id = submit(mesh, {"x": 3}, receiver.url)
    wait_for(lambda: len(receiver.for_job(job_id)) >= 2, 60, 0.1)
    node = httpx.get(f"{mesh.agents[0].url}/v1/jobs/{job_id}").json()["node"]
    victim = next(agent for agent in mesh.agents if agent.name == node)
    survivor = next(i for i, agent in enumerate(mesh.agents) if agent is not victim)
    victim.kill()
    try:
        tries_before = delivery(mesh, job_id, via=survivor)["tries"]
        with receiver.lock:
            receiver.answers.clear()  # answers 200 from now on
        wait_for(
            lambda: delivery(mesh, job_id, via=survivor).get("state") == "delivered",
            60,
            0.1,
            lambda: str(delivery(mesh, job_id, via=survivor)),
        )
        assert delivery(mesh, job_id, via=survivor)["tries"] > tries_before
    finally:
        victim.restart().wait_ready()
        mesh.wait_formed(60)

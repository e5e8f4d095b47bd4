"""Real agents: a node's load reaches its peers as a delta of its metadata (``mesh/load_news.py``).

n0 hosts the probe app; slow requests into it raise its requests in flight and its replica's queue,
a change of load alone. Both agents are of this release, so n0 gossips it as load news, sealed and
sent over ZeroMQ as any gossip, and n1 applies it to the metadata it holds: its view shows n0's
load move up and back down, and ``/metrics`` on both says the deltas went out and were applied,
none sent whole. ``test_load_news_upgrade.py`` runs the same beside an agent of an earlier release.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.agents import Mesh, metric, wait_for

APPS = Path(__file__).parents[1] / "serving_apps.py"
PROBE = ("--deploy", f"probe={APPS}:Probe")
LOAD_NEWS = "meshnode_gossip_load_news_total"
SLOW_REQUESTS = 3
SLEEP_S = 4.0


@contextmanager
def serving(mesh: Mesh) -> Iterator[Mesh]:
    """`mesh` started and formed, its n0 answering the probe app (which PROBE pins there)."""
    with mesh as started:
        started.wait_formed(timeout=60)
        entry = started.agents[0]
        wait_for(lambda: httpx.post(f"{entry.url}/v1/predict/probe", json={}).status_code == 200, 60, 0.2)
        yield started


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with serving(Mesh(tmp_path_factory.mktemp("load-news"), 2, extra_args={0: PROBE})) as started:
        yield started


def in_flight_of(view: dict[str, Any], name: str) -> int:
    member = next(m for m in view["members"] if m["name"] == name)
    return int(member["load"].get("in_flight", 0))


def busy_n0_seen_by(mesh: Mesh, observer_index: int) -> None:
    """Slow requests into n0 until the observer sees them in n0's load, then until it sees none."""
    n0, observer = mesh.agents[0], mesh.agents[observer_index]
    seen = lambda: in_flight_of(observer.get("/v1/mesh").json(), "n0")  # noqa: E731
    wait_for(lambda: seen() == 0, 30, 0.1, lambda: f"{observer.name} sees n0 idle")

    def slow() -> None:
        httpx.post(f"{n0.url}/v1/predict/probe", json={"do": "sleep", "s": SLEEP_S}, timeout=30)

    threads = [threading.Thread(target=slow) for _ in range(SLOW_REQUESTS)]
    for thread in threads:
        thread.start()
    try:
        busy = lambda: f"{observer.name} sees n0 with {seen()} in flight"  # noqa: E731
        wait_for(lambda: seen() >= 1, SLEEP_S, 0.05, busy)
    finally:
        for thread in threads:
            thread.join()
    wait_for(lambda: seen() == 0, 30, 0.1, lambda: f"{observer.name} sees n0 idle again")


def test_load_goes_to_the_peer_as_load_news_and_is_applied(mesh: Mesh) -> None:
    n0, n1 = mesh.agents
    before = metric(n1, LOAD_NEWS, "outcome").get("applied", 0)
    busy_n0_seen_by(mesh, 1)
    sent = metric(n0, LOAD_NEWS, "outcome")
    applied = metric(n1, LOAD_NEWS, "outcome")
    assert sent["sent"] >= 2 and sent["sent_whole"] == 0, sent
    assert applied["applied"] >= before + 2, applied
    assert applied["unfit"] == 0, applied

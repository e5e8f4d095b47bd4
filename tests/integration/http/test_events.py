"""``GET /v1/events`` on a real 3-node mesh: a snapshot first, then a SIGKILL seen as a dead member
and a deployment declared on another node seen as a declared deployment, as the dashboard draws them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.integration.agents import Mesh

# 2 busy cores: detection on the local profile is ~2 s, gossip of a record a round or two.
EVENT_TIMEOUT_S = 30.0


def events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, data) of each Server-Sent Events message; comments (keep-alives) skipped."""
    kind, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def wait_event(feed: Iterator[tuple[str, dict[str, Any]]], kind: str, **match: Any) -> dict[str, Any]:
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    seen = []
    for got, data in feed:
        if got == kind and all(data.get(key) == value for key, value in match.items()):
            return data
        seen.append((got, {key: data.get(key) for key in ("id", "name", "status", "change")}))
        assert time.monotonic() < deadline, f"no {kind} {match} within {EVENT_TIMEOUT_S} s; saw {seen[-20:]}"
    raise AssertionError(f"the stream ended before a {kind} {match}; saw {seen[-20:]}")


def test_events_stream_a_snapshot_a_death_and_a_new_deployment(tmp_path: Path) -> None:
    with Mesh(tmp_path, 3, extra_args={0: ["--deploy", "echo=meshnode.apps.echo:Echo"]}) as mesh:
        mesh.wait_formed()
        watcher, declarer, victim = mesh.agents
        timeout = httpx.Timeout(10.0, read=EVENT_TIMEOUT_S)
        with httpx.stream("GET", f"{watcher.url}/v1/events", timeout=timeout, trust_env=False) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            feed = events(response.iter_lines())
            snapshot = wait_event(feed, "snapshot")
            assert {m["name"] for m in snapshot["members"]} == {"n0", "n1", "n2"}
            assert [d["name"] for d in snapshot["deployments"]] == ["echo"]

            victim.kill()
            dead = wait_event(feed, "member", id=victim.node_id, status="dead")
            assert dead["name"] == "n2"

            spec = {"app": "meshnode.apps.echo:Echo", "min_replicas": 1, "max_replicas": 1}
            put = httpx.put(f"{declarer.url}/v1/deployments/fresh", json=spec, timeout=10, trust_env=False)
            assert put.status_code == 201, put.text
            declared = wait_event(feed, "deployment", name="fresh", change="declared")
            assert declared["deployment"]["app"] == spec["app"]
            wait_event(feed, "replica", deployment="fresh")

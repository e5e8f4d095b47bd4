"""The event feed's pure diffs and its bounds (``node/http/mesh_events.py``, ``node/http/events.py``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from meshnode.dataplane.forward import Failover
from meshnode.errors import Overloaded
from meshnode.http.events import EventFeed, MeshEvent
from meshnode.http.mesh_events import diff_deployments, diff_replicas, member_summary, replica_states
from meshnode.mesh.types import Status


def mesh(*members: dict[str, Any]) -> dict[str, Any]:
    return {"self": "a", "members": list(members)}


def member(node: str, status: str = "alive", **replicas: str) -> dict[str, Any]:
    return {
        "id": node,
        "name": f"n-{node}",
        "status": status,
        "data_key": "secret-ish",
        "replicas": {name: {"state": state, "error": ""} for name, state in replicas.items()},
    }


def test_a_member_summary_leaves_out_keys_and_addresses_the_page_does_not_need() -> None:
    summary = member_summary(member("a", echo="ready"))
    assert "data_key" not in summary
    assert summary["replicas"]["echo"]["state"] == "ready"


def test_replica_changes_name_appearing_moving_and_vanishing_replicas() -> None:
    before = replica_states(mesh(member("a", echo="starting"), member("b", echo="ready")))
    after = replica_states(mesh(member("a", echo="ready"), member("c", echo="starting")))
    changes = {(c["node"], c["previous"], c["state"]) for c in diff_replicas(before, after)}
    assert changes == {("a", "starting", "ready"), ("b", "ready", None), ("c", None, "starting")}
    assert diff_replicas(after, after) == []


def test_deployment_changes_ignore_moving_averages_and_name_scale_changes() -> None:
    echo = {"name": "echo", "app": "x:Y", "desired": 1, "ready": 1, "autoscaling": {"mean_concurrency": 0.1}}
    busier = {**echo, "autoscaling": {"mean_concurrency": 3.0}}
    assert diff_deployments({"echo": echo}, {"echo": busier}) == []
    scaled = diff_deployments({"echo": echo}, {"echo": {**echo, "desired": 2}})
    assert [(c["change"], c["fields"], c["desired"]) for c in scaled] == [("changed", ["desired"], [1, 2])]
    assert [c["change"] for c in diff_deployments({}, {"echo": echo})] == ["declared"]
    assert [c["change"] for c in diff_deployments({"echo": echo}, {})] == ["removed"]


def test_an_event_is_one_server_sent_events_message() -> None:
    text = MeshEvent(7, "member", {"id": "a"}).encode().decode()
    assert text.startswith("id: 7\nevent: member\ndata: ") and text.endswith("\n\n")
    assert json.loads(text.split("data: ", 1)[1]) == {"id": "a"}


class FakeNode:
    def __init__(self) -> None:
        self.view = mesh(member("a", echo="starting"))
        self.deployments: list[dict[str, Any]] = [{"name": "echo", "app": "x:Y", "desired": 1, "ready": 0}]


def feed_of(node: FakeNode, **limits: int) -> EventFeed:
    return EventFeed(lambda: node.view, lambda: node.deployments, clock=lambda: 1.0, **limits)


async def test_a_stream_starts_with_a_snapshot_then_gets_changes() -> None:
    node = FakeNode()
    feed = feed_of(node)
    stream = feed.open()
    first = stream.queue.get_nowait()
    assert first is not None and first.kind == "snapshot" and first.data["at"] == 1000
    node.view = mesh(member("a", echo="ready"))
    node.deployments = [{**node.deployments[0], "ready": 1}]
    feed.poll()
    feed.member_changed("b", None, Status.ALIVE)
    kinds = [event.kind for event in _drain(stream)]
    assert kinds == ["deployment", "replica", "member"]
    feed.release(stream)
    assert feed.streams == 0


async def test_a_slow_client_is_cut_instead_of_queueing_without_bound() -> None:
    feed = feed_of(FakeNode(), max_queued=4)
    slow, keeping_up = feed.open(), feed.open()
    for index in range(10):
        feed.publish("member", {"id": str(index)})
        _drain(keeping_up)
    assert slow.cut and slow.queue.qsize() == 4
    assert feed.streams == 1 and feed.cut_streams == 1
    feed.close()
    assert feed.streams == 0
    assert keeping_up.queue.get_nowait() is None  # the end marker
    await asyncio.sleep(0)


async def test_streams_past_the_limit_are_refused() -> None:
    feed = feed_of(FakeNode(), max_streams=2)
    feed.open(), feed.open()
    with pytest.raises(Overloaded):
        feed.open()
    feed.close()


def _drain(stream: Any) -> list[MeshEvent]:
    events = []
    while not stream.queue.empty():
        events.append(stream.queue.get_nowait())
    return events


async def test_a_new_stream_does_not_swallow_a_change_the_open_ones_have_not_heard_of() -> None:
    node = FakeNode()
    feed = feed_of(node)
    first = feed.open()
    _drain(first)
    node.view = mesh(member("a", echo="ready"))
    second = feed.open()
    assert [event.kind for event in _drain(first)] == ["replica"]
    assert [event.kind for event in _drain(second)] == ["snapshot"]
    feed.close()


async def test_the_snapshot_carries_the_mesh_traffic_and_jobs() -> None:
    node = FakeNode()
    traffic = {"window_s": 10.0, "requests": {"echo": [50, 5, 50]}, "links": {"b": 20}}
    node.view = mesh(
        {**member("a", echo="ready"), "traffic": traffic}, {**member("d", "dead"), "traffic": traffic}
    )
    jobs = {"echo": {"queued": 2}}
    feed = EventFeed(
        lambda: node.view,
        lambda: node.deployments,
        jobs=lambda: {name: dict(counts) for name, counts in jobs.items()},
        clock=lambda: 1.0,
    )
    stream = feed.open()
    snapshot = stream.queue.get_nowait()
    assert snapshot is not None
    echo = snapshot.data["traffic"]["deployments"]["echo"]
    assert (echo["rps"], echo["errors_ps"]) == (5.0, 0.5)  # the dead member's window is not counted
    assert snapshot.data["traffic"]["links"] == [{"from": "a", "to": "b", "rps": 2.0}]
    assert snapshot.data["jobs"] == jobs
    feed.poll_jobs()
    assert _drain(stream) == []  # unchanged: nothing said
    jobs["echo"] = {"queued": 1, "running": 1}
    feed.poll_jobs()
    assert [(e.kind, e.data["counts"]) for e in _drain(stream)] == [("jobs", jobs)]
    feed.release(stream)


async def test_failovers_are_told_at_most_once_a_second_per_deployment_with_a_count() -> None:
    now = [100.0]
    node = FakeNode()
    feed = EventFeed(lambda: node.view, lambda: node.deployments, clock=lambda: now[0])
    stream = feed.open()
    _drain(stream)
    report = Failover("echo", ("b",), ("overloaded",), "c")
    for _ in range(5):
        feed.failover(report)
    first = _drain(stream)
    assert [(e.kind, e.data["count"], e.data["served_by"]) for e in first] == [("failover", 1, "c")]
    assert first[0].data["refused_by"] == ["b"] and first[0].data["reasons"] == ["overloaded"]
    feed.poll()
    assert _drain(stream) == []  # the four held back wait out the second
    now[0] += 1.0
    feed.poll()  # the end of the burst is told by the poll, with no new failover needed
    assert [(e.kind, e.data["count"]) for e in _drain(stream)] == [("failover", 4)]
    feed.release(stream)

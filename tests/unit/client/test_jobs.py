"""The client's jobs methods without a mesh: reading a job's JSON, following it, and both faces alike.

``JobWatch`` is driven as the faces drive it, by a scripted network and a fake clock (no sockets, no
sleeps); the faces run against one scripted node (``httpx.MockTransport``), as in test_faces.py.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Generator, Iterator
from typing import Any

import httpx
import pytest

from meshnode import (
    AsyncMeshClient,
    DeploymentNotFound,
    Job,
    JobFailed,
    JobGone,
    JobNotFinished,
    JobNotFound,
    MeshClient,
    StreamBroken,
)
from meshnode.client.exchange import ClientOptions, Planner
from meshnode.client.job_view import Progress, job_from_view
from meshnode.client.job_watch import IDLE_S, POLL_INTERVAL_S, JobWatch
from meshnode.client.nodes import NodeList
from meshnode.client.steps import Close, Finished, Lines, NextLine, Pause, Read, Send, step
from tests.unit.client.test_faces import both_faces, settle

A, B = "http://10.0.0.1:8470", "http://10.0.0.2:8470"
JOB_ID = "J" * 22
NEXT = "1700000000000.QQQQQQQQQQQQQQQQQQQQQQ"
SSE = "text/event-stream"


def view(status: str = "queued", job_id: str = JOB_ID, node: str = A, **extra: Any) -> dict[str, Any]:
    """A job's JSON as node/http/jobs.py writes it."""
    base = f"{node}/v1/jobs/{job_id}"
    return {
        "id": job_id,
        "deployment": "probe",
        "status": status,
        "attempts": 0 if status == "queued" else 1,
        "max_attempts": 3,
        "node": None if status == "queued" else "n1",
        "created_at": 1700000000.5,
        "started_at": None,
        "finished_at": None,
        "expires_at": None,
        "status_url": base,
        "result_url": f"{base}/result",
        "cancel_url": base,
        "events_url": f"{base}/events",
        **extra,
    }


def events(*views: dict[str, Any]) -> bytes:
    return "".join(f"event: {v['status']}\ndata: {json.dumps(v)}\n\n" for v in views).encode()


class Clock:
    """A clock that moves only when a plan pauses."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Breaking(httpx.SyncByteStream):
    """A streamed body that sends ``sent`` and then fails with ``error``."""

    def __init__(self, sent: bytes, error: Exception) -> None:
        self.sent = sent
        self.error = error

    def __iter__(self) -> Iterator[bytes]:
        yield self.sent
        raise self.error


Network = Callable[[Send], httpx.Response | Exception]


def drive(steps: Generator[Any, Any, Any], network: Network, clock: Clock) -> tuple[Any, list[Any]]:
    """Run a plan as a blocking face would, over ``network``; its value and every action it took."""
    actions: list[Any] = []
    reply: object = None
    while not isinstance(action := step(steps, reply), Finished):
        actions.append(action)
        try:
            match action:
                case Send():
                    reply = network(action)
                    if isinstance(reply, Exception):
                        raise reply
                case Read(response):
                    reply = response.read()
                case Lines(response):
                    reply = response.iter_lines()
                case NextLine(Iterator() as lines):
                    reply = next(lines, None)
                case Close(response):
                    response.close()
                    reply = None
                case Pause(seconds):
                    clock.now += seconds
                    reply = None
        except Exception as exc:  # thrown back into the plan, as the faces do
            reply = exc
    return action.value, actions


def watch(clock: Clock, **options: Any) -> JobWatch:
    planner = Planner(NodeList([A, B], random.Random(1), prefer_first=True), ClientOptions(), clock)
    planner.nodes.postpone_refresh(clock.now)
    return JobWatch(planner, JOB_ID, clock, **options)


def paths(actions: list[Any]) -> list[str]:
    return [f"{action.method} {action.url}" for action in actions if isinstance(action, Send)]


# -- a job's JSON -------------------------------------------------------------------------------


def test_a_job_is_read_from_its_json_with_position_progress_and_error() -> None:
    queued = job_from_view(view("queued", position=2), A, replayed=True)
    assert (queued.id, queued.status, queued.position, queued.node, queued.done) == (
        JOB_ID,
        "queued",
        2,
        None,
        False,
    )
    assert queued.replayed and queued.raw["position"] == 2 and queued.created_at == 1700000000.5
    running = job_from_view(view("running", progress={"step": 3, "total": 10}, later="kept"), A)
    assert running.progress == Progress(3, 10) and running.raw["later"] == "kept"
    failed = job_from_view(view("failed", error={"type": "predictor", "message": "no"}), A)
    assert failed.done and failed.error is not None and failed.error.message == "no"


@pytest.mark.parametrize(
    "body",
    [None, [], view("lost"), view(id=1), view(attempts="1"), view(created_at=None), view(position=True)],
)
def test_a_body_that_is_not_a_job_is_the_nodes_fault(body: Any) -> None:
    with pytest.raises(StreamBroken) as caught:
        job_from_view(body, A)
    assert caught.value.kind == "bad_answer" and A in str(caught.value)


# -- following a job ----------------------------------------------------------------------------


def test_the_watch_returns_each_change_once_and_none_after_the_end() -> None:
    clock = Clock()
    stream = events(
        view("queued", position=1), view("queued", position=1), view("running"), view("completed")
    )

    def network(send: Send) -> httpx.Response:
        assert send.headers["Accept"] == SSE and send.timeout.read == IDLE_S
        return httpx.Response(200, content=stream, headers={"content-type": SSE})

    following = watch(clock)
    seen = [drive(following.next_job(), network, clock)[0] for _ in range(4)]
    assert [job.status if job else None for job in seen] == ["queued", "running", "completed", None]
    assert seen[0].position == 1 and following.last is seen[2]


def test_a_stream_that_breaks_is_read_once_as_a_status_then_opened_again_on_the_other_node() -> None:
    clock = Clock()
    opened: list[str] = []

    def network(send: Send) -> httpx.Response:
        node = send.url.split("/v1/")[0]
        if send.url.endswith("/events"):
            opened.append(node)
            if len(opened) == 1:
                return httpx.Response(200, stream=Breaking(events(view("queued")), httpx.ReadError("reset")))
            return httpx.Response(200, content=events(view("running", node=node), view("completed")))
        return httpx.Response(200, json=view("running", node=node))

    following = watch(clock)
    statuses = [drive(following.next_job(), network, clock) for _ in range(3)]
    assert [job.status for job, _ in statuses] == ["queued", "running", "completed"]
    # The broken stream's node is tried last: the status read and the new stream go to B.
    assert paths(statuses[1][1]) == [f"GET {B}/v1/jobs/{JOB_ID}"]
    assert opened == [A, B]
    # The same status from the new stream (other URLs) is no change; it opened after a pause.
    assert clock.now == 100.0 + POLL_INTERVAL_S


def test_a_silent_stream_costs_one_status_read_and_is_opened_again() -> None:
    clock = Clock()

    def network(send: Send) -> httpx.Response:
        if send.url.endswith("/events"):
            return httpx.Response(200, stream=Breaking(events(view("running")), httpx.ReadTimeout("quiet")))
        return httpx.Response(200, json=view("running", progress={"step": 1, "total": 2}))

    following = watch(clock)
    assert drive(following.next_job(), network, clock)[0].status == "running"
    job, actions = drive(following.next_job(), network, clock)
    assert job.progress == Progress(1, 2)
    assert [type(action).__name__ for action in actions][-3:] == ["Close", "Send", "Read"]


def test_a_node_that_cannot_stream_is_polled_until_the_deadline() -> None:
    clock = Clock()
    reads: list[float] = []

    def network(send: Send) -> httpx.Response:
        if send.url.endswith("/events"):
            return httpx.Response(405, json={"error": {"type": "http_error", "message": "no"}})
        reads.append(clock.now)
        return httpx.Response(200, json=view("running"))

    following = watch(clock, deadline=clock.now + 3.5)
    assert drive(following.next_job(), network, clock)[0].status == "running"
    assert drive(following.next_job(), network, clock)[0] is None  # no change until the deadline
    assert reads == [100.0, 101.0, 102.0, 103.0] and clock.now == 103.5


def test_a_job_unknown_to_the_mesh_ends_the_watch_with_job_not_found() -> None:
    error = {"error": {"type": "not_found", "message": "no job", "request_id": ""}}
    with pytest.raises(JobNotFound, match="no job"):
        drive(watch(Clock()).next_job(), lambda send: httpx.Response(404, json=error), Clock())


# -- both faces ---------------------------------------------------------------------------------


#: The status and body (JSON, or the bytes of a PNG) a job's result answers.
Outcome = tuple[int, Any]


class JobsNode:
    """One node's jobs API, scripted: ``script`` is the statuses a job goes through."""

    def __init__(self, script: list[dict[str, Any]], outcome: Outcome = (200, {"answer": 42})) -> None:
        self.script = script
        self.outcome = outcome
        self.keys: dict[str, str] = {}
        #: (method, url, headers, body) of every request that reached the node.
        self.seen: list[tuple[str, str, dict[str, str], Any]] = []
        self.drop_next_submit = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body: Any = json.loads(request.content) if request.content else None
        self.seen.append((request.method, str(request.url), dict(request.headers), body))
        path = request.url.path
        if path == "/v1/mesh":
            return httpx.Response(200, json={"self": "a", "members": [{"id": "a", "status": "alive"}]})
        if request.method == "POST":
            return self._submit(request, path)
        if path == "/v1/jobs" and "cursor" in request.url.params:
            return httpx.Response(
                200, json={"jobs": [view("failed")], "has_more": False, "next_cursor": None}
            )
        if path == "/v1/jobs":
            listed = [view("completed"), view("queued", job_id="Q" * 22)]
            return httpx.Response(200, json={"jobs": listed, "has_more": True, "next_cursor": NEXT})
        if not path.startswith(f"/v1/jobs/{JOB_ID}"):
            return httpx.Response(404, json={"error": {"type": "not_found", "message": "no job X"}})
        if request.method == "DELETE":
            return httpx.Response(200, json=view("cancelled"))
        if path.endswith("/events"):
            return httpx.Response(200, content=events(*self.script), headers={"content-type": SSE})
        if path.endswith("/result"):
            status, content = self.outcome
            if isinstance(content, bytes):
                return httpx.Response(status, content=content, headers={"content-type": "image/png"})
            return httpx.Response(status, json=content)
        return httpx.Response(200, json=self.script[0])

    def _submit(self, request: httpx.Request, path: str) -> httpx.Response:
        if path != "/v1/jobs/probe":
            return httpx.Response(404, json={"error": {"type": "not_found", "message": "no deployment"}})
        key = request.headers["idempotency-key"]
        replayed = key in self.keys
        self.keys[key] = JOB_ID
        if self.drop_next_submit:  # stored, then the connection dropped before the answer
            self.drop_next_submit = False
            raise httpx.RemoteProtocolError("server disconnected without sending a response")
        answer = view(position=1)
        return httpx.Response(202, json=answer, headers={"Idempotent-Replayed": "true"} if replayed else {})


FINISHING = [view("queued", position=1), view("queued", position=0), view("running"), view("completed")]


async def test_both_faces_submit_with_a_key_and_its_options_and_get_the_job() -> None:
    node = JobsNode(FINISHING)
    async with both_faces(node, [A]) as faces:
        for face in faces:
            job = await settle(face.submit("probe", {"x": 1}, webhook="http://hook/x?y=1", timeout=2.5))
            assert isinstance(job, Job) and (job.id, job.status, job.position) == (JOB_ID, "queued", 1)
            given = await settle(
                face.submit("probe", None, idempotency_key="order-1", hint="h", accept="image/png")
            )
            assert given.replayed is (face is faces[1])  # the second face sent the same key
            with pytest.raises(DeploymentNotFound):
                await settle(face.submit("nowhere", {}))
            with pytest.raises(ValueError, match="idempotency_key"):
                await settle(face.submit("probe", {}, idempotency_key=""))
    submits = [(url, headers, body) for method, url, headers, body in node.seen if method == "POST"]
    (url, headers, body), (_, given_headers, given_body) = submits[0], submits[1]
    assert url == f"{A}/v1/jobs/probe?webhook=http%3A%2F%2Fhook%2Fx%3Fy%3D1" and body == {"x": 1}
    assert len(headers["idempotency-key"]) == 22 and headers["x-request-timeout"] == "2.5"
    assert headers["accept"] == "application/json"
    assert given_headers["idempotency-key"] == "order-1" and given_headers["x-mesh-hint"] == "h"
    assert given_headers["accept"] == "image/png" and given_body == {}
    assert len({headers["idempotency-key"] for _, headers, _ in submits[::4]}) == 2  # a new key per call


async def test_a_submit_that_fails_over_names_the_same_job_on_the_next_node() -> None:
    node = JobsNode(FINISHING)
    async with both_faces(node, [A, B]) as faces:
        for face in faces:
            node.drop_next_submit = True
            job = await settle(face.submit("probe", {"x": 1}))
            assert job.replayed and face.last_node == B
            keys = [headers["idempotency-key"] for method, _, headers, _ in node.seen[-2:]]
            assert keys[0] == keys[1]


async def test_both_faces_wait_through_every_status_and_return_the_answer() -> None:
    for index in range(2):
        node = JobsNode(FINISHING)
        async with both_faces(node, [A]) as faces:
            heard: list[Job] = []
            assert await settle(faces[index].wait(JOB_ID, on_progress=heard.append)) == {"answer": 42}
            assert [(job.status, job.position) for job in heard] == [
                ("queued", 1),
                ("queued", 0),
                ("running", None),
                ("completed", None),
            ]


async def test_both_faces_follow_events_to_the_end_and_close_an_early_stop() -> None:
    async with both_faces(JobsNode(FINISHING), [A]) as faces:
        blocking, awaited = faces
        assert isinstance(blocking, MeshClient) and isinstance(awaited, AsyncMeshClient)
        assert [job.status for job in blocking.events(JOB_ID)][-2:] == ["running", "completed"]
        assert [job.status async for job in awaited.events(JOB_ID)][-1] == "completed"
        with blocking.events(JOB_ID) as following:
            assert next(following).position == 1
        assert following._watch._opened is None
        async with awaited.events(JOB_ID) as async_following:
            assert (await anext(async_following)).position == 1
        assert async_following._watch._opened is None


@pytest.mark.parametrize(
    ("status", "outcome", "raised", "says"),
    [
        ("running", (202, {}), JobNotFinished, "has not ended: running"),
        ("failed", (500, {"error": {"type": "predictor", "message": "says no"}}), JobFailed, "says no"),
        ("cancelled", (410, {"error": {"type": "gone", "message": "was cancelled"}}), JobGone, "cancelled"),
    ],
)
async def test_a_result_that_is_not_there_raises_why(
    status: str, outcome: Outcome, raised: type[Exception], says: str
) -> None:
    error = {"type": "predictor", "message": "says no"} if status == "failed" else None
    node = JobsNode([view(status, error=error)], outcome)
    async with both_faces(node, [A]) as faces:
        for face in faces:
            with pytest.raises(raised, match=says) as caught:
                await settle(face.result(JOB_ID))
            if isinstance(caught.value, JobFailed):
                assert (caught.value.status, caught.value.kind) == (500, "predictor")
                assert str(caught.value) == f"job {JOB_ID} failed: 500: says no"
            if isinstance(caught.value, JobNotFinished):
                assert caught.value.job.status == "running" and caught.value.retryable


async def test_both_faces_read_cancel_and_list_jobs_and_name_an_unknown_one() -> None:
    node = JobsNode([view("completed")], (200, b"\x89PNG"))
    async with both_faces(node, [A]) as faces:
        for face in faces:
            assert (await settle(face.status(JOB_ID))).status == "completed"
            assert await settle(face.result(JOB_ID)) == b"\x89PNG"
            assert (await settle(face.cancel(JOB_ID))).status == "cancelled"
            listed = await settle(face.jobs("probe", "queued", limit=5))
            assert [job.status for job in listed] == ["completed", "queued"]
            assert listed.has_more and listed.next_cursor == NEXT
            last = await settle(face.jobs("probe", "queued", limit=5, cursor=listed.next_cursor))
            assert (
                [job.status for job in last] == ["failed"] and not last.has_more and last.next_cursor is None
            )
            with pytest.raises(JobNotFound, match="no job"):
                await settle(face.status("K" * 22))
            with pytest.raises(ValueError, match="limit"):
                await settle(face.jobs(limit=0))
            with pytest.raises(ValueError, match="status"):
                await settle(face.jobs(status="lost"))
    listings = [url for method, url, _, _ in node.seen if url.startswith(f"{A}/v1/jobs?")]
    assert listings[0] == f"{A}/v1/jobs?deployment=probe&status=queued&limit=5"
    assert listings[1] == f"{A}/v1/jobs?deployment=probe&status=queued&limit=5&cursor={NEXT}"

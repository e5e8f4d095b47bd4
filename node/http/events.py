"""``GET /v1/events``: the mesh's events as Server-Sent Events, what the dashboard draws from.

Event kinds (``event:`` of each message; ``data:`` is JSON):

- ``snapshot``: ``{"self", "members", "deployments", "at"}``, the whole picture, first on every
  stream and every ``SNAPSHOT_INTERVAL_S`` after, so a page draws from nothing and loads stay fresh;
- ``member``: ``{"id", "name", "previous", "status", "member", "at"}``, pushed by the agent as
  membership changes (``previous`` null: it joined), from the gossip runner's own effects;
- ``deployment``: ``{"name", "change": "declared"|"changed"|"removed", "fields", "deployment", "at"}``;
- ``replica``: ``{"node", "node_name", "deployment", "previous", "state", "error", "at"}`` for any
  node's replica, found, as deployments are, by comparing this node's successive views every
  ``POLL_INTERVAL_S`` (``mesh_events.py``) while at least one stream is open;
- ``failover``: ``{"deployment", "refused_by", "reasons", "served_by", "count", "at"}``: requests
  this node sent on to another replica after the first ones refused them (the forwarder's report),
  at most one event per deployment each ``FAILOVER_EVERY_S``, ``count`` saying how many it stands for;
- ``jobs``: ``{"counts": {status: n}, "at"}``, this node's jobs by status, when they change.

The snapshot also carries ``traffic``, the mesh's request rates, errors, latency percentiles per
deployment and the links that carry them, summed from every member's gossiped window
(``mesh/traffic.py``), and ``jobs``.

Comments (``: keep-alive``) go out after ``sse_keepalive_s`` of silence, so proxies keep idle streams.

Bounds: at most ``MAX_STREAMS`` streams per node (429 past it); each queues at most ``MAX_QUEUED``
events. A client that reads slower than events come fills its queue and is cut: it gets nothing
more and its stream ends once the send in progress returns (the dashboard reconnects and starts
again from a snapshot); a send stuck past ``SEND_TIMEOUT_S`` drops the connection. So a slow or
stalled client holds one bounded queue and one socket buffer, never more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..dataplane.forward import Failover
from ..errors import Overloaded
from ..mesh.traffic import mesh_traffic
from ..mesh.types import Status
from .mesh_events import (
    ReplicaKey,
    deployment_summary,
    diff_deployments,
    diff_replicas,
    member_summary,
    replica_states,
)
from .sse import KEEPALIVE, KEEPALIVE_S  # every SSE stream of the node keeps alive alike

__all__ = ["EventFeed", "EventKind", "MeshEvent", "add_event_routes"]

log = logging.getLogger(__name__)

EventKind = Literal["snapshot", "member", "deployment", "replica", "failover", "jobs"]
# Within a second of a change, as the dashboard promises; a poll costs one view of the mesh.
POLL_INTERVAL_S = 0.25
# Loads and other slow numbers are refreshed by the snapshot; a 100-node one is about 50 kB.
SNAPSHOT_INTERVAL_S = 3.0
MAX_STREAMS = 64
# A burst (a partition healing in a big mesh) fits; a client this far behind starts again.
MAX_QUEUED = 1024
SEND_TIMEOUT_S = 30.0
# Under overload every request may fail over: one event per deployment this often says how many.
FAILOVER_EVERY_S = 1.0
# Counting jobs walks the job table (thousands of rows at most): once a second, not every poll.
JOBS_POLL_INTERVAL_S = 1.0


@dataclass(frozen=True)
class MeshEvent:
    """One message of the feed."""

    id: int
    kind: EventKind
    data: dict[str, Any]

    def encode(self) -> bytes:
        """The Server-Sent Events message."""
        body = json.dumps(self.data, separators=(",", ":"), default=str)
        return f"id: {self.id}\nevent: {self.kind}\ndata: {body}\n\n".encode()


class _Stream:
    """One client's queue; ``None`` in it ends the stream."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[MeshEvent | None] = asyncio.Queue(size)
        self.cut = False

    def offer(self, event: MeshEvent | None) -> bool:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.cut = True
            return False
        return True


class EventFeed:
    """The node's events, fanned out to every open stream (see the module docstring)."""

    def __init__(
        self,
        view: Callable[[], dict[str, Any]],
        deployments: Callable[[], list[dict[str, Any]]],
        *,
        jobs: Callable[[], dict[str, dict[str, int]]] = dict,
        keepalive_s: float = KEEPALIVE_S,
        clock: Callable[[], float] = time.time,
        max_streams: int = MAX_STREAMS,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._view = view
        self._deployments = deployments
        self._jobs = jobs
        self.keepalive_s = keepalive_s  # a quiet stream's comment comes after this (sse_keepalive_s)
        self._clock = clock
        self._max_streams = max_streams
        self._max_queued = max_queued
        self._streams: set[_Stream] = set()
        self._next_id = 0
        self._watcher: asyncio.Task[None] | None = None
        self._replicas: dict[ReplicaKey, dict[str, Any]] = {}
        self._declared: dict[str, dict[str, Any]] = {}
        self._job_counts: dict[str, dict[str, int]] = {}
        # Per deployment: when its last failover event went out, and the reports held back since.
        self._failovers: dict[str, tuple[float, int, Failover | None]] = {}
        self.cut_streams = 0  # clients cut for reading too slowly

    @property
    def streams(self) -> int:
        """Streams open now."""
        return len(self._streams)

    def open(self) -> _Stream:
        """A new stream, its snapshot queued first; Overloaded when ``max_streams`` are open."""
        if len(self._streams) >= self._max_streams:
            raise Overloaded(f"{self._max_streams} event streams are open on this node", retry_after_s=5.0)
        if self._streams:
            self.poll()  # the snapshot moves the baseline: open streams hear of changes up to it first
        stream = _Stream(self._max_queued)
        stream.offer(self._event("snapshot", self.snapshot()))
        self._streams.add(stream)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="event-feed")
        return stream

    def release(self, stream: _Stream) -> None:
        """Forget a stream whose client went away; the watcher stops with the last one."""
        self._streams.discard(stream)
        if not self._streams and self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def close(self) -> None:
        """End every stream (the node stops): each gets its end marker, or is cut."""
        for stream in list(self._streams):
            stream.offer(None)
            self.release(stream)

    def snapshot(self) -> dict[str, Any]:
        """The whole picture; also the baseline the next changes are found against."""
        mesh = self._view()
        deployments = [deployment_summary(view) for view in self._deployments()]
        self._replicas = replica_states(mesh)
        self._declared = {view["name"]: view for view in deployments}
        self._job_counts = self._jobs()
        members = mesh.get("members", ())
        live = (Status.ALIVE.value, Status.SUSPECT.value)
        return {
            "self": mesh.get("self"),
            "members": [member_summary(member) for member in members],
            "deployments": deployments,
            "traffic": mesh_traffic((m["id"], m.get("traffic")) for m in members if m.get("status") in live),
            "jobs": self._job_counts,
        }

    def member_changed(self, node: str, previous: Status | None, current: Status) -> None:
        """What the gossip runner reported about a member (``MemberChanged``)."""
        if not self._streams:
            return
        member = next((m for m in self._view().get("members", ()) if m.get("id") == node), None)
        self.publish(
            "member",
            {
                "id": node,
                "name": member.get("name", "") if member else "",
                "previous": previous.value if previous is not None else None,
                "status": current.value,
                "member": member_summary(member) if member else None,
            },
        )

    def failover(self, report: Failover) -> None:
        """The forwarder's report of a request served after a refusal; rate-limited per deployment."""
        if not self._streams:
            return
        sent_at, held, _ = self._failovers.get(report.deployment, (-FAILOVER_EVERY_S, 0, None))
        if self._clock() - sent_at < FAILOVER_EVERY_S:
            self._failovers[report.deployment] = (sent_at, held + 1, report)
            return
        self._send_failover(report, held + 1)

    def _send_failover(self, report: Failover, count: int) -> None:
        self._failovers[report.deployment] = (self._clock(), 0, None)
        self.publish(
            "failover",
            {
                "deployment": report.deployment,
                "refused_by": list(report.refused_by),
                "reasons": list(report.reasons),
                "served_by": report.served_by,
                "count": count,
            },
        )

    def publish(self, kind: EventKind, data: dict[str, Any]) -> None:
        """Queue an event on every stream; a stream whose queue is full is cut."""
        if not self._streams:
            return
        event = self._event(kind, data)
        for stream in list(self._streams):
            if not stream.offer(event):
                self.cut_streams += 1
                log.warning("an event stream reads too slowly; cutting it (it may reconnect)")
                self.release(stream)

    def poll(self) -> None:
        """Compare this node's view with the last one and publish what changed."""
        replicas = replica_states(self._view())
        deployments = {view["name"]: deployment_summary(view) for view in self._deployments()}
        for change in diff_deployments(self._declared, deployments):
            self.publish("deployment", change)
        for change in diff_replicas(self._replicas, replicas):
            self.publish("replica", change)
        self._replicas, self._declared = replicas, deployments
        now = self._clock()
        for sent_at, held, report in list(self._failovers.values()):
            if held and report is not None and now - sent_at >= FAILOVER_EVERY_S:
                self._send_failover(report, held)  # the end of a burst is told too

    def poll_jobs(self) -> None:
        """Publish this node's job counts when they changed (a table walk: not every poll)."""
        counts = self._jobs()
        if counts != self._job_counts:
            self._job_counts = counts
            self.publish("jobs", {"counts": counts})

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        next_snapshot = loop.time() + SNAPSHOT_INTERVAL_S
        next_jobs = loop.time() + JOBS_POLL_INTERVAL_S
        while self._streams:
            await asyncio.sleep(POLL_INTERVAL_S)
            try:
                self.poll()
                if loop.time() >= next_jobs:
                    next_jobs = loop.time() + JOBS_POLL_INTERVAL_S
                    self.poll_jobs()
                if loop.time() >= next_snapshot:
                    next_snapshot = loop.time() + SNAPSHOT_INTERVAL_S
                    self.publish("snapshot", self.snapshot())
            except Exception:  # a bug here must not end the feed of every client silently
                log.exception("the event feed could not read this node's view")

    def _event(self, kind: EventKind, data: dict[str, Any]) -> MeshEvent:
        self._next_id += 1
        return MeshEvent(self._next_id, kind, {**data, "at": round(self._clock() * 1000)})


def add_event_routes(app: FastAPI, feed: EventFeed) -> None:
    """Mount ``GET /v1/events``."""

    # Not in the OpenAPI document: a fuzzer would wait on a stream that never ends.
    @app.get("/v1/events", include_in_schema=False)
    async def events() -> _EventStream:
        """Server-Sent Events of the mesh (see ``events.py``)."""
        return _EventStream(feed, feed.open())


class _EventStream(Response):
    """The response: the stream's events until the client leaves, is cut, or the node stops."""

    def __init__(self, feed: EventFeed, stream: _Stream) -> None:
        super().__init__(media_type="text/event-stream")
        self._feed = feed
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._feed.release(self._stream)
            for task in (pump, gone):
                task.cancel()
            await asyncio.gather(pump, gone, return_exceptions=True)
        if pump.done() and not pump.cancelled() and pump.exception() is not None:
            log.warning("event stream closed: %s", pump.exception())

    async def _pump(self, send: Send) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # Tells EventSource to wait this long before reconnecting; the dashboard does the same.
        await self._send(send, b"retry: 1000\n\n")
        stream = self._stream
        while not stream.cut:
            try:
                async with asyncio.timeout(self._feed.keepalive_s):
                    event = await stream.queue.get()
            except TimeoutError:
                await self._send(send, KEEPALIVE)
                continue
            if event is None:
                break
            await self._send(send, event.encode())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send(self, send: Send, chunk: bytes) -> None:
        # A client that stops reading blocks this send; past the timeout the connection is dropped.
        async with asyncio.timeout(SEND_TIMEOUT_S):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass

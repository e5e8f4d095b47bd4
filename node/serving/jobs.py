"""The job service: what HTTP asks of jobs, and the loop that runs the ones this node is first for.

The shell around ``mesh/job_policy.py`` (holders, runner, takeover, order); the copies themselves
are ``job_table.py``'s, reached on other nodes through ``job_peers.py``.

- ``submit`` returns once the job is stored on all its ``k`` holders: then ``POST`` answers 202.
- ``find`` reads the copy held here or asks the holders; ``cancel`` writes the request (a queued job
  ends at once, the runner stops a running one); ``listing`` asks every live node.
- ``_tick`` (every ``job_tick_s``, and at once when the view or a copy changes) pulls what this node
  missed from the few peers that can have it (``job_sync.py``), then carries out the policy: start,
  take over, cancel, expire, copy to new holders (ended jobs too), deliver webhooks.
- A job runs through the forwarder as a predict request does; a refusal for lack of room (429/503)
  puts it back in the queue after its Retry-After, not counted as an attempt.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from ..errors import Gone, MeshnodeError, NotFound, NotReady
from ..mesh import job_policy
from ..mesh.job_listing import JobCursor, Page, merged_page
from ..mesh.job_policy import Action
from ..mesh.jobs import (
    JOB_ID_PATTERN,
    Delivery,
    JobError,
    JobRecord,
    JobResult,
    JobStatus,
    JobWireError,
    Progress,
)
from ..mesh.types import NodeId
from .job_files import JobFiles
from .job_limits import JobLimits
from .job_peers import JobPeers
from .job_runs import Serve, run_once
from .job_store import JobStore
from .job_sync import JobSync
from .job_table import JobTable
from .job_webhooks import WebhookSender

__all__ = ["JobService"]

log = logging.getLogger(__name__)

_EXPIRED_KEPT_MS = 3600 * 1000
# A pass over the jobs held here yields to the event loop after this long.
_SLICE_S = 0.005
# How long a stopping node tries to hand its runs back; past it they are taken over as a dead node's.
_HANDBACK_TIMEOUT_S = 5.0


class JobService:
    """Jobs for HTTP, and the runs this node is responsible for."""

    def __init__(
        self,
        *,
        me: NodeId,
        open_store: Callable[[], JobStore],
        files: JobFiles,
        peers: JobPeers,
        serve: Serve,
        known: Callable[[str], bool],
        limits: JobLimits,
        webhooks: WebhookSender,
    ) -> None:
        self._me = me
        self._peers = peers
        self._serve = serve
        self.known = known
        self.limits = limits
        self._wake = asyncio.Event()
        self.table = JobTable(
            me,
            open_store,
            files,
            peers,
            limits.copies,
            self._wake.set,
            lambda node: self.sync.pull_from(node),
            limits.message_bytes,
            limits.max_result_bytes,
        )
        self.sync = JobSync(me, self.table, limits.sync_s, self._wake.set)
        self._running: dict[str, asyncio.Task[None]] = {}
        # Per job refused for lack of room: not started again before this loop time.
        self._not_before: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        # The live nodes the ended jobs' holders were last ranked over (a pass on each change).
        self._live_at_pass: frozenset[NodeId] = frozenset()
        self._webhooks = webhooks
        self._delivering: dict[str, asyncio.Task[None]] = {}
        # Webhook tries made here, by outcome: delivered, retry (failed, tried again later), gave_up.
        self.webhook_tries: collections.Counter[str] = collections.Counter()
        # Jobs this node ended, by (deployment, status): one node ends each job, so sums add up.
        self.ended: collections.Counter[tuple[str, str]] = collections.Counter()

    async def start(self) -> None:
        """Load the copies kept on disk and start the loop that runs and settles them."""
        await self.table.open()
        self.sync.start()
        self._task = asyncio.create_task(self._loop(), name="jobs")

    async def stop(self) -> None:
        """Stop the runs here and hand them back to the queue, not counted as attempts (the next
        in rank starts them), then close the store. The copies stay on disk."""
        stopped = list(self._running)
        tasks = [t for t in (self._task, *self._running.values(), *self._delivering.values()) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_HANDBACK_TIMEOUT_S):
                for job_id in stopped:
                    record = self.table.records.get(job_id)
                    if (
                        record is not None
                        and record.status == JobStatus.RUNNING
                        and record.runner == self._me
                    ):
                        back = record.written(self._me, status=JobStatus.QUEUED, attempts=record.attempts - 1)
                        await self.table.write(back)
        await self._webhooks.close()
        await self.table.close()

    # -- what HTTP calls ----------------------------------------------------------------------

    def new_record(self, deployment: str, body: dict[str, Any], **fields: Any) -> JobRecord:
        """A queued job of `deployment` made here now, with a fresh id."""
        return JobRecord(
            id=secrets.token_urlsafe(16),
            deployment=deployment,
            body=body,
            created_ms=_now_ms(),
            max_attempts=self.limits.max_attempts,
            writer=self._me,
            **fields,
        )

    async def submit(self, record: JobRecord) -> JobRecord:
        """Store a new job on its holders; return it once all of them have it."""
        if len(self.table.records) >= self.limits.max_jobs:
            raise NotReady(f"this node holds {self.limits.max_jobs} jobs; try again later", retry_after_s=5)
        holders = self.table.holders(record.id)
        stored = await asyncio.gather(*(self.table.put_on(node, [record]) for node in holders))
        if not all(stored):
            raise NotReady("the job could not be stored on its copies' nodes; try again", retry_after_s=1)
        return self.table.records.get(record.id, record)

    async def find(self, job_id: str) -> JobRecord:
        """The newest copy of `job_id` held here or by a holder; 404 when none has it, 410 expired."""
        if not JOB_ID_PATTERN.fullmatch(job_id):
            raise NotFound(f"no job {job_id[:40]!r}: job ids are 22 characters of [A-Za-z0-9_-]")
        record = self.table.records.get(job_id)
        if record is None:
            for node in self.table.holders(job_id):
                answer = (
                    await self._peers.ask(node, {"op": "get", "id": job_id}) if node != self._me else None
                )
                if isinstance(answer, dict) and answer.get("record") is not None:
                    try:
                        record = JobRecord.from_wire(answer["record"])
                        break
                    except JobWireError as exc:
                        log.warning("job %s from a peer is malformed: %s", job_id, exc)
        if record is None:
            raise NotFound(f"no job {job_id!r} (never made, or expired and forgotten)")
        if job_policy.expired(record, _now_ms()):
            raise Gone(f"job {job_id} ended and its result expired")
        return record

    async def cancel(self, job_id: str) -> JobRecord:
        """Ask for `job_id` to stop: a queued job ends cancelled at once, a running one is stopped."""
        record = await self.find(job_id)
        if record.status.terminal:
            return record
        asked = record.written(self._me, cancel_requested=True)
        if record.status == JobStatus.QUEUED:
            asked = self._ended(asked, JobStatus.CANCELLED)
        return await self.table.write(asked)

    async def listing(
        self, deployment: str | None, status: str | None, limit: int, after: JobCursor | None = None
    ) -> Page:
        """Jobs of the whole mesh after `after`, newest first, a page of at most `limit`: all nodes asked."""
        query: dict[str, Any] = {"op": "list", "deployment": deployment, "status": status, "limit": limit}
        if after is not None:
            query["after"] = after.to_wire()
        others = [node for node in self._peers.live() if node != self._me]
        pages = [self.table.listing(deployment, status, limit, after)]
        pages += [Page.from_wire(answer) for answer in await self._peers.ask_each(others, query)]
        return merged_page(pages, after, limit)

    async def result_data(self, result: JobResult) -> bytes:
        """A result's bytes: in its record, or from a node that keeps its file (503 when none answers)."""
        if result.stored is None:
            return result.data
        data = await self.table.files.read(result.stored)
        if data is None:
            raise NotReady("no node that keeps this job's result answers; try again", retry_after_s=5)
        return data

    def name_of(self, node: NodeId | None) -> str | None:
        """A member's name (for the status view), or its id when it is no longer known."""
        return self._peers.name_of(node)

    def positions(self) -> dict[str, int]:
        """Queue positions of the jobs this node holds (its view of each deployment's queue)."""
        return job_policy.queue_positions(self.table.records.values())

    def stats(self) -> dict[str, Any]:
        """For /metrics: the table's jobs by deployment and status and queue ages, runs, webhooks."""
        return {
            **self.table.stats(_now_ms()),
            "running_here": len(self._running),
            "webhook_tries": dict(self.webhook_tries),
            "ended": dict(self.ended),
        }

    # -- the loop ----------------------------------------------------------------------------

    async def _loop(self) -> None:
        next_full = 0.0
        while True:
            # A wake (a copy arrived, a member changed) looks at the unfinished jobs; the ended ones
            # (expiry, webhooks) once per tick_s: a node keeps a day of them.
            full = _loop_time() >= next_full
            next_full = _loop_time() + self.limits.tick_s if full else next_full
            try:
                await self._tick(full)
            except Exception:  # one bad job must not stop every other
                log.exception("jobs: tick failed")
            self._wake.clear()
            try:
                async with asyncio.timeout(self.limits.tick_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _tick(self, full: bool) -> None:
        now = _now_ms()
        live, present = self._peers.live(), self._peers.present()
        await self.sync.pull(live)
        # Ended jobs get new holders too, looked at when the live set moved (ranked again only where
        # that can have moved their holders) or a copy missed one: a day of them is too many to rank.
        moved, added = False, frozenset[NodeId]()
        if full and (live_now := frozenset(live)) != self._live_at_pass:
            moved, added, self._live_at_pass = True, live_now - self._live_at_pass, live_now
        slice_end = _loop_time() + _SLICE_S
        # A node just started holds copies that may be stale (runs it had, jobs others finished):
        # it acts on them only once it has pulled from a peer, or after job_sync_s alone.
        settled = self.sync.settled()
        rerun_safe = functools.cache(self._peers.rerun_safe)  # once per deployment per tick
        to_start: list[JobRecord] = []
        records = self.table.records
        chosen = (
            list(records.values()) if full else [records[i] for i in self.table.unfinished if i in records]
        )
        for record in chosen:
            if job_policy.expired(record, now):
                # Its result goes at once; the record stays an hour more, so it answers 410, not 404.
                if now >= (record.expires_ms or 0) + _EXPIRED_KEPT_MS:
                    await self.table.forget([record.id])
                    self._not_before.pop(record.id, None)
                elif record.result is not None:
                    await self.table.drop_result(record)
                continue
            if _loop_time() >= slice_end:  # a long pass lets probes and requests through meanwhile
                await asyncio.sleep(0)
                slice_end = _loop_time() + _SLICE_S
            if (
                not record.status.terminal
                or record.id in self.table.short
                or (moved and self.table.may_move(record.id, self._live_at_pass, added))
            ):
                await self.table.copy_to_new_holders(record)
            if not settled:
                continue
            running_here = record.id in self._running
            decision = job_policy.decide(
                record,
                self._me,
                live,
                present,
                running_here=running_here,
                rerun_safe=rerun_safe(record.deployment),
            )
            match decision.action:
                case Action.CANCEL:
                    await self.table.write(self._ended(record, JobStatus.CANCELLED))
                case Action.FAIL:
                    error = JobError("node_lost", f"job failed: {decision.reason}", 502)
                    await self.table.write(self._ended(record, JobStatus.FAILED, error=error))
                case Action.RERUN:
                    to_start.append(await self.table.write(record.written(self._me, status=JobStatus.QUEUED)))
                case Action.START if (
                    self._not_before.get(record.id, 0.0) <= _loop_time() and not running_here
                ):
                    to_start.append(record)
                case _ if running_here and record.cancel_requested:
                    self._running[record.id].cancel()
            if (
                job_policy.delivery_due(record, now)
                and record.id not in self._delivering
                and job_policy.runner_of(record.id, present) == self._me
            ):
                self._delivering[record.id] = asyncio.create_task(self._deliver(record.id))
        running: dict[str, int] = {}
        for job_id in self._running:
            held = self.table.records.get(job_id)
            if held is not None:
                running[held.deployment] = running.get(held.deployment, 0) + 1
        budget = dict.fromkeys((r.deployment for r in to_start), self.limits.running_per_deployment)
        for record in job_policy.next_to_start(to_start, running, budget):
            started = record.written(
                self._me,
                status=JobStatus.RUNNING,
                runner=self._me,
                attempts=record.attempts + 1,
                started_ms=_now_ms(),
            )
            self._running[record.id] = asyncio.create_task(self._run(await self.table.write(started)))

    async def _run(self, record: JobRecord) -> None:
        async def on_progress(step: int, total: int) -> None:
            current = self.table.records.get(record.id, record)
            if not current.status.terminal:
                await self.table.write(current.written(self._me, progress=Progress(step, total)))

        try:
            result = await run_once(record, self._serve, on_progress)
        except asyncio.CancelledError:
            current = self.table.records.get(record.id, record)
            if current.cancel_requested and not current.status.terminal:
                await self.table.write(self._ended(current, JobStatus.CANCELLED))
            raise
        except MeshnodeError as exc:
            current = self.table.records.get(record.id, record)
            if exc.retryable:
                # Never started (no room, loading): back in the queue, this attempt not counted.
                self._not_before[record.id] = _loop_time() + (exc.retry_after_s or 1.0)
                requeued = current.written(self._me, status=JobStatus.QUEUED, attempts=current.attempts - 1)
                await self.table.write(requeued)
            else:
                error = JobError(exc.kind, exc.message, exc.status)
                await self.table.write(self._ended(current, JobStatus.FAILED, error=error))
        else:
            if len(result.data) > self.limits.inline_result_bytes:
                result = await self.table.files.keep(result)
            current = self.table.records.get(record.id, record)
            await self.table.write(self._ended(current, JobStatus.COMPLETED, result=result))
        finally:
            self._running.pop(record.id, None)
            self._wake.set()

    async def _deliver(self, job_id: str) -> None:
        """One try of a job's webhook; its outcome goes to the job's copies."""
        try:
            record = self.table.records.get(job_id)
            if record is not None and record.delivery is not None:
                delivery = await self._webhooks.try_once(record, _now_ms)
                self.webhook_tries[delivery.state.replace("pending", "retry")] += 1
                await self.table.write(
                    self.table.records.get(job_id, record).written(self._me, delivery=delivery)
                )
        finally:
            self._delivering.pop(job_id, None)
            self._wake.set()

    def _ended(self, record: JobRecord, status: JobStatus, **changes: Any) -> JobRecord:
        self.ended[(record.deployment, status.value)] += 1
        now = _now_ms()
        expires = now + int(self.limits.ttl_s * 1000)
        if record.webhook is not None:
            changes["delivery"] = Delivery(next_ms=now)  # due at once
        return record.written(self._me, status=status, finished_ms=now, expires_ms=expires, **changes)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _loop_time() -> float:
    return asyncio.get_running_loop().time()

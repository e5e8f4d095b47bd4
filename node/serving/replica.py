"""Replica supervisor: runs one replica's worker process and carries requests to it.

The agent never runs model code. For each replica it hosts, a ``Replica`` starts ``python -m
meshnode.serving.worker`` (``worker.py``, the shell around ``inference/worker.py``) with one end of a
socket pair of its own (``pipe.py``), and relays ``Call`` envelopes in and ``Chunk``/``Reply``/
``Failure`` envelopes out (``mesh/envelope.py``), one frame each. Peers' links may be handed to the
worker, which serves their calls itself and reports them (``handed_links.py``): they count here.

Invariants:

- A replica is ``ready`` only after the worker said ``Hello``, i.e. after ``setup()`` and warm-up.
- The worker is restarted with exponential backoff (``mesh/backoff.py``) whenever it exits (crash,
  SIGKILL, OOM kill, our kill of a worker hung past a deadline); the agent and other replicas go on. A
  worker that exits before it is ready failed to start: its error is gossiped at once, logged once per
  error, and after ``setup_attempts`` failed starts in a row the replica is ``failed`` until
  ``failed_hold_s`` passed (``mesh/restarts.py``).
- Requests in flight when the worker dies fail with a retryable error (they may run again
  elsewhere); a request past its deadline fails with 504 and is cancelled in the worker.
- At most ``capacity`` requests are admitted (the worker's concurrency times its batch size, plus a
  bounded queue); more are refused at once with 429.
- Stopping drains: no new requests, in-flight ones finish (bounded), then the worker is terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dataplane.answers import Answers, Sink, past_deadline
from ..dataplane.sealed_stream import SealedStream
from ..errors import Conflict, NotReady, Overloaded
from ..load import SpeedMeter
from ..mesh.backoff import Backoff
from ..mesh.deadlines import Deadline
from ..mesh.envelope import (
    BatchSizes,
    Call,
    Cancel,
    Encoded,
    Envelope,
    EnvelopeError,
    Failure,
    Hello,
    Hints,
    Reply,
    decode_envelope,
    encode_envelope,
)
from ..mesh.queueing import QueueState, admit, counts_as_service
from ..mesh.replica_state import MAX_ERROR_CHARS, ReplicaEntry, ReplicaState, known_kinds
from ..mesh.restarts import WorkerExit, next_start
from .handed_links import HandedLinks
from .in_flight import InFlight
from .pipe import FramePipe
from .replica_model import ReplicaModel
from .replica_settings import ReplicaSettings
from .submitted import Submitted
from .worker_process import start_worker, terminate
from .worker_run import report_exit, wait_exit

log = logging.getLogger(__name__)


@dataclass
class _Worker:
    process: asyncio.subprocess.Process
    pipe: FramePipe
    links: HandedLinks  # peers' links handed to it, and its reports on their calls
    info: dict[str, Any] = field(default_factory=dict)


class Replica:
    """One replica of one deployment on this node."""

    def __init__(
        self,
        deployment: str,
        app_ref: str,
        *,
        replica_id: str,
        data_dir: Path,
        settings: ReplicaSettings,
        on_change: Callable[[], None] = lambda: None,
        pinned: bool = False,
        model: ReplicaModel | None = None,
    ) -> None:
        self.deployment = deployment
        self.model = model  # from the mesh's stores, pulled here before the worker starts
        self.pinned = pinned  # by `--deploy` on this node (placement never stops it), or by placement
        self.standby = False  # a warm backup: loaded and ready, not routed to until promoted
        self.app_ref = app_ref
        self.replica_id = replica_id
        self.settings = settings
        # Where the worker process is: starting, ready, draining or stopped (``state`` adds standby).
        self._phase = ReplicaState.STARTING
        self.hints: tuple[str, ...] = ()
        self.models: tuple[str, ...] = ()
        self.serves: tuple[str, ...] = ()  # what its app declared (kept while a worker restarts)
        self.rerun_safe = True  # its app's word: a job it ran partly may run again elsewhere
        self.restarts = 0
        # setup() failures in a row (reset when ready): placement moves a replica that keeps failing.
        self.setup_failures = 0
        self.last_error = ""
        self._reported = ""  # the failed start last logged (logged again only when it changes)
        self.speed = SpeedMeter()
        self.batch_sizes: dict[int, int] = {}  # the worker's batches by size, since it started
        self._data_dir = data_dir
        self._on_change = on_change
        self._backoff = Backoff(settings.restart_initial_s, settings.restart_max_s)
        self._worker: _Worker | None = None
        self._ready = asyncio.Event()  # set by the worker's Hello, cleared when it exits
        # Where each request's answers go (a stream's Answers, or a Submitted call), its deadline.
        self._in_flight = InFlight()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def slots(self) -> int:
        """Requests the worker runs at once: its concurrency times its batch size."""
        info = self._worker.info if self._worker else {}
        return max(1, int(info.get("max_concurrency", 1)) * int(info.get("max_batch_size", 1)))

    @property
    def capacity(self) -> int:
        """Requests admitted at once: what the worker runs concurrently plus a bounded queue."""
        info = self._worker.info if self._worker else {}
        app_queue = info.get("max_queue")
        queue = self.settings.queue_size if not isinstance(app_queue, int) else max(0, app_queue)
        return self.slots + queue

    @property
    def state(self) -> ReplicaState:
        """Where this replica is in its life: ``standby`` for a warm backup whose worker is ready."""
        if self._phase is ReplicaState.READY and self.standby:
            return ReplicaState.STANDBY
        return self._phase

    @property
    def serving(self) -> bool:
        """Ready and routed to (not a standby backup)."""
        return self.state.serving

    def set_standby(self, standby: bool) -> None:
        """Make this replica a warm backup (not routed to) or promote it to serving."""
        if standby != self.standby:
            self.standby = standby
            self._on_change()

    def entry(self) -> ReplicaEntry:
        """This replica as the mesh sees it (``NodeMeta.replicas``; read by routing and placement)."""
        return ReplicaEntry(
            state=self.state,
            pinned=self.pinned,
            error=self.last_error[:MAX_ERROR_CHARS],
            setup_failures=self.setup_failures,
            queue=self.in_flight,
            slots=self.slots,
            capacity=self.capacity,
            hints=self.hints,
            models=self.models,
            serves=self.serves,
            rerun_safe=self.rerun_safe,
            progress=self.model.progress() if self.model is not None else 0.0,
        )

    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished: through the agent, and on links handed to the worker."""
        return len(self._in_flight) + (self._worker.links.in_flight if self._worker else 0)

    async def start(self) -> None:
        """Start supervising (returns at once, before the worker is ready)."""
        self._tasks = [
            asyncio.create_task(self._supervise(), name=f"replica-{self.replica_id}"),
            asyncio.create_task(self._watch_hangs(), name=f"replica-hang-{self.replica_id}"),
        ]

    async def call(self, call: Call) -> AsyncGenerator[Envelope, None]:
        """Send one request; yield its chunks and then its Reply or Failure."""
        worker, found = self._admit(call)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + call.timeout_ms / 1000
        answers: Answers[Envelope | None] = Answers()
        timer = self._send(worker, call, answers, deadline)
        done = False
        try:
            while True:
                message = await answers.get()
                if message is None:
                    raise past_deadline(call)
                yield message
                if isinstance(message, Reply | Failure):
                    done = True
                    if isinstance(message, Reply):
                        measured = counts_as_service(found, self.slots)
                        self.speed.record(started, loop.time(), service=measured)
                    return
        finally:
            timer.cancel()
            self._in_flight.forget(call.request_id)
            if not done:
                # The client went away or the deadline passed: stop the work in the worker.
                self._send_quietly(worker, Cancel(call.request_id))

    def submit(
        self, call: Call, on_answer: Callable[[Envelope], None], frame: bytes | None = None
    ) -> Submitted:
        """Send a peer's request that wants only its last answer, to `on_answer` (``submitted.py``).

        `frame` is `call` as the peer encoded it, sent to the worker as it is. The answer is a
        ``Failure``, or the ``Reply`` as the worker encoded it (``Encoded``; ``in_flight.py``)."""
        worker, found = self._admit(call)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + call.timeout_ms / 1000
        rid = call.request_id

        def finish(answer: Envelope | None) -> None:
            timer.cancel()
            self._in_flight.forget(rid)
            if answer is None:  # cancelled, or past its deadline: stop the work in the worker
                self._send_quietly(worker, Cancel(rid))
            elif isinstance(answer, Reply | Encoded):  # Encoded: the worker's Reply, as it wrote it
                self.speed.record(started, loop.time(), service=counts_as_service(found, self.slots))

        submitted = Submitted(call, on_answer, finish)
        timer = self._send(worker, call, submitted, deadline, frame)
        return submitted

    def hand_link(self, stream: SealedStream, max_in_flight: int, chunk_bytes: int) -> None:
        """Give a peer's open link to the worker (NotReady unless serving; OSError: the worker is gone)."""
        if not self.serving or self._worker is None:
            raise NotReady(f"replica of {self.deployment} is {self.state.value}", retry_after_s=1.0)
        limits = {"capacity": self.capacity, "slots": self.slots, "max_in_flight": max_in_flight}
        self._worker.links.hand(stream, **limits, chunk_bytes=chunk_bytes)

    def _admit(self, call: Call) -> tuple[_Worker, int]:
        """The worker for `call` and the requests in flight before it; NotReady, Overloaded or Conflict."""
        if not self.serving or self._worker is None:
            reason = self.last_error or f"replica of {self.deployment} is {self.state.value}"
            raise NotReady(reason, retry_after_s=2.0)
        found = self.in_flight
        queue = QueueState(found, self.slots, self.capacity, self.speed.service_s)
        refusal = admit(queue, call.timeout_ms / 1000)
        if refusal is not None:
            raise Overloaded(refusal.explain(self.deployment, queue), retry_after_s=refusal.retry_after_s)
        if call.request_id in self._in_flight:
            raise Conflict(f"request id {call.request_id!r} is already in flight; send a unique X-Request-Id")
        return self._worker, found

    def _send(
        self, worker: _Worker, call: Call, pending: Sink, deadline: float, frame: bytes | None = None
    ) -> Deadline[Sink]:
        """Send `call` (encoded already: `frame`) to `worker`, its answers to `pending`; its deadline."""
        error = worker.pipe.send(encode_envelope(call) if frame is None else frame)
        if error is not None:
            # The worker vanished between admission and send: it never started, so retryable.
            raise NotReady(f"replica of {self.deployment} is restarting", retry_after_s=1.0) from error
        return self._in_flight.add(call.request_id, pending, deadline)

    async def stop(self) -> None:
        """Drain in-flight requests (bounded), then stop the worker."""
        self._stopping = True
        if self._phase is ReplicaState.READY:
            self._phase = ReplicaState.DRAINING
            self._on_change()
        if self._worker is not None:
            self._worker.links.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.drain_timeout_s
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await self._terminate_worker()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._in_flight.close()
        self._phase = ReplicaState.STOPPED
        self._on_change()

    # -- supervision -----------------------------------------------------------------------

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            self._phase = ReplicaState.LOADING if self.model is not None else ReplicaState.STARTING
            self._ready.clear()
            self._on_change()
            env, exited = await self.model.fetch(self._on_change) if self.model is not None else ({}, None)
            if exited is None:
                self._phase = ReplicaState.STARTING
                self._on_change()
                exited = await self._run_worker(env)
            self._ready.clear()
            self._in_flight.fail_all(f"the replica's worker exited with code {exited.code}")
            if self._stopping:
                return
            step = next_start(
                exited,
                setup_failures=self.setup_failures,
                backoff_s=self._backoff.after_exit(started, loop.time()),
                attempts=self.settings.setup_attempts,
                hold_s=self.settings.failed_hold_s,
            )
            self.restarts += 1
            self.setup_failures += step.setup_failed
            self.last_error = step.error
            if step.held:
                self._phase = ReplicaState.FAILED
            self._on_change()  # gossiped now: requests anywhere stop waiting for this replica
            label, failures = f"{self.deployment} replica {self.replica_id}", self.setup_failures
            self._reported = report_exit(label, exited.code, step, self.restarts, failures, self._reported)
            await asyncio.sleep(step.delay_s)

    async def _run_worker(self, env: dict[str, str]) -> WorkerExit:
        """Start the worker with a link of its own, and wait until it exits."""
        process, pipe, links = await start_worker(
            self.app_ref, self.replica_id, self._data_dir, self._log_path(), self.settings.max_frame_bytes,
            env=env, on_frame=self._on_frame, speed=self.speed, deployment=self.deployment,
        )  # fmt: skip
        self._worker = _Worker(process, pipe, links)
        timeout_s, label = self.settings.setup_timeout_s, f"{self.deployment} replica {self.replica_id}"
        try:
            return await wait_exit(label, process, self._ready, timeout_s, self._log_path())
        finally:
            self._worker = None
            pipe.close()
            links.close()

    def _log_path(self) -> Path:
        return self._data_dir / "logs" / f"{self.deployment}-{self.replica_id}.log"

    def _on_frame(self, frame: bytes | bytearray) -> None:
        if self._in_flight.take_reply(frame):  # a peer's Reply, on its way back as it is
            return
        try:
            message = decode_envelope(frame, max_bytes=self.settings.max_frame_bytes)
        except EnvelopeError as exc:
            log.warning("dropped a bad frame from replica %s: %s", self.replica_id, exc)
            return
        match message:
            case Hello(_, info):
                if self._worker is not None:
                    self._worker.info = info
                self._set_hints(tuple(info.get("hints", ())), tuple(info.get("models", ())))
                self.serves = known_kinds(info.get("serves"))
                self.rerun_safe = info.get("rerun_safe") is not False
                self._phase = ReplicaState.READY if not self._stopping else ReplicaState.DRAINING
                self.last_error = self._reported = ""
                self.setup_failures = 0
                self._ready.set()
                self._on_change()
            case Hints(_, hints, models):
                self._set_hints(hints, models)
            case BatchSizes(_, counts):
                self.batch_sizes = dict(counts)
            case _:
                self._in_flight.answer(message)

    async def _watch_hangs(self) -> None:
        """Kill a worker still busy with a request `hang_grace_s` past its deadline."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.25)
            now = loop.time()
            hung = self._in_flight.hung(now, self.settings.hang_grace_s)
            if self._worker is not None and self._worker.links.hung(now, self.settings.hang_grace_s):
                hung = [*hung, "a call on a peer's link"]
            if hung and self._worker is not None:
                log.warning(
                    "%s replica %s hangs on %s; killing it", self.deployment, self.replica_id, hung[0]
                )
                self.last_error = "the worker hung past a request's deadline and was restarted"
                self._in_flight.forgive()
                with contextlib.suppress(ProcessLookupError):
                    self._worker.process.kill()

    def _set_hints(self, hints: tuple[str, ...], models: tuple[str, ...]) -> None:
        if (hints, models) != (self.hints, self.models):
            self.hints, self.models = hints, models
            self._on_change()

    async def _terminate_worker(self) -> None:
        if self._worker is not None:
            await terminate(self._worker.process)

    def _send_quietly(self, worker: _Worker | None, message: Envelope) -> None:
        if worker is not None:
            worker.pipe.send(encode_envelope(message))  # a worker gone needs no cancel

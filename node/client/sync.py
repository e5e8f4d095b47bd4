"""The Python client: ``from meshnode import MeshClient`` (and ``AsyncMeshClient`` for asyncio).

    with MeshClient.discover(interfaces=["192.168.1.20"]) as mesh:     # or MeshClient(["10.0.0.2:8470"])
        mesh.predict("echo", {"text": "hello"})                        # the JSON answer
        with mesh.stream("stream", {"text": "life"}) as pieces:       # chunks as they arrive
            for piece in pieces:
                print(piece)
        mesh.download("t2i", {"prompt": "a lighthouse"}, path="out.png")
        job = mesh.submit("t2i", {"prompt": "a lighthouse"})         # kept and run by the mesh
        mesh.wait(job.id, on_progress=print)                          # its answer, once it ends

The client keeps a list of the mesh's live nodes (from ``/v1/mesh``, refreshed every
``refresh_interval_s`` on the next request), sends each request to the node that answered last or a
random live one, and fails over to another node when one refuses the connection, drops it before
answering, or is not ready (503). Every method is a plan built in ``base.py``, shared with the
asyncio client; this module only carries plans out (``BlockingDriver``, with ``httpx.Client``).
Errors: ``errors.py`` (``ClientError`` and below). More in docs/client.md.

A ``MeshClient`` may be shared by threads, as its ``httpx.Client`` may; it starts no thread itself
(``discover`` borrows one only when called inside a running event loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar, Unpack

import httpx

from .answers import Result, StreamedAnswer
from .base import (
    DISCOVER_TIMEOUT_S,
    Body,
    CallOptions,
    ClientBase,
    Closing,
    DeploymentSpec,
    FileOptions,
    SavePath,
    discover_seeds,
    save_file,
)
from .exchange import JSON_TYPE, Opened
from .job_plans import ProgressCallback, SubmitOptions
from .job_view import Job, JobList
from .job_watch import JobWatch
from .steps import Action, Close, Finished, Lines, NextLine, Pause, Read, Save, Send, Steps, step

__all__ = ["BlockingDriver", "ChunkStream", "JobEvents", "MeshClient"]

T = TypeVar("T")


class MeshClient(ClientBase["BlockingDriver"], Closing):
    """A blocking client of a meshnode mesh; see the module docstring and docs/client.md."""

    @classmethod
    def discover(
        cls,
        interfaces: Sequence[str] | None = None,
        *,
        mesh_id: str | None = None,
        timeout_s: float = DISCOVER_TIMEOUT_S,
        **options: Any,
    ) -> MeshClient:
        """Find the mesh by mDNS on ``interfaces`` (default: this machine's LAN address) and connect.

        Browses for ``timeout_s`` seconds; ``mesh_id`` picks one mesh where several share the LAN;
        ``options`` go to the constructor. Raises ``NoNodeAvailable`` when no node answered.
        """
        return cls(_run_coroutine(discover_seeds(interfaces, mesh_id, timeout_s)), **options)

    def call(
        self, deployment: str, body: Body = None, *, accept: str = JSON_TYPE, **options: Unpack[CallOptions]
    ) -> Result:
        """Run one request on ``deployment``: its answer (decoded JSON, or bytes) and where it ran."""
        return self._driver.run(self._call(deployment, body, accept, **options))

    def predict(self, deployment: str, body: Body = None, **options: Unpack[CallOptions]) -> Any:
        """Run one request on ``deployment`` and return its JSON answer."""
        return self._driver.run(self._predict(deployment, body, **options))

    def stream(self, deployment: str, body: Body = None, **options: Unpack[CallOptions]) -> ChunkStream:
        """Start a streamed request (``"stream": true``); iterate the result for its chunks."""
        return ChunkStream(self._driver, self._driver.run(self._stream(deployment, body, **options)))

    def download(
        self, deployment: str, body: Body = None, *, path: SavePath = None, **options: Unpack[FileOptions]
    ) -> bytes:
        """A file answer (``accept``, default image/png): its bytes, also saved to ``path`` if given."""
        return self._driver.run(self._download(deployment, body, path, **options))

    def deploy(self, name: str, app: str, **spec: Unpack[DeploymentSpec]) -> dict[str, Any]:
        """Declare (or change) deployment ``name`` running ``app`` mesh-wide; returns its view."""
        return self._driver.run(self._deploy(name, app, spec))

    def undeploy(self, name: str) -> None:
        """Remove deployment ``name`` mesh-wide (``DeploymentNotFound`` if the mesh does not know it)."""
        self._driver.run(self._undeploy(name))

    def deployments(self) -> list[dict[str, Any]]:
        """Every deployment as one node sees it: desired and actual replicas, where, what is missing."""
        return self._driver.run(self._deployments())

    def submit(self, deployment: str, body: Body = None, **options: Unpack[SubmitOptions]) -> Job:
        """Queue a request on ``deployment`` as a job; returns once its copies are stored."""
        return self._driver.run(self._submit(deployment, body, **options))

    def status(self, job_id: str) -> Job:
        """Where the job is: queued (its position), running (its progress), or how it ended."""
        return self._driver.run(self._status(job_id))

    def result(self, job_id: str) -> Any:
        """The job's answer, as ``predict`` returns it (bytes for a file); ``JobNotFinished`` until then."""
        return self._driver.run(self._result(job_id))

    def wait(
        self, job_id: str, timeout: float | None = None, on_progress: ProgressCallback | None = None
    ) -> Any:
        """Wait for the job to end (``on_progress`` hears each status) and return its answer."""
        return self._driver.run(self._wait(job_id, timeout, on_progress))

    def cancel(self, job_id: str) -> Job:
        """Cancel the job (a running one stops, as a predict whose caller left); its status."""
        return self._driver.run(self._cancel(job_id))

    def events(self, job_id: str) -> JobEvents:
        """The job's statuses as they change, until it ends; iterate it (close it to stop early)."""
        return JobEvents(self._driver, self._watch(job_id))

    def jobs(
        self,
        deployment: str | None = None,
        status: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> JobList:
        """A page of the mesh's jobs, newest first, of ``deployment`` and in ``status`` when given.

        The next page: ``jobs(..., cursor=page.next_cursor)``, while ``page.has_more``.
        """
        return self._driver.run(self._jobs(deployment, status, limit, cursor))

    def refresh(self) -> list[str]:
        """Ask the mesh for its live nodes now; returns the nodes known afterwards."""
        return self._driver.run(self._refresh())

    def close(self) -> None:
        """Close the connections to the nodes."""
        self._driver.http.close()

    def _open_driver(self) -> BlockingDriver:
        return BlockingDriver(httpx.Client(**self._http_settings))


class ChunkStream(StreamedAnswer, Closing):
    """The chunks of one streamed answer, in order, as they arrive; also a context manager.

    Iterating raises ``StreamBroken`` where the stream broke off. Close it (or leave its ``with``
    block) to stop early; the node then cancels the work. ``route``, ``request_id`` and ``node`` say
    where it runs.
    """

    def __init__(self, driver: BlockingDriver, opened: Opened) -> None:
        """Stream the ``opened`` answer, reading it with ``driver``."""
        super().__init__(opened, opened.response.iter_lines())
        self._driver = driver

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return self._chunk_or(StopIteration, self._driver.run(self._next_chunk()))

    def close(self) -> None:
        """Stop reading and close the connection."""
        self._opened.response.close()


class JobEvents(Closing):
    """One job's statuses as they change, up to the one it ends with; also a context manager."""

    def __init__(self, driver: BlockingDriver, watch: JobWatch) -> None:
        """Follow the job of ``watch``, reading with ``driver``."""
        self._driver = driver
        self._watch = watch

    def __iter__(self) -> Iterator[Job]:
        return self

    def __next__(self) -> Job:
        job = self._driver.run(self._watch.next_job())
        if job is None:
            raise StopIteration
        return job

    def close(self) -> None:
        """Stop following the job (it goes on running)."""
        self._driver.run(self._watch.close())


class BlockingDriver:
    """Carries out plans with ``httpx.Client``, blocking: all the I/O of ``MeshClient``."""

    def __init__(self, http: httpx.Client) -> None:
        """Send with ``http``."""
        self.http = http

    def run(self, steps: Steps[T]) -> T:
        """Carry out ``steps`` to their end; what they return."""
        reply: object = None
        while not isinstance(action := step(steps, reply), Finished):
            try:
                reply = self._carry_out(action)
            except BaseException as exc:  # the plan decides what a failure means (exchange.py)
                reply = exc
        return action.value

    def _carry_out(self, action: Action) -> object:
        match action:
            case Send(method, url, headers, body, timeout):
                request = self.http.build_request(method, url, headers=headers, json=body, timeout=timeout)
                return self.http.send(request, stream=True)
            case Read(response):
                try:
                    return response.read()
                finally:
                    response.close()
            case Lines(response):
                return response.iter_lines()
            case NextLine(Iterator() as lines):
                return next(lines, None)
            case Close(response):
                response.close()
            case Pause(seconds):
                time.sleep(seconds)
            case Save(path, content):
                save_file(path, content)
            case _:
                raise TypeError(f"a blocking client cannot carry out {action!r}")
        return None


def _run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to the end, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    # Run outside the except block: an error of the coroutine (NoNodeAvailable) would otherwise
    # carry "no running event loop" as its context, a cause that has nothing to do with it.
    if not running:
        return asyncio.run(coroutine)
    # A running loop (a notebook, an async framework) cannot be re-entered: use a loop of our own.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="meshnode-discover") as pool:
        return pool.submit(asyncio.run, coroutine).result()

"""ExternalServer: a predictor that runs someone else's HTTP server and proxies requests to it.

For FedML-style custom-image folders (``config.yaml`` with ``bootstrap`` and ``job``, read by
``external_config.py``): ``setup`` runs the bootstrap once, starts the job (a ``ProcessGroup``) with
``$PORT`` set, and waits, bounded by ``startup_timeout_s``, for its readiness path to answer 2xx.
A failed step raises one line: what failed (``bootstrap timed out after N s``, ``job exited with
code N``) and the command's last output lines. With ``enable_custom_image`` the bootstrap and job run
in one container of the app's image instead (``container.py``), its port published on 127.0.0.1:
readiness, proxying, restarts and logs are the same.
``predict`` POSTs the request as JSON to the predict path; ``async_predict`` streams the answer,
unwrapping Server-Sent Events. The job is kept alive: a watchdog thread restarts it with exponential
backoff when it exits, and a request that finds it dead restarts it at once rather than failing.

Invariants: at most one job per instance; every start and stop happens under ``_lock``; ``close``
stops the job's whole process group and leaves no process behind. The job listens on 127.0.0.1 and
we only speak plain HTTP to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from meshnode.inference import container
from meshnode.inference.external_config import ExternalConfig, load_external_config
from meshnode.inference.predictor import Request
from meshnode.inference.process_group import ProcessGroup
from meshnode.mesh.backoff import RESET_AFTER_S, Backoff

__all__ = ["ExternalServer", "ExternalServerError"]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Readiness probes: frequent enough that a fast server is ready within a tenth of a second.
READY_POLL_S = 0.1
PROBE_TIMEOUT_S = 2.0
# Watchdog restart delays double from min to max; a job that stayed up RESET_S starts over at min
# (the policy is mesh/backoff.py's, shared with the replica supervisor).
RESTART_BACKOFF_MIN_S = 0.5
RESTART_BACKOFF_MAX_S = 30.0
RESTART_BACKOFF_RESET_S = RESET_AFTER_S
# How often the watchdog looks at the job; a request that finds it dead restarts it sooner.
WATCH_POLL_S = 0.2
# Non-JSON answers become files for the node's file-response path. The worker reads a file as soon
# as the answer is sent, so files older than this are garbage and are deleted by the next write.
RESPONSE_FILE_TTL_S = 600.0
# How much of a failed command's output its error carries (the full output is in the worker's log).
LAST_OUTPUT_LINES = 3
LAST_OUTPUT_CHARS = 160
# Plain http to 127.0.0.1 only: loading the CA bundle would cost ~40 ms per client for nothing.
_CLIENT_OPTIONS: dict[str, Any] = {"verify": False, "trust_env": False}


class ExternalServerError(RuntimeError):
    """The job failed to start, died, or answered with an error (then ``status_code`` is set)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ExternalServer:
    """Predictor adapter for an app folder whose ``config.yaml`` starts an HTTP server."""

    def __init__(self, folder: Path | str, data_dir: Path | str) -> None:
        self.folder = Path(folder).resolve()
        self.data_dir = Path(data_dir)
        self.config: ExternalConfig = load_external_config(self.folder)
        self.max_concurrency = self.config.max_concurrency
        self._label = self.folder.name
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._job: ProcessGroup | None = None
        self._url = ""
        self._started_at = 0.0
        self._client: httpx.Client | None = None
        self._watchdog: threading.Thread | None = None
        self._runtime: tuple[str, str] | None = None  # (name, CLI) in a custom image, from setup

    @property
    def pid(self) -> int | None:
        """The running command's pid (its process group id), or None."""
        job = self._job
        return job.pid if job is not None else None

    def setup(self) -> None:
        """Run the bootstrap, start the job and wait until it is ready; raise ExternalServerError."""
        if self._client is not None:
            raise ExternalServerError(f"{self._label}: setup() already ran")
        if self.config.enable_custom_image:
            try:
                self._runtime = container.choose_runtime(self.config.container_runtime)
            except container.ContainerError as exc:
                raise ExternalServerError(f"{self._label}: {exc}") from exc
        elif self.config.bootstrap is not None:
            self._run_bootstrap(self.config.bootstrap)
        with self._lock:
            self._start_job()
        # Created only once the job is up: a failed setup leaves nothing open (the worker then exits).
        self._client = httpx.Client(timeout=self.config.request_timeout_s, **_CLIENT_OPTIONS)
        self._watchdog = threading.Thread(target=self._watch, name=f"watchdog-{self._label}", daemon=True)
        self._watchdog.start()

    def predict(self, request: Request, header: str | None = None) -> Any:
        """POST ``request`` to the job; JSON comes back parsed, text as str, anything else as a file."""
        client = self._client
        if client is None:
            raise ExternalServerError(f"{self._label}: setup() has not run")
        headers = {"Accept": header} if header else {}
        timeout_s = self.config.request_timeout_s

        def send(url: str) -> httpx.Response:
            try:
                return client.post(url, json=request, headers=headers)
            except httpx.TimeoutException as exc:
                raise ExternalServerError(f"{self._label}: no answer within {timeout_s:g} s") from exc

        return self._decode(self._send_restarting(send))

    async def async_predict(self, request: Request) -> AsyncIterator[str]:
        """Stream the job's answer: each SSE ``data:`` payload, or each line of a plain stream."""
        url, job = await asyncio.to_thread(self._ensure_running)
        headers = {"Accept": "text/event-stream"}
        async with httpx.AsyncClient(timeout=self.config.request_timeout_s, **_CLIENT_OPTIONS) as client:
            for attempt in (1, 2):
                try:
                    async with client.stream("POST", url, json=request, headers=headers) as response:
                        if response.is_error:
                            await response.aread()
                            raise self._http_error(response)
                        lines = response.aiter_lines()
                        is_sse = _mime(response) == "text/event-stream"
                        async for piece in _sse_data(lines) if is_sse else _nonempty(lines):
                            yield piece
                    return
                except httpx.ConnectError as exc:
                    # Refused before anything was sent: safe to restart a dead job and try once more.
                    if attempt == 2 or not await asyncio.to_thread(self._dead_or_replaced, job):
                        raise ExternalServerError(f"{self._label}: cannot reach the job: {exc}") from exc
                    url, job = await asyncio.to_thread(self._ensure_running)
                except httpx.HTTPError as exc:
                    raise ExternalServerError(f"{self._label}: stream failed: {_brief(exc)}") from exc

    def close(self) -> None:
        """Stop the job's whole process group and the watchdog; safe to call twice."""
        self._closed.set()
        with self._lock:
            if self._job is not None:
                self._job.stop()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=5.0)
        if self._client is not None:
            self._client.close()

    # -- the job ---------------------------------------------------------------------------------

    def _run_bootstrap(self, command: str) -> None:
        timeout_s = self.config.bootstrap_timeout_s
        with self._lock:
            bootstrap = self._job = self._spawn(command, port=None, role="bootstrap")
        deadline = time.monotonic() + timeout_s
        try:
            while bootstrap.poll() is None:
                if self._closed.is_set():
                    raise ExternalServerError(f"{self._label}: closed during bootstrap")
                if time.monotonic() >= deadline:
                    raise ExternalServerError(
                        f"{self._label}: bootstrap timed out after {timeout_s:g} s; "
                        f"last output: {_last_output(bootstrap.tail())}"
                    )
                self._closed.wait(READY_POLL_S)
        finally:
            with self._lock:
                bootstrap.stop()  # also anything it left running in the background
                self._job = None
        if bootstrap.poll() != 0:
            raise ExternalServerError(
                f"{self._label}: bootstrap exited with code {bootstrap.poll()}; "
                f"last output: {_last_output(bootstrap.tail())}"
            )

    def _start_job(self) -> ProcessGroup:
        """Start the job and wait until it is ready; the caller holds the lock."""
        if self._closed.is_set():
            raise ExternalServerError(f"{self._label}: closed")
        # In a container the job's own port is the config's; the host side is always a free one.
        port = _free_port() if self._runtime is not None or not self.config.port else self.config.port
        job = self._job = self._spawn(self.config.job, port=port, role="job")
        self._url = f"http://{HOST}:{port}{self.config.predict_path}"
        try:
            self._wait_ready(job, f"http://{HOST}:{port}")
        except BaseException:
            job.stop()
            raise
        self._started_at = time.monotonic()
        log.info("%s: job ready on port %d (pid %d)", self._label, port, job.pid)
        return job

    def _wait_ready(self, job: ProcessGroup, base: str) -> None:
        paths = [self.config.readiness_path] if self.config.readiness_path else ["/ready", "/health"]
        timeout_s = self.config.ready_within_s
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=PROBE_TIMEOUT_S, **_CLIENT_OPTIONS) as probe:
            while True:
                if self._closed.is_set():
                    raise ExternalServerError(f"{self._label}: closed while the job was starting")
                if job.poll() is not None:
                    raise ExternalServerError(
                        f"{self._label}: job exited with code {job.poll()} before it was ready; "
                        f"last output: {_last_output(job.tail())}"
                    )
                for path in paths:
                    with contextlib.suppress(httpx.HTTPError):
                        if probe.get(base + path).is_success:
                            return
                if time.monotonic() >= deadline:
                    raise ExternalServerError(
                        f"{self._label}: job not ready at {' or '.join(paths)} after {timeout_s:g} s; "
                        f"last output: {_last_output(job.tail())}"
                    )
                self._closed.wait(READY_POLL_S)

    def _ensure_running(self) -> tuple[str, ProcessGroup]:
        """The predict URL and process of a live job, restarting a dead one first."""
        with self._lock:
            job = self._job
            if job is None or self._closed.is_set():
                raise ExternalServerError(f"{self._label}: not set up, or closed")
            if job.poll() is not None:
                log.warning("%s: job exited with code %s; restarting", self._label, job.poll())
                job.stop()  # children of the dead shell may still hold the port
                job = self._start_job()
            return self._url, job

    def _dead_or_replaced(self, job: ProcessGroup) -> bool:
        """Whether a connection refused by ``job`` is worth one retry: it died or was restarted."""
        with self._lock:
            return self._job is not job or job.poll() is not None

    def _watch(self) -> None:
        backoff = Backoff(RESTART_BACKOFF_MIN_S, RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_RESET_S)
        while not self._closed.wait(WATCH_POLL_S):
            with self._lock:
                job, started_at = self._job, self._started_at
            if job is None or job.poll() is None:
                continue
            delay = backoff.after_exit(started_at, time.monotonic())
            log.warning(
                "%s: job exited with code %s; restart in %g s; last output:\n%s",
                *(self._label, job.poll(), delay, job.tail()),
            )
            if self._closed.wait(delay):
                return
            try:
                self._ensure_running()  # a request may have restarted it already: then nothing to do
            except ExternalServerError as exc:
                if not self._closed.is_set():
                    log.error("%s: restart failed: %s", self._label, exc)

    def _spawn(self, command: str, *, port: int | None, role: str) -> ProcessGroup:
        if self._runtime is not None and port is not None:
            name = container.container_name(os.environ.get("MESHNODE_REPLICA_ID"), self._label, os.getpid())
            run, env = container.run_for(self.config, self.folder, self._runtime, name, port)
            label = f"{self._label} {role} in {run.image}"
            return container.ContainerJob(run, env=container.client_env(os.environ, env), label=label)
        env = {
            **os.environ,
            "PYTHON": sys.executable,
            "HOST": HOST,
            "MESHNODE_DATA_DIR": str(self.data_dir),
            **self.config.environment_variables,
        }
        if port is not None:
            env["PORT"] = str(port)  # last, so that the port we probe is the port it uses
        workdir = self.folder / self.config.workspace
        try:
            return ProcessGroup(command, cwd=workdir, env=env, label=f"{self._label} {role}")
        except OSError as exc:
            raise ExternalServerError(f"{self._label}: cannot start the {role} in {workdir}: {exc}") from exc

    # -- answers ---------------------------------------------------------------------------------

    def _send_restarting(self, send: Callable[[str], httpx.Response]) -> httpx.Response:
        url, job = self._ensure_running()
        try:
            try:
                return send(url)
            except httpx.ConnectError as exc:
                # Refused before anything was sent: safe to restart a dead job and try once more.
                if not self._dead_or_replaced(job):
                    raise ExternalServerError(f"{self._label}: cannot reach the job: {exc}") from exc
            return send(self._ensure_running()[0])
        except httpx.HTTPError as exc:
            raise ExternalServerError(f"{self._label}: request failed: {_brief(exc)}") from exc

    def _decode(self, response: httpx.Response) -> Any:
        if response.is_error:
            raise self._http_error(response)
        mime = _mime(response)
        if mime == "application/json" or mime.endswith("+json") or (not mime and _looks_json(response)):
            try:
                return response.json()
            except ValueError as exc:
                raise ExternalServerError(f"{self._label}: the job sent invalid JSON: {exc}") from exc
        if mime.startswith("text/"):
            return response.text
        return self._save_file(response.content, mime)

    def _save_file(self, content: bytes, mime: str) -> Path:
        folder = self.data_dir / "external" / "responses"
        folder.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - RESPONSE_FILE_TTL_S
        for old in folder.iterdir():
            with contextlib.suppress(OSError):  # another replica may be pruning the same folder
                if old.stat().st_mtime < cutoff:
                    old.unlink()
        suffix = (mimetypes.guess_extension(mime) if mime else None) or ".bin"
        path = folder / f"{uuid.uuid4().hex}{suffix}"
        partial = path.with_name(path.name + ".part")
        partial.write_bytes(content)
        partial.rename(path)  # a reader never sees half a file
        return path

    def _http_error(self, response: httpx.Response) -> ExternalServerError:
        body = response.text[-500:].strip()
        return ExternalServerError(
            f"{self._label}: the job answered {response.status_code}: {body}",
            status_code=response.status_code,
        )


async def _sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each Server-Sent Event; an event's several data lines join with newlines."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


async def _nonempty(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    async for line in lines:
        if line:
            yield line


def _mime(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def _looks_json(response: httpx.Response) -> bool:
    return response.content.lstrip()[:1] in (b"{", b"[", b'"')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _last_output(tail: str) -> str:
    """A command's last output lines on one line, the end kept when long.

    A failed start is reported as one line (the worker's last log line, gossiped and shown in the
    503 of every request): its cause comes first, then what the command printed last.
    """
    lines = [line.strip() for line in tail.splitlines() if line.strip()][-LAST_OUTPUT_LINES:]
    text = " | ".join(lines)
    return text if len(text) <= LAST_OUTPUT_CHARS else "..." + text[-(LAST_OUTPUT_CHARS - 3) :]


def _brief(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

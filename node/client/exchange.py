"""One request's way through the mesh, as a plan of the steps in ``steps.py``.

``Planner`` makes the decisions, without I/O: which node, fail over, retry, give up. Its plans yield
``Send``, ``Read`` and ``Pause``, which a face (``sync.py``, ``aio.py``) carries out.

The plan of one request, ``Planner.exchange(request)``, returns the ``Opened`` answer (status below
400, body unread) for the caller's plan to read or stream. Calls that are not a predict (deployments,
jobs: a ``Call``) go through ``Planner.request``: the first node that answers takes it.

Rules (the forwarder's, ``node/dataplane/forward.py``, applied between the client and the nodes):

- A node that refuses the connection, drops it before any byte of the answer, or answers 503 (not
  ready, loading) is marked down for a while and the request goes to the next node at once, within
  the same deadline. That is a failover, not a retry: the request never ran to an answer there.
- An answer that has started is never sent again (``answers.py`` raises ``StreamBroken`` if it breaks).
- 429 (every replica saturated: routing already looked at the whole mesh) and a round in which every
  node failed are retried only ``retries`` times, after Retry-After (1 s without one), and only if
  that wait ends before the deadline; otherwise the error is raised.
- The deadline covers everything (refresh, failovers, pauses, the answer itself). The node is told
  the time left (``X-Request-Timeout``), so it answers 504 at the deadline; the client waits
  ``deadline_grace_s`` longer for that answer before giving up with ``RequestTimeout``.
- A node whose TLS handshake fails is failed over like one that refused the connection; a round in
  which every node failed that way raises ``TLSError`` at once (``tls.py``): no wait fixes a
  certificate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from .errors import (
    ClientError,
    NoNodeAvailable,
    RequestFailed,
    RequestTimeout,
    TLSError,
    error_from_answer,
)
from .nodes import NodeList
from .steps import Pause, Read, Send, Steps
from .tls import describe_failure, tls_failure

__all__ = [
    "JSON_TYPE",
    "MAX_TIMEOUT_S",
    "Call",
    "ClientOptions",
    "Opened",
    "Planner",
    "PredictRequest",
]

# The most a node accepts in X-Request-Timeout (node/http/predict.py).
MAX_TIMEOUT_S = 3600.0
# A Retry-After the node did not send: its own default for "not ready" is one second.
DEFAULT_RETRY_AFTER_S = 1.0
JSON_TYPE = "application/json"


@dataclass(frozen=True)
class ClientOptions:
    """Every knob of the client, with why its default is what it is."""

    # Seconds one request may take in all: refresh, failovers, retries and the answer. Sent to the
    # node (X-Request-Timeout) so it gives up at the same moment; the node's own default is 60 s.
    timeout_s: float = 60.0
    # How many times a 429 or a round of unreachable nodes is waited out (Retry-After) and sent again.
    # 0: back-pressure reaches the caller at once and the caller decides; failover to another node
    # after a refused connection or a 503 needs no retries and always happens.
    retries: int = 0
    # How often the node list is refreshed from /v1/mesh: one small GET on the next request after
    # this many seconds (and after any node failed). Membership changes take seconds to settle.
    refresh_interval_s: float = 10.0
    # How long a node that did not answer is tried last. Long enough not to knock at a dead node on
    # every request, short enough that a restarted node is used again soon.
    node_down_s: float = 10.0
    # Connecting to a node on a LAN takes milliseconds; this bounds a black-holed address so the
    # request still has time for the next node.
    connect_timeout_s: float = 2.0
    # A node answers /v1/mesh from memory; a node that takes longer is skipped for the refresh.
    mesh_timeout_s: float = 2.0
    # How long past the deadline the client waits for the node's own 504, which says more than a
    # client-side timeout does.
    deadline_grace_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise ValueError(f"timeout must be in (0, {MAX_TIMEOUT_S:g}] seconds, not {self.timeout_s!r}")
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, not {self.retries!r}")
        for name in ("refresh_interval_s", "node_down_s", "connect_timeout_s", "mesh_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if not self.deadline_grace_s >= 0:
            raise ValueError("deadline_grace_s must be 0 or more")


@dataclass(frozen=True)
class PredictRequest:
    """One ``POST /v1/predict/{deployment}`` as the caller asked for it."""

    deployment: str
    body: Mapping[str, Any]
    accept: str
    timeout_s: float
    hint: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Call:
    """One request that is not a predict (deployments, jobs), for the first node that takes it."""

    method: str
    # The path with its query, e.g. "/v1/jobs?limit=10".
    path: str
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Hand the answer back once its headers are in, its body unread, for the caller to stream.
    stream: bool = False
    # Seconds a streamed answer may stay silent before reading it fails (None: until the deadline).
    read_timeout_s: float | None = None
    # Error classes by status, over the usual ones (``errors.py``): a job's 404 is ``JobNotFound``.
    errors: Mapping[int, type[RequestFailed]] = field(default_factory=dict)
    # Hand an error answer back as it came (read), a 503 too: the caller knows what it means.
    keep_errors: bool = False


@dataclass(frozen=True)
class Opened:
    """An answer whose headers said success; its body is still to be read or streamed."""

    response: httpx.Response
    node: str


class Planner:
    """Chooses nodes and decides about failures for every request of one client."""

    def __init__(self, nodes: NodeList, options: ClientOptions, clock: Callable[[], float]) -> None:
        """Plan over ``nodes`` with ``options``; ``clock`` is a monotonic clock in seconds."""
        self.nodes = nodes
        self.options = options
        self._clock = clock

    def exchange(self, request: PredictRequest) -> Steps[Opened]:
        """Send ``request`` to a live node, failing over and retrying by the rules above."""
        deadline = self._clock() + request.timeout_s
        yield from self.refresh(deadline, only_if_stale=True)
        retries_left = self.options.retries
        while True:
            outcome = yield from self._round(request, deadline)
            if isinstance(outcome, Opened):
                return outcome
            pause_s = DEFAULT_RETRY_AFTER_S if outcome.retry_after_s is None else outcome.retry_after_s
            if retries_left <= 0 or self._clock() + pause_s >= deadline:
                raise outcome
            retries_left -= 1
            yield Pause(pause_s)

    def refresh(self, deadline: float, *, only_if_stale: bool = False) -> Steps[None]:
        """Learn the live nodes from the first node that answers ``GET /v1/mesh`` before ``deadline``."""
        if only_if_stale and not self.nodes.stale(self._clock(), self.options.refresh_interval_s):
            return
        for node in self.nodes.order(self._clock()):
            wait_s = min(self.options.mesh_timeout_s, deadline - self._clock())
            if wait_s <= 0:
                break
            try:
                response = yield Send(
                    "GET", f"{node}/v1/mesh", {"Accept": JSON_TYPE}, None, _timeout(wait_s, 0)
                )
                content = yield Read(response)
            except httpx.RequestError:
                self.unreachable(node)
                continue
            if response.status_code == 200 and self.nodes.learn(_json_or_none(content), node, self._clock()):
                return
        # Nobody gave a view: go on with the nodes known; a failing request asks again sooner.
        self.nodes.postpone_refresh(self._clock())

    def control(self, method: str, path: str, body: Mapping[str, Any] | None, deadline: float) -> Steps[Any]:
        """A deployments call (``/v1/deployments``) on the first node that takes it: its JSON body."""
        _, content = yield from self.request(Call(method, path, body), deadline)
        return _json_or_none(content)

    def request(self, call: Call, deadline: float) -> Steps[tuple[Opened, bytes]]:
        """``call`` on the first node that takes it: the answer (status below 400) and its body.

        A node that is unreachable or not ready (503) passes the call to the next one; any other
        error answer is raised (a 422 says which field of a spec is wrong), or with
        ``call.keep_errors`` returned like a success. With ``call.stream`` the body is left unread
        (``b""``) for the caller to stream.
        """
        failures: list[str] = []
        last_failure: httpx.RequestError | None = None
        tls_failures = 0
        headers = {"Accept": JSON_TYPE, **call.headers}
        for node in self.nodes.order(self._clock()):
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            connect_s = min(self.options.connect_timeout_s, remaining)
            read_s = remaining if call.read_timeout_s is None else min(call.read_timeout_s, remaining)
            timeout = httpx.Timeout(remaining, connect=connect_s, read=read_s)
            try:
                response = yield Send(call.method, f"{node}{call.path}", headers, call.body, timeout)
                if call.stream and response.status_code < 400:
                    self.nodes.mark_good(node)
                    return Opened(response, node), b""
                content = yield Read(response)
            except httpx.RequestError as exc:
                last_failure = self._failed(node, exc, failures)
                tls_failures += tls_failure(exc) is not None
                continue
            if response.status_code >= 400 and not call.keep_errors:
                error = error_from_answer(
                    response.status_code, response.headers, content, node, classes=call.errors
                )
                if error.status != 503:
                    raise error
                failures.append(f"{node} (503: {error.message})")
                self.nodes.mark_down(node, self._clock(), self.options.node_down_s)
                continue
            self.nodes.mark_good(node)
            return Opened(response, node), content
        _raise_if_only_tls(failures, tls_failures, last_failure)
        raise NoNodeAvailable(
            f"no node took {call.method} {call.path}: {', '.join(failures) or 'none known'}"
        ) from last_failure

    def _round(self, request: PredictRequest, deadline: float) -> Steps[Opened | ClientError]:
        """Try each node once; the answer, or the retryable error that ended the round."""
        failures: list[str] = []
        last_failure: httpx.RequestError | None = None
        not_ready: RequestFailed | None = None
        tls_failures = 0
        url_path = f"/v1/predict/{request.deployment}"
        for node in self.nodes.order(self._clock()):
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise RequestTimeout(_timed_out(request, failures)) from last_failure
            headers = _headers(request, remaining)
            timeout = _timeout(remaining, self.options.deadline_grace_s, self.options.connect_timeout_s)
            try:
                response = yield Send("POST", node + url_path, headers, dict(request.body), timeout)
                if response.status_code < 400:
                    self.nodes.mark_good(node)
                    return Opened(response, node)
                content = yield Read(response)
            except httpx.RequestError as exc:
                # No byte of an answer arrived: the request may go to another node.
                last_failure = self._failed(node, exc, failures)
                tls_failures += tls_failure(exc) is not None
                continue
            error = error_from_answer(response.status_code, response.headers, content, node)
            if error.status != 503:
                if error.retryable:
                    return error
                raise error
            # Not ready here (joining, or the replica is loading): another node may serve it now.
            wait_s = min(error.retry_after_s or DEFAULT_RETRY_AFTER_S, self.options.node_down_s)
            self.nodes.mark_down(node, self._clock(), wait_s)
            not_ready = error
        if self._clock() >= deadline:
            raise RequestTimeout(_timed_out(request, failures)) from last_failure
        if not_ready is not None:
            return not_ready
        _raise_if_only_tls(failures, tls_failures, last_failure)
        unreachable = NoNodeAvailable(f"no node answered: {', '.join(failures) or 'none known'}")
        unreachable.__cause__ = last_failure
        return unreachable

    def _failed(self, node: str, exc: httpx.RequestError, failures: list[str]) -> httpx.RequestError:
        """`node` did not answer: note why, try it last for a while; the error, for chaining."""
        failures.append(f"{node} ({describe_failure(exc, node)})")
        self.unreachable(node)
        return exc

    def unreachable(self, node: str) -> None:
        """`node` did not answer: try it last for a while, and ask the mesh for its nodes again."""
        self.nodes.mark_down(node, self._clock(), self.options.node_down_s)
        self.nodes.invalidate()


def _headers(request: PredictRequest, remaining_s: float) -> dict[str, str]:
    # Milliseconds are the finest the node uses; never send 0, which it refuses.
    left_s = max(0.001, min(remaining_s, MAX_TIMEOUT_S))
    headers = {"Accept": request.accept, "X-Request-Timeout": f"{math.ceil(left_s * 1000) / 1000:g}"}
    if request.hint:
        headers["X-Mesh-Hint"] = request.hint
    if request.request_id:
        headers["X-Request-Id"] = request.request_id
    return headers


def _timeout(remaining_s: float, grace_s: float, connect_s: float | None = None) -> httpx.Timeout:
    wait_s = remaining_s + grace_s
    return httpx.Timeout(wait_s, connect=wait_s if connect_s is None else min(connect_s, wait_s))


def _timed_out(request: PredictRequest, failures: list[str]) -> str:
    detail = f" (failed: {', '.join(failures)})" if failures else ""
    return f"no answer from the mesh within {request.timeout_s:g} s{detail}"


def _raise_if_only_tls(failures: list[str], tls_failures: int, last: httpx.RequestError | None) -> None:
    """TLSError when every failure of a round was a TLS handshake (not retried: see the docstring)."""
    if failures and tls_failures == len(failures):
        raise TLSError(f"no node could be reached over TLS: {', '.join(failures)}") from last


def _json_or_none(content: bytes) -> object:
    try:
        return json.loads(content)
    except ValueError:
        return None

"""The agent's HTTP server: the FastAPI app and the predict lane, on uvicorn in the agent's own loop.

The socket is bound first (``bind_http``), before the node builds anything else, so its address is
known when the node's metadata is; uvicorn then serves on that socket, with TLS when the node has a
certificate (``tls_context``: loaded and checked before the node joins, so a wrong file stops the
start with one line saying which file and why).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import uvicorn
from prometheus_client.registry import Collector

from ..addresses import listen_tcp
from ..errors import ConfigError
from ..serving.jobs import JobService
from .app import MeshView, create_app
from .corked import CorkedHttpToolsProtocol
from .dashboard import add_dashboard_routes
from .deployments import DeploymentsView, add_deployment_routes
from .events import EventFeed, add_event_routes
from .gate import Gate
from .jobs import add_job_routes
from .keyring import RotationView, add_keyring_routes
from .keys import KeysView, add_key_routes
from .metrics import add_metrics_route
from .model_pulls import ModelPullsView, add_model_pull_routes
from .model_store import ModelStoreView, add_model_store_routes
from .openai.edge import Edge
from .openai.image_store import ImageStore
from .openai.models import Catalog, Members
from .openai.routes import add_openai_routes
from .predict import PredictLane, PredictLimits, Serve
from .request_metrics import RequestMeter
from .route_metrics import RouteMeter
from .wellknown import add_wellknown_routes
from .ws import add_ws_routes, max_message_bytes

__all__ = ["bind_http", "http_server", "serve_http", "tls_context"]

# uvicorn's default backlog: connections the kernel queues before the agent accepts them.
_BACKLOG = 2048


def bind_http(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); ConfigError naming --http when it cannot be had."""
    return listen_tcp(host, port, "--http", backlog=_BACKLOG)


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """HTTPS from a PEM certificate (chain) and its key, None for plain HTTP; ConfigError: which file."""
    if cert is None or key is None:
        return None
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{flag} {path}: cannot read it: {exc.strerror or exc}") from exc
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # uvicorn's h11 protocol speaks HTTP/1.1 only; saying so lets HTTP/2 clients settle at once.
    context.set_alpn_protocols(["http/1.1"])
    try:
        # A passphrase would be asked on the terminal by OpenSSL, hanging an unattended agent.
        context.load_cert_chain(cert, key, password=_no_passphrase(key))
    except ssl.SSLError as exc:
        raise ConfigError(_tls_problem(cert, key, exc)) from exc
    return context


def http_server(
    *,
    node: MeshView,
    deployments: DeploymentsView,
    stats: Callable[[], dict[str, Any]],
    serve: Serve,
    limits: PredictLimits,
    keys: KeysView,
    rotation: RotationView,
    members: Members,
    mesh_id: str,
    images: ImageStore | None = None,
    jobs: JobService | None = None,
    events: EventFeed | None = None,
    meter: RequestMeter | None = None,
    insecure: bool = False,
    tls: ssl.SSLContext | None = None,
    models: ModelStoreView | None = None,
    pulls: ModelPullsView | None = None,
    collectors: Sequence[Collector] = (),
) -> uvicorn.Server:
    """uvicorn serving every route of this node (HTTPS with ``tls``), not started yet.

    The OpenAI routes read the gossiped `members` and the `deployments` to find a request's
    deployment, name the mesh (`mesh_id`) as their models' owner, and keep ``url`` images in `images`.
    """
    app = create_app(node, members)  # /v1/mesh from JSON kept per member (mesh_render.py)
    if meter is None:
        meter = RequestMeter(lambda name: deployments.record(name) is not None)  # bounded labels
    add_deployment_routes(app, deployments)
    if models is not None:  # before the OpenAI routes, whose /v1/models/{model} would take it
        add_model_store_routes(app, models)
    if pulls is not None:  # likewise
        add_model_pull_routes(app, pulls)
    add_openai_routes(app, Edge(serve, limits, Catalog(members, deployments, mesh_id)), images)
    if jobs is not None:
        add_job_routes(
            app,
            jobs,
            max_body_bytes=jobs.limits.max_body_bytes,
            default_timeout_s=limits.default_timeout_s,
            keepalive_s=limits.keepalive_s,
        )
    add_key_routes(app, keys)
    add_keyring_routes(app, rotation)
    add_ws_routes(app, serve, limits, meter)
    add_wellknown_routes(app, rotation)  # the JWKS, from the ring the rotation holds now
    if events is not None:  # the dashboard and the feed it draws from
        add_event_routes(app, events)
        add_dashboard_routes(app)
    # Outermost: no route, the predict lane's included, is reached without passing the gate.
    routes = RouteMeter(app, deployments=meter)  # every other route, by its template
    gate = Gate(PredictLane(routes, serve, limits, meter), keys.key, insecure=insecure)
    add_metrics_route(
        app, lambda: {**stats(), "http_refused": dict(gate.refused)}, meter, members, routes, collectors
    )
    # No proxy-header rewriting: the agent is not behind a proxy it trusts, and it is one less layer.
    # With TLS: the context checked at start (tls_context), not one uvicorn would build from the
    # files again. ssl_context_factory is uvicorn 0.47's; plain HTTP does not need it.
    https: dict[str, Any] = {} if tls is None else {"ssl_context_factory": lambda _config, _default: tls}
    config = uvicorn.Config(
        gate,
        log_level="warning",
        # uvicorn's own lines go through the agent's handler (--log-format json), not a text one of its own.
        log_config=None,
        access_log=False,
        lifespan="off",
        proxy_headers=False,
        # A response's header and body leave in one send, not two (corked.py).
        http=CorkedHttpToolsProtocol,
        # WebSocket (GET /v1/ws/predict) on the websockets package's sans-I/O protocol; a message
        # over this is refused unread (1009), one between it and the request limit gets an error event.
        ws="websockets-sansio",
        ws_max_size=max_message_bytes(limits.max_request_bytes),
        **https,
    )
    return _QuietServer(config)


async def serve_http(server: uvicorn.Server, sock: socket.socket) -> asyncio.Task[None]:
    """Start `server` on the bound `sock`; return its task once it accepts connections."""
    # The first synchronous route (``/metrics``) would import anyio's backend and start its thread
    # pool on the loop, tens of milliseconds (more on a busy machine): done here, at start-up.
    await anyio.to_thread.run_sync(lambda: None)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    while not server.started:
        if task.done():
            raise ConfigError(f"cannot start the HTTP server on {sock.getsockname()}")
        await asyncio.sleep(0.01)
    return task


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the agent owns SIGINT/SIGTERM (graceful leave)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _no_passphrase(key: Path) -> Callable[[], bytes]:
    def refuse() -> bytes:
        raise ConfigError(
            f"--tls-key {key} is protected by a passphrase; give the agent an unencrypted copy, "
            f"readable only by its user (openssl pkey -in {key} -out key.pem)"
        )

    return refuse


def _tls_problem(cert: Path, key: Path, exc: ssl.SSLError) -> str:
    """Which of the two files is wrong, from OpenSSL's terse reason."""
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"--tls-key {key} is not the private key of the certificate in --tls-cert {cert}"
    detail = f" ({exc.reason})" if exc.reason else ""
    try:
        ssl.create_default_context().load_verify_locations(cafile=cert)
    except ssl.SSLError:
        return f"--tls-cert {cert} holds no PEM certificate{detail}"
    return f"--tls-key {key} holds no PEM private key{detail}"

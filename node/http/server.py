"""The agent's HTTP server: the FastAPI app and the predict lane, on uvicorn in the agent's own loop.

The socket is bound first (``bind_http``), before the node builds anything else, so its address is
known when the node's metadata is; uvicorn then serves on that socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from ..errors import ConfigError
from .app import MeshView, create_app
from .deployments import DeploymentsView, add_deployment_routes
from .metrics import add_metrics_route
from .predict import PredictLane, PredictLimits, Serve

__all__ = ["bind_http", "http_server", "serve_http"]


def bind_http(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on (host, port); ConfigError when the address is taken."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot start the HTTP server on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot start the HTTP server on port {port} (in use?): {exc}") from exc
    sock.set_inheritable(True)
    return sock


def http_server(
    *,
    node: MeshView,
    deployments: DeploymentsView,
    stats: Callable[[], dict[str, Any]],
    serve: Serve,
    limits: PredictLimits,
) -> uvicorn.Server:
    """uvicorn serving every route of this node, not started yet."""
    app = create_app(node)
    add_deployment_routes(app, deployments)
    add_metrics_route(app, stats)
    lane = PredictLane(app, serve, limits)
    # No proxy-header rewriting: the agent is not behind a proxy it trusts, and it is one less layer.
    config = uvicorn.Config(lane, log_level="warning", access_log=False, lifespan="off", proxy_headers=False)
    return _QuietServer(config)


async def serve_http(server: uvicorn.Server, sock: socket.socket) -> asyncio.Task[None]:
    """Start `server` on the bound `sock`; return its task once it accepts connections."""
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

"""The agent's HTTP server: the FastAPI app and the predict lane, on uvicorn in the agent's own loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from ..errors import ConfigError
from .app import create_app
from .deployments import add_deployment_routes
from .metrics import add_metrics_route
from .predict import PredictLane

if TYPE_CHECKING:
    from ..agent import Agent

__all__ = ["http_server", "wait_http_started"]


def http_server(agent: Agent, host: str, port: int) -> uvicorn.Server:
    """uvicorn serving every route of `agent`, not started yet."""
    app = create_app(agent)
    add_deployment_routes(app, agent)
    add_metrics_route(app, agent.stats)
    lane = PredictLane(app, agent)
    # No proxy-header rewriting: the agent is not behind a proxy it trusts, and it is one less layer.
    config = uvicorn.Config(
        lane, host=host, port=port, log_level="warning", access_log=False, lifespan="off", proxy_headers=False
    )
    return _QuietServer(config)


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the agent owns SIGINT/SIGTERM (graceful leave)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def wait_http_started(server: uvicorn.Server, task: asyncio.Task[None]) -> int:
    """Wait for uvicorn to bind; return its port or raise ConfigError if it could not."""
    while not server.started:
        if task.done():
            raise ConfigError(f"cannot start the HTTP server on port {server.config.port} (in use?)")
        await asyncio.sleep(0.01)
    sockets = [sock for srv in server.servers for sock in (srv.sockets or ())]
    return int(sockets[0].getsockname()[1]) if sockets else server.config.port

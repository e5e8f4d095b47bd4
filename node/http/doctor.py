"""What ``meshnode doctor`` asks a node beyond its view: ``GET /v1/doctor`` and ``/v1/doctor/dial/{node}``.

- ``GET /v1/doctor``: the facts a diagnosis compares between nodes and that no other route shows:
  the mesh id (gossip of another mesh id does not open, so a doctor seals its probes with it), the
  node's wall clock (``time_ms``, to measure clocks apart against ``max_clock_offset_s``), how
  long it has served (``uptime_s``, to make its counters rates), whether it announces itself by
  mDNS and on which interfaces, and its seeds. Never the token, nor anything
  derived from it beyond the key fingerprints ``/v1/mesh`` already lists.
- ``GET /v1/doctor/dial/{node}``: the node opens one TCP connection to the mesh and one to the data
  address that member advertises, and says how each went (``ok``, ``refused``, ``timeout``,
  ``unreachable``, ``error``). Asked of a peer about this node, it tests the direction that cannot
  be tested from here: whether packets from there reach this node's ports. Only addresses of
  members in the node's own view are dialed, each at most ``DIAL_TIMEOUT_S``, and nothing is sent
  on the connection, so the route cannot be used to scan other hosts or ports.

Both sit behind the gate as every ``/v1`` route does (an ``invoke`` key from another machine).
"""

from __future__ import annotations

import asyncio
import errno
import time
from typing import Any, Literal, Protocol

from fastapi import FastAPI
from pydantic import BaseModel

from ..addresses import advertise_host, parse_host_port
from ..config import AgentConfig
from ..errors import ConfigError, NotFound

__all__ = ["DIAL_TIMEOUT_S", "Dial", "DoctorFacts", "add_doctor_routes", "dial", "dial_outcome"]

# A LAN answers a connection in a millisecond and a continent in a few hundred; past two seconds a
# SYN is being dropped, and the doctor waits on every dial at once, so this bounds its run too.
DIAL_TIMEOUT_S = 2.0

Outcome = Literal["ok", "refused", "timeout", "unreachable", "error"]
_UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EHOSTDOWN})


class Dial(BaseModel):
    """One TCP connection tried: to which address, how it went, and the system's words for it."""

    addr: str
    outcome: Outcome
    detail: str


class DialResponse(BaseModel):
    """The ``GET /v1/doctor/dial/{node}`` body."""

    node: str
    name: str
    mesh: Dial
    data: Dial


class DoctorResponse(BaseModel):
    """The ``GET /v1/doctor`` body."""

    node: str
    mesh_id: str
    time_ms: int
    uptime_s: float
    max_clock_offset_s: float
    mdns: bool
    mdns_interfaces: list[str]
    seeds: list[str]


class DoctorFacts(Protocol):
    """What the routes read of the agent: its id, its view and its configuration."""

    @property
    def node_id(self) -> str:
        """This node's id."""
        ...

    @property
    def config(self) -> AgentConfig:
        """The configuration the agent runs with."""
        ...

    def mesh_view(self) -> dict[str, Any]:
        """The ``GET /v1/mesh`` body."""
        ...


def dial_outcome(exc: BaseException | None) -> tuple[Outcome, str]:
    """How a connection attempt went, from the exception it raised (None: it connected)."""
    match exc:
        case None:
            return "ok", "connected"
        case TimeoutError():
            return "timeout", f"no answer within {DIAL_TIMEOUT_S:g} s (packets dropped on the way)"
        case ConnectionRefusedError():
            return "refused", "connection refused (nothing listens there, or a firewall rejects it)"
        case OSError(errno=code) if code in _UNREACHABLE:
            return "unreachable", f"{exc.strerror or exc} (no route to that address from here)"
        case OSError():
            return "error", str(exc.strerror or exc)
    return "error", str(exc)


async def dial(addr: str, timeout_s: float = DIAL_TIMEOUT_S) -> Dial:
    """Open one TCP connection to `addr` ("host:port") and close it; how it went."""
    try:
        host, port = parse_host_port(addr)
    except ConfigError as exc:
        return Dial(addr=addr, outcome="error", detail=exc.message)
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except (TimeoutError, OSError) as exc:
        outcome, detail = dial_outcome(exc)
        return Dial(addr=addr, outcome=outcome, detail=detail)
    writer.close()
    return Dial(addr=addr, outcome="ok", detail="connected")


def add_doctor_routes(app: FastAPI, agent: object) -> None:
    """Add the doctor's routes for an agent that has a configuration (test fakes have none)."""
    if not isinstance(getattr(agent, "config", None), AgentConfig):
        return
    facts: DoctorFacts = agent  # type: ignore[assignment]  # checked just above
    started = time.monotonic()  # the app is built as the agent starts

    @app.get("/v1/doctor", response_model=DoctorResponse)
    async def doctor() -> dict[str, Any]:
        """What ``meshnode doctor`` compares between nodes: mesh id, wall clock, mDNS, seeds."""
        config = facts.config
        return {
            "node": facts.node_id,
            "mesh_id": config.mesh_id,
            "time_ms": int(time.time() * 1000),
            "uptime_s": round(time.monotonic() - started, 3),
            "max_clock_offset_s": config.membership().max_clock_offset_s,
            "mdns": config.mdns,
            # As the agent announces (agent_sockets.py): the --interface addresses, else the mesh host.
            "mdns_interfaces": list(config.interfaces or (advertise_host(config.mesh_host, ()),)),
            "seeds": list(config.seeds),
        }

    @app.get("/v1/doctor/dial/{node}", response_model=DialResponse)
    async def dial_member(node: str) -> dict[str, Any]:
        """Open a TCP connection to the mesh and data addresses member `node` advertises."""
        member = next((m for m in facts.mesh_view()["members"] if m["id"] == node), None)
        if member is None or member["id"] == facts.node_id:
            raise NotFound(f"no member {node!r} other than this node in its view")
        mesh, data = await asyncio.gather(dial(member["mesh"]), dial(member["data"]))
        return {"node": node, "name": member["name"], "mesh": mesh, "data": data}

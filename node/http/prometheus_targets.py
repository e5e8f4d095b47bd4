"""``GET /v1/prometheus/targets``: every live node's ``/metrics``, in Prometheus' HTTP service discovery.

One ``http_sd_configs`` entry pointed at any node finds the whole mesh (docs/observability.md).
The answer is Prometheus' format, a list of target groups ``[{"targets": ["host:port"], "labels":
{...}}]``, one group per node so each carries its own labels: ``node`` (its name), ``node_id``,
``region``, ``zone``, and ``__scheme__`` (``https`` for a node serving TLS), which Prometheus uses
for that target's scrapes.

Alive and suspected members are listed (a suspect may well answer; if not, its ``up`` says so);
dead and departed ones are not, so a dead node's series end instead of failing forever. The route
sits behind the same gate as ``/metrics``: open from loopback, an ``invoke`` key otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from ..mesh.member import Member
from ..mesh.types import Status
from .openai.models import Members

__all__ = ["TARGETS_PATH", "TargetGroup", "add_targets_route", "targets"]

TARGETS_PATH = "/v1/prometheus/targets"
_LISTED = (Status.ALIVE, Status.SUSPECT)


class TargetGroup(BaseModel):
    """One entry of Prometheus' HTTP service discovery: a node's address and its labels."""

    targets: list[str]
    labels: dict[str, str]


def targets(members: Iterable[Member]) -> list[dict[str, Any]]:
    """The HTTP SD target groups of every live member with an HTTP address, sorted by name."""
    groups: list[tuple[tuple[str, str], dict[str, Any]]] = []
    for member in members:
        meta = member.meta
        if member.status not in _LISTED or not meta.http:
            continue
        labels = {
            "node": meta.name,
            "node_id": member.node,
            "region": meta.region,
            "zone": meta.zone,
            "__scheme__": "https" if meta.tls else "http",
        }
        groups.append(((meta.name, member.node), {"targets": [meta.http], "labels": labels}))
    groups.sort(key=lambda keyed: keyed[0])
    return [group for _, group in groups]


def add_targets_route(app: FastAPI, members: Members) -> None:
    """Serve ``GET /v1/prometheus/targets`` from the gossiped `members`."""

    @app.get(TARGETS_PATH, response_model=list[TargetGroup])
    async def prometheus_targets() -> list[dict[str, Any]]:
        """Prometheus HTTP service discovery: one target group per live node of the mesh."""
        return targets(members.members())

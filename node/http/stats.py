"""The counters ``GET /metrics`` (``metrics.py``) and the tests read, gathered from the parts.

One dict per scrape: packets, bytes and drops by reason of gossip and the data plane, members by
status, routing outcomes and deployments. Read only; the parts own their counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..dataplane.forward import Forwarder
from ..dataplane.links import PeerLinks
from ..dataplane.server import DataPlaneServer
from ..membership.runner import GossipRunner
from ..membership.transport import MembershipTransport
from ..mesh.types import Status
from ..serving.deployments import Deployments
from ..serving.jobs import JobService
from ..serving.replicas import Replicas

__all__ = ["Parts"]


@dataclass(frozen=True)
class Parts:
    """The parts of one agent whose counters are exported."""

    runner: GossipRunner
    transport: MembershipTransport
    dataplane: DataPlaneServer
    links: PeerLinks
    forwarder: Forwarder
    deployments: Deployments
    jobs: JobService
    replicas: Replicas | None = None

    def stats(self) -> dict[str, Any]:
        """Counters for metrics and tests: packets, bytes, drops by reason, members by status."""
        runner, dataplane = self.runner, self.dataplane
        by_status = {status.value: 0 for status in Status}
        names = {}
        for member in runner.members():
            by_status[member.status.value] += 1
            names[member.node] = member.meta.name
        return {
            "routing": dict(self.forwarder.counts),
            "forward_in_flight": {names.get(node, node): n for node, n in self.links.in_flight().items()},
            "data_links_open": self.links.open_links(),
            "data_received": dataplane.received,
            "data_links_handed": dataplane.handed,
            "data_dropped": {
                **dataplane.dropped,
                # Connections closed in the sealed handshake: not members (trust/sealed.py). One
                # that closed on its own before saying anything ("lost") is no evidence of that.
                "unauthenticated": sum(n for why, n in dataplane.refused.items() if why != "lost"),
                **{f"reply_{k}": n for k, n in self.links.dropped.items()},
            },
            "received": runner.received,
            "bytes_in": runner.bytes_in,
            "bytes_out": runner.bytes_out,
            "sent": self.transport.sent,
            "send_dropped": self.transport.send_dropped,
            "dropped": dict(runner.dropped),
            "gossip_queued": runner.core.gossip.queue.counts(),
            "refused": dict(runner.core.refused),  # cut or refused by the bounds, not dropped
            "load_news": dict(runner.core.load_news),
            "members": by_status,
            "member_changes": dict(runner.changes),
            "refutations": runner.refutations,
            "stalls": runner.core.stalls.count,
            "deployments": self.deployments.stats(),
            "jobs": self.jobs.stats(),
            "batches": {r.deployment: r.batch_sizes for r in self.replicas or ()},
            "moderation": dict(self.forwarder.moderation.refused) if self.forwarder.moderation else {},
            "incarnation": runner.core.incarnation,
            "awareness": runner.core.awareness.score,
        }

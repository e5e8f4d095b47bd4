"""Names shared by every core module: node ids, addresses and member states."""

from __future__ import annotations

from enum import StrEnum
from typing import NewType

# A node's permanent id: 32 lowercase hex characters, persisted in its data dir.
NodeId = NewType("NodeId", str)
# "host:port" of a node's membership (gossip) socket.
Address = NewType("Address", str)


class Status(StrEnum):
    """A member's state in one node's view (the ``status`` field of ``GET /v1/mesh``)."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"

    @property
    def gone(self) -> bool:
        """Dead or left: not probed, not gossiped to (beyond the dead grace period)."""
        return self in (Status.DEAD, Status.LEFT)

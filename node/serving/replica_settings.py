"""``ReplicaSettings``: the supervision knobs of a replica (``replica.py``), taken from AgentConfig."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReplicaSettings"]


@dataclass(frozen=True)
class ReplicaSettings:
    """Supervision knobs, taken from AgentConfig (where each one's reason is written)."""

    setup_timeout_s: float
    queue_size: int
    hang_grace_s: float
    restart_initial_s: float
    restart_max_s: float
    setup_attempts: int
    failed_hold_s: float
    drain_timeout_s: float
    max_frame_bytes: int

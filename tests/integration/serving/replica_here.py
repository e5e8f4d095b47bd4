"""A ``Replica`` supervised in the test's own process (no agent): its settings, quick to restart."""

from __future__ import annotations

from meshnode.serving.replica import ReplicaSettings


def replica_settings(setup_timeout_s: float = 60.0) -> ReplicaSettings:
    """Settings for a replica under test: `setup_timeout_s` to be ready, quick restarts, a short drain."""
    return ReplicaSettings(
        setup_timeout_s=setup_timeout_s,
        queue_size=4,
        hang_grace_s=5.0,
        restart_initial_s=0.1,
        restart_max_s=0.5,
        setup_attempts=3,
        failed_hold_s=60.0,
        drain_timeout_s=1.0,
        max_frame_bytes=1 << 20,
    )

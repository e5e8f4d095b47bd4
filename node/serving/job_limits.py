"""The job service's knobs, from ``AgentConfig`` (``config.py`` says what each does and costs)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import AgentConfig

__all__ = ["JobLimits"]


@dataclass(frozen=True)
class JobLimits:
    """The job knobs of ``AgentConfig`` (``config.py`` says what each costs)."""

    copies: int
    ttl_s: float
    max_attempts: int
    running_per_deployment: int
    tick_s: float
    max_jobs: int
    max_body_bytes: int
    sync_s: float
    inline_result_bytes: int
    # A job message's records fill at most half a data-plane frame (max_frame_bytes), so a listing
    # or a sync of jobs with large bodies never makes a frame the peer would drop with its link.
    message_bytes: int
    # A result's bytes at most: it comes from a worker or peer in one data-plane frame.
    max_result_bytes: int

    @classmethod
    def of(cls, config: AgentConfig) -> JobLimits:
        """The limits `config` sets."""
        return cls(
            config.job_copies,
            config.job_ttl_s,
            config.job_max_attempts,
            config.job_running_per_deployment,
            config.job_tick_s,
            config.job_max_held,
            config.job_max_body_bytes,
            config.job_sync_s,
            config.job_inline_result_bytes,
            config.max_frame_bytes // 2,
            config.max_frame_bytes,
        )

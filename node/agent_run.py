"""Running an agent as a process: its event loop (uvloop when wanted) and its signals.

``meshnode join`` calls ``run_agent``; the agent itself (``agent.py``) knows nothing of processes.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from .config import AgentConfig
from .errors import ConfigError, StoreError
from .event_loop import run_event_loop, settle_heap

__all__ = ["run_agent"]

log = logging.getLogger("meshnode.agent")


def run_agent(config: AgentConfig) -> int:
    """Run an agent until SIGINT or SIGTERM, then leave gracefully. Returns the exit code."""

    from .agent import Agent  # the agent imports this module: bound at call time

    async def main() -> int:
        agent = Agent(config)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, agent.request_stop)
        try:
            await agent.start(settle=settle_heap)
        except (ConfigError, StoreError) as exc:  # the user's to fix: one line, exit code 2
            log.error("%s", exc)
            await agent.close_after_failed_start()
            return 2
        await agent.wait_stopped()
        return 0

    return run_event_loop(main(), config.uvloop)

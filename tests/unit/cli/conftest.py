"""Fixtures of the command-line tests."""

from __future__ import annotations

import pytest

import meshnode.agent
from meshnode.config import AgentConfig


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[AgentConfig]:
    """Replaces run_agent: records the config `join` built instead of running an agent."""
    configs: list[AgentConfig] = []

    def fake_run_agent(config: AgentConfig) -> int:
        configs.append(config)
        return 0

    monkeypatch.setattr(meshnode.agent, "run_agent", fake_run_agent)
    return configs

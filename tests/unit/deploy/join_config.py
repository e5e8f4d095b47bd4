"""`meshnode join` as the deployment recipes run it: the config it would start an agent with.

The recipes (deploy/compose, deploy/kubernetes, deploy/systemd) give the agent its settings as
command-line flags and ``MESHNODE_<FLAG>`` variables. ``join_config`` runs the real ``join``
command on those, with ``run_agent`` replaced, and returns the ``AgentConfig`` it built: a flag or
variable that does not exist, or a value its flag refuses, fails the way it would in the container
(exit code 2 and the line saying why) instead of being looked for by name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import click
import pytest
from click.testing import CliRunner

import meshnode.agent
from meshnode.cli import main
from meshnode.cli.config_file import ENV_PREFIX
from meshnode.cli.join import join
from meshnode.config import AgentConfig
from meshnode.trust.token import TOKEN_ENV

__all__ = ["join_config", "join_env_vars", "join_flags"]


def join_flags() -> set[str]:
    """Every flag of ``meshnode join`` (``--seed``, ``--no-mdns``, ...)."""
    return {
        flag
        for param in join.params
        if isinstance(param, click.Option)
        for flag in (*param.opts, *param.secondary_opts)
    }


def join_env_vars() -> set[str]:
    """Every variable ``meshnode join`` reads: one per flag, the token's own, and the meshnode home
    (``meshnode.config.default_data_dir``, where the data dir and the token file are by default)."""
    names = {param.envvar for param in join.params if isinstance(param.envvar, str)}
    return names | {TOKEN_ENV, "MESHNODE_HOME"}


def join_config(monkeypatch: pytest.MonkeyPatch, args: Sequence[str], env: Mapping[str, str]) -> AgentConfig:
    """The config ``meshnode ARGS`` (``join ...``) builds with the variables ``env`` and no other of ours."""
    unknown = {name for name in env if name.startswith(ENV_PREFIX)} - join_env_vars()
    assert not unknown, f"not variables of meshnode join: {sorted(unknown)}"
    started: list[AgentConfig] = []

    def run_agent(config: AgentConfig) -> int:
        started.append(config)
        return 0

    monkeypatch.setattr(meshnode.agent, "run_agent", run_agent)
    # The tester's own MESHNODE_* variables must not fill in what the recipe leaves out.
    environment: dict[str, str | None] = {name: None for name in os.environ if name.startswith(ENV_PREFIX)}
    environment.update(env)
    # The console script's group, as the images' ENTRYPOINT and the unit's ExecStart run it.
    result = CliRunner().invoke(main, list(args), env=environment, catch_exceptions=False)
    assert result.exit_code == 0, f"meshnode {' '.join(args)} with {dict(env)}: {result.output}"
    assert len(started) == 1
    return started[0]

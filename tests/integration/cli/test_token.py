"""The mesh token on the command line, with real agents: refused, made, kept, shared and printed.

Each test gives its agents a meshnode home of its own (``$MESHNODE_HOME``), empty at the start, so
"no token anywhere" is literally true and no other test's token file is read or written.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

from meshnode.trust.keyring import key_id
from meshnode.trust.token import MIN_TOKEN_CHARS, TOKEN_ENV, TOKEN_FILE
from tests.integration.agents import AgentProcess, free_port, stop_processes, wait_for

MESHNODE = [sys.executable, "-m", "meshnode"]
# Python start-up and the imports of a whole agent, on a busy 2-core machine.
DEADLINE_S = 60.0
FORM_TIMEOUT_S = 45.0


def meshnode(*args: str, home: Path, timeout: float = DEADLINE_S) -> subprocess.CompletedProcess[str]:
    """Run ``meshnode ARGS`` with `home` as its meshnode home and no token in its environment."""
    env = {key: value for key, value in os.environ.items() if key != TOKEN_ENV}
    env["MESHNODE_HOME"] = str(home)
    return subprocess.run(
        [*MESHNODE, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def test_join_with_a_too_short_token_exits_2_with_one_line(tmp_path: Path) -> None:
    short = "x" * (MIN_TOKEN_CHARS - 1)
    result = meshnode(
        "join",
        "--no-mdns",
        "--token",
        short,
        "--http",
        f"127.0.0.1:{free_port()}",
        "--mesh",
        f"127.0.0.1:{free_port()}",
        "--data-dir",
        str(tmp_path / "node"),
        home=tmp_path / "home",
    )
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "--token" in lines[0] and str(MIN_TOKEN_CHARS) in lines[0], result.stderr
    assert result.stdout == ""
    # Refused before anything started: no token was made, no data dir written.
    assert not (tmp_path / "home").exists() and not (tmp_path / "node").exists()


def test_a_node_with_no_token_makes_one_that_the_next_node_and_meshnode_token_share(tmp_path: Path) -> None:
    home = tmp_path / "home"
    token_file = home / TOKEN_FILE
    mesh_id = f"test-{uuid.uuid4().hex[:12]}"
    # token="": no --token, no $MESHNODE_TOKEN; the data dirs are fresh, so only the home is left.
    first = AgentProcess("first", tmp_path, mesh_id=mesh_id, token="", env={"MESHNODE_HOME": str(home)})
    second = AgentProcess(
        "second", tmp_path, mesh_id=mesh_id, token="", seeds=[first.mesh], env={"MESHNODE_HOME": str(home)}
    )
    try:
        first.start().wait_ready()
        # Made in the home, readable by its owner only, and announced with the command that joins.
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= MIN_TOKEN_CHARS

        def told_lines() -> list[str]:
            return [line for line in first.log_tail(1000).splitlines() if "meshnode join --seed" in line]

        # The announcement is logged just after the node is up: /ready may answer before it is written.
        wait_for(lambda: bool(told_lines()), 10, message=first.describe)
        told = told_lines()
        assert len(told) == 1, first.describe()
        assert f"--seed {first.mesh}" in told[0] and f"--token {token}" in told[0], told

        # The second node finds the same file and joins the first; the file is not rewritten.
        second.start().wait_ready()

        def both_see_both() -> bool:
            both = {first.node_id: "alive", second.node_id: "alive"}
            return all(agent.statuses() == both for agent in (first, second))

        wait_for(both_see_both, FORM_TIMEOUT_S, message=lambda: f"{first.describe()}\n{second.describe()}")
        assert token_file.read_text().strip() == token
        assert "meshnode join --seed" not in second.log_tail(1000), second.describe()

        # `meshnode token` prints the token the nodes use (their keyring holds its key id), alone
        # on standard output; `--new` prints a fresh one and keeps it nowhere.
        printed = meshnode("token", home=home)
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout == f"{token}\n", printed
        for agent in (first, second):
            assert agent.get("/v1/keyring").json()["primary"] == key_id(token).hex()
        fresh = [meshnode("token", "--new", home=home) for _ in range(2)]
        values = [result.stdout.strip() for result in fresh]
        assert all(result.returncode == 0 and result.stdout.count("\n") == 1 for result in fresh), fresh
        assert len(set(values)) == 2 and token not in values, values
        assert all(len(value) >= MIN_TOKEN_CHARS for value in values), values
        assert token_file.read_text().strip() == token
    finally:
        stop_processes([*first.started, *second.started])

"""A replica whose setup() overruns ``replica_setup_timeout_s`` is killed and counted as a failed setup.

One real worker process per test, supervised in this process by ``Replica`` (no agent): the
supervisor must not wait forever on a model that never finishes loading, and placement must see the
failure (``setup_failures``, ``last_error``) to move the replica to another node.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from meshnode.mesh.replica_state import ReplicaState
from meshnode.serving.replica import Replica

from .replica_here import replica_settings

APPS = Path(__file__).parents[1] / "serving_apps.py"


async def wait_until(predicate: object, timeout_s: float, changed: asyncio.Event) -> None:
    """Wait for the replica to report a change until `predicate()` holds (no polling interval)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # type: ignore[operator]
            await changed.wait()
            changed.clear()


@pytest.mark.parametrize(("setup_s", "timeout_s", "overruns"), [(30.0, 1.5, True), (0.0, 30.0, False)])
async def test_a_setup_past_the_timeout_is_killed_and_counted_one_within_it_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup_s: float, timeout_s: float, overruns: bool
) -> None:
    monkeypatch.setenv("MESHNODE_TEST_SETUP_S", str(setup_s))
    changed = asyncio.Event()
    replica = Replica(
        "slow",
        f"{APPS}:SlowSetup",
        replica_id=f"slow-{os.getpid()}-{overruns}",
        data_dir=tmp_path,
        settings=replica_settings(timeout_s),
        on_change=changed.set,
    )
    await replica.start()
    try:
        if overruns:
            await wait_until(lambda: replica.setup_failures >= 1, 60, changed)
            assert "setup did not finish within 1.5 s" in replica.last_error
            assert replica.state is ReplicaState.STARTING  # restarted, with backoff
            assert replica.entry().error == replica.last_error
        else:
            await wait_until(lambda: replica.serving, 60, changed)
            assert (replica.setup_failures, replica.last_error) == (0, "")
    finally:
        await replica.stop()

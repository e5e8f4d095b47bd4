"""A replica's model: fetched before its worker starts, progress gossiped, a failed pull a failed start.

The source is a fake of ``ModelPulls`` (pure logic: what the supervisor does with its answers); the
real pulls run between real agents in tests/integration/models.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshnode.errors import NotReady
from meshnode.inference.model_dir import MODEL_DIR_ENV, MODEL_NAME_ENV
from meshnode.inference.worker import EXIT_SETUP_FAILED
from meshnode.serving.replica_model import PROGRESS_STEP, ReplicaModel


@dataclass(frozen=True)
class Stored:
    name: str
    path: Path


@dataclass(frozen=True)
class Progress:
    done_bytes: int
    total_bytes: int


class FakePulls:
    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.error: Exception | None = None
        self.at: Progress | None = None
        self.calls = 0

    async def ensure(self, name: str) -> Stored:
        self.calls += 1
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return Stored(name, Path("/data/model-store") / name)

    def progress(self, name: str) -> Progress | None:
        return self.at


def test_a_held_model_gives_the_worker_its_folder_and_name() -> None:
    async def run() -> None:
        pulls = FakePulls()
        pulls.done.set()
        env, exited = await ReplicaModel("sd", pulls).fetch(lambda: None)
        assert exited is None
        assert env == {MODEL_DIR_ENV: "/data/model-store/sd", MODEL_NAME_ENV: "sd"}

    asyncio.run(run())


def test_a_failed_pull_is_a_failed_start_naming_the_model_and_the_reason() -> None:
    async def run() -> None:
        pulls = FakePulls()
        pulls.error = NotReady("no live peer holds it")
        pulls.done.set()
        env, exited = await ReplicaModel("sd", pulls).fetch(lambda: None)
        assert env == {}
        assert exited is not None and not exited.ready and exited.code == EXIT_SETUP_FAILED
        assert exited.setup_error == "model sd: no live peer holds it"

    asyncio.run(run())


SHARES = [(None, 0.0), (Progress(0, 0), 0.0), (Progress(25, 100), 0.25), (Progress(150, 100), 1.0)]


@pytest.mark.parametrize(("at", "share"), SHARES)
def test_progress_is_a_share_between_0_and_1(at: Progress | None, share: float) -> None:
    pulls = FakePulls()
    pulls.at = at
    assert ReplicaModel("sd", pulls).progress() == share


def test_progress_is_gossiped_as_it_moves_and_a_cancelled_fetch_leaves_the_pull_running() -> None:
    async def run() -> None:
        pulls = FakePulls()
        model = ReplicaModel("sd", pulls)
        changes = asyncio.Event()
        fetch = asyncio.create_task(model.fetch(changes.set))
        pulls.at = Progress(int(PROGRESS_STEP * 200), 100)
        async with asyncio.timeout(10):
            await changes.wait()  # checked about once a second while the pull runs
        fetch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetch
        assert pulls.calls == 1

    asyncio.run(run())

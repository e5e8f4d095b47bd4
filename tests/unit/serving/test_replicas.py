"""The table of this node's replicas (``node/serving/replicas.py``): what it gossips and what it serves.

No worker process runs here: a replica's ``start`` is replaced by one that only enters the table, so
the replica stays ``starting``, which is all the table's rules need. The replica's own supervision
(workers, restarts, hangs) is tested on real workers in ``tests/integration/serving``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshnode.config import AgentConfig
from meshnode.errors import NotReady
from meshnode.mesh.replica_state import MAX_ERROR_CHARS, ReplicaEntry, ReplicaState
from meshnode.serving.replica import Replica
from meshnode.serving.replicas import Replicas
from meshnode.testing import make_call


@pytest.fixture
def changes() -> list[str]:
    return []


@pytest.fixture
def replicas(tmp_path: Path, changes: list[str]) -> Replicas:
    return Replicas(
        node_id="0123456789abcdef0123456789abcdef",
        config=AgentConfig(name="here", data_dir=tmp_path),
        on_change=lambda: changes.append("changed"),
    )


@pytest.fixture
async def no_workers(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    async def enter_the_table_only(self: Replica) -> None:
        return None

    monkeypatch.setattr(Replica, "start", enter_the_table_only)
    yield


def test_a_deployment_sat_out_is_gossiped_as_failed_with_its_error(replicas: Replicas) -> None:
    replicas.sit_out("sd", "apps.sd:Model", until=100.0, error="CUDA out of memory " * 50)

    [(name, entry)] = replicas.entries().items()
    assert name == "sd" and entry.state is ReplicaState.FAILED
    assert entry.error.startswith("CUDA out of memory") and len(entry.error) == MAX_ERROR_CHARS
    assert replicas.entry("sd") == entry and replicas.entry("other") is None
    assert replicas.sits_out("sd", "apps.sd:Model")
    assert not replicas.sits_out("sd", "apps.sd:OtherModel")  # a new app gets a new chance


def test_sit_outs_end_when_their_time_has_come(replicas: Replicas) -> None:
    replicas.sit_out("early", "a:A", until=10.0, error="x")
    replicas.sit_out("late", "b:B", until=20.0, error="y")

    assert not replicas.end_sit_outs(now=5.0)
    assert replicas.end_sit_outs(now=10.0)
    assert list(replicas.entries()) == ["late"]
    assert not replicas.sits_out("early", "a:A") and replicas.sits_out("late", "b:B")


async def test_a_peers_request_for_a_deployment_not_here_is_refused_as_retryable(replicas: Replicas) -> None:
    with pytest.raises(NotReady) as refused:
        replicas.serve_local(make_call("sd"))

    assert refused.value.retryable and refused.value.status == 503
    assert replicas.get("sd") is None and replicas.local("sd") is None
    assert replicas.queue_of("sd") == 0 and replicas.in_flight == 0


@pytest.mark.usefixtures("no_workers")
async def test_a_started_replica_is_gossiped_and_refuses_requests_until_it_is_ready(
    replicas: Replicas, changes: list[str]
) -> None:
    replicas.sit_out("sd", "apps.sd:Model", until=100.0, error="failed before")

    replica = await replicas.start("sd", "apps.sd:Model", pinned=True)

    assert replicas.get("sd") is replica and "sd" in replicas and list(replicas) == [replica]
    entry = replicas.entries()["sd"]  # the replica's entry, no longer the sit-out's
    assert entry == ReplicaEntry(ReplicaState.STARTING, pinned=True, slots=1, capacity=entry.capacity)
    assert changes  # announced
    with pytest.raises(RuntimeError):
        await replicas.start("sd", "apps.sd:Model")
    with pytest.raises(NotReady):
        await anext(replicas.serve_local(make_call("sd")))
    await replicas.stop_all()


@pytest.mark.usefixtures("no_workers")
async def test_stopping_a_replica_keeps_its_place_until_it_drained_then_announces_it(
    replicas: Replicas, changes: list[str]
) -> None:
    await replicas.start("sd", "apps.sd:Model")
    gone: list[str] = []

    replicas.stop("sd", "placement moved it", then=lambda: gone.append("sd"))

    assert replicas.stopping("sd") and "sd" in replicas  # still in the table while it drains
    replicas.stop("sd", "asked twice")  # a second stop is no second drain
    await replicas.stop_all()  # waits for the drains under way
    assert gone == ["sd"] and "sd" not in replicas and not replicas.stopping("sd")
    assert replicas.entries() == {} and changes

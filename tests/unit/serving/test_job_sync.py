"""Job copies across members' changes: ended jobs keep their copies, and only peers that can hold
what a node missed are pulled from (``job_sync.py``), never every member at every change.

Real job services (real sqlite stores) in one event loop, their messages carried in-process to the
addressed service's ``serve_peer``; the view is a shared table of statuses that the test changes,
telling every service as the gossip runner does.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from pathlib import Path

import pytest

from meshnode.config import AgentConfig
from meshnode.mesh import job_policy
from meshnode.mesh.envelope import Call, Envelope, Failure
from meshnode.mesh.jobs import JobRecord, JobStatus
from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.mesh.webhook_schedule import DEFAULT_SCHEDULE
from meshnode.serving import job_table
from meshnode.serving.job_files import JobFiles
from meshnode.serving.job_limits import JobLimits
from meshnode.serving.job_peers import JobPeers
from meshnode.serving.job_store import JobStore
from meshnode.serving.job_webhooks import WebhookSender
from meshnode.serving.jobs import JobService
from tests.unit.mesh.test_jobs import job

NODES = [NodeId(f"node-{index}") for index in range(4)]


class View:
    """Every node's view of the members: one shared table of statuses."""

    def __init__(self) -> None:
        self.statuses: dict[NodeId, Status] = {}
        self.roster_version = 0

    def members(self) -> Iterable[Member]:
        for index, (node, status) in enumerate(self.statuses.items()):
            meta = NodeMeta(name=node, data=f"127.0.0.1:{9000 + index}", data_key="k" * 40)
            yield Member(node, Address(f"127.0.0.1:{8000 + index}"), 0, status, 1, meta, since=0.0)

    def member(self, node: NodeId) -> Member | None:
        return next((member for member in self.members() if member.node == node), None)


class Mesh:
    """Job services for `NODES`, and the pulls they make (asker, peer)."""

    def __init__(self, root: Path, copies: int) -> None:
        self.root = root
        self.view = View()
        self.services: dict[NodeId, JobService] = {}
        self.pulls: list[tuple[NodeId, NodeId]] = []
        config = AgentConfig(name="n", data_dir=root, job_copies=copies, job_sync_s=0.3, job_tick_s=0.05)
        self.limits = JobLimits.of(config)

    async def start(self, node: NodeId) -> JobService:
        """Start `node`'s service and make it alive: everyone hears of it, it hears of everyone."""
        webhooks = WebhookSender(lambda *_: {}, DEFAULT_SCHEDULE, lambda record: "")
        service = JobService(
            me=node,
            open_store=lambda: JobStore(self.root / node),
            files=JobFiles(self.root / node / "job-results"),
            peers=JobPeers(self.view, self._call_peer),
            serve=_never_called,
            known=lambda name: True,
            limits=self.limits,
            webhooks=webhooks,
        )
        await service.start()
        self.services[node] = service
        self.change(node, Status.ALIVE)
        for other, status in self.view.statuses.items():
            if other != node:
                service.sync.on_member(other, None, status)
        return service

    def change(self, node: NodeId, status: Status) -> None:
        """`node`'s status changes, and every other service hears of it."""
        previous = self.view.statuses.get(node)
        self.view.statuses[node] = status
        self.view.roster_version += 1
        for other, service in self.services.items():
            if other != node:
                service.sync.on_member(node, previous, status)

    async def stop(self, node: NodeId) -> None:
        await self.services.pop(node).stop()

    async def settled(self) -> None:
        """Until every service is past its start (``job_sync_s``)."""
        await until(lambda: not any(service.sync.starting() for service in self.services.values()))

    def holders(self, job_id: str) -> list[NodeId]:
        live = [node for node, status in self.view.statuses.items() if status == Status.ALIVE]
        return job_policy.holders(job_id, live, self.limits.copies)

    async def _call_peer(
        self, node: NodeId, addr: str, key: str, call: Call
    ) -> AsyncGenerator[Envelope, None]:
        service = self.services.get(node)
        if service is None or self.view.statuses.get(node) != Status.ALIVE:
            yield Failure(call.request_id, "peer_unreachable", "not reachable", True)
            return
        if call.body.get("op") == "sync":
            self.pulls.append((NodeId(call.body["asker"]), node))
        async for message in service.table.serve_peer(call):
            yield message


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    made = Mesh(tmp_path, copies=2)
    yield made
    for node in list(made.services):
        await made.stop(node)


async def until(predicate: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Wait until `predicate` holds (the services' loops run meanwhile), or fail."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


async def _never_called(*args: object, **kwargs: object) -> object:
    raise AssertionError("no job runs in these tests: every job is ended")


def completed() -> JobRecord:
    """An ended job with a fresh id, written once."""
    return job(id=secrets.token_urlsafe(16), status=JobStatus.COMPLETED, expires_ms=4_000_000_000_000)


async def two_holding_one_job(mesh: Mesh) -> JobRecord:
    """Two members past their start, both holding one ended job written by the first."""
    for node in NODES[:2]:
        await mesh.start(node)
    await mesh.settled()
    record = completed()
    await mesh.services[NODES[0]].table.write(record)
    return record


def version_at(mesh: Mesh, node: NodeId, job_id: str) -> int | None:
    record = mesh.services[node].table.records.get(job_id)
    return None if record is None else record.version


async def test_an_ended_job_is_copied_to_the_holder_that_replaces_a_dead_one_without_any_pull(
    mesh: Mesh,
) -> None:
    for node in NODES:
        await mesh.start(node)
    await mesh.settled()
    record = completed()
    first, second = mesh.holders(record.id)
    await mesh.services[first].table.write(record)
    assert version_at(mesh, second, record.id) == record.version
    mesh.pulls.clear()

    mesh.change(second, Status.DEAD)
    await mesh.stop(second)
    (replacement,) = set(mesh.holders(record.id)) - {first}
    await until(lambda: version_at(mesh, replacement, record.id) == record.version)
    assert mesh.pulls == []  # a death moves copies by push: nobody pulls from every member


async def test_a_member_joining_a_settled_mesh_pulls_from_each_member_and_none_pulls_from_it(
    mesh: Mesh,
) -> None:
    for node in NODES[:3]:
        await mesh.start(node)
    await mesh.settled()
    records = [completed() for _ in range(20)]
    for record in records:
        await mesh.services[mesh.holders(record.id)[0]].table.write(record)
    mesh.pulls.clear()

    joining = NODES[3]
    await mesh.start(joining)
    await until(lambda: {peer for _, peer in mesh.pulls} == set(NODES[:3]))
    assert {asker for asker, _ in mesh.pulls} == {joining}
    ours = [record.id for record in records if joining in mesh.holders(record.id)]
    assert ours  # 20 jobs, 2 holders of 4: some are the new member's
    await until(lambda: all(version_at(mesh, joining, job_id) is not None for job_id in ours))


async def test_a_member_coming_back_with_copies_further_along_is_pulled_from(mesh: Mesh) -> None:
    record = await two_holding_one_job(mesh)
    away = NODES[1]
    mesh.change(away, Status.SUSPECT)
    # What it wrote meanwhile reached nobody (a partition): the others hold an older version.
    await mesh.services[away].table.merge([record.written(away)])
    assert version_at(mesh, NODES[0], record.id) == record.version

    mesh.change(away, Status.ALIVE)
    await until(lambda: version_at(mesh, NODES[0], record.id) == record.version + 1)
    assert (NODES[0], away) in mesh.pulls


async def test_a_pull_that_shows_the_asker_ahead_has_the_peer_pull_back(mesh: Mesh) -> None:
    record = await two_holding_one_job(mesh)
    ahead, behind = NODES[1], NODES[0]
    await mesh.services[ahead].table.merge([record.written(ahead)])
    mesh.pulls.clear()

    mesh.services[ahead].sync.pull_from(behind)  # its standing tells `behind` it is ahead
    await until(lambda: version_at(mesh, behind, record.id) == record.version + 1)
    assert mesh.pulls[:2] == [(ahead, behind), (behind, ahead)]


async def test_a_sync_ranks_held_jobs_in_slices_that_let_the_loop_run(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranking a job's holders costs a hash per live member (1 ms a job at 1,000): a sync over many
    jobs, asking or answering, lets the loop's other work run between slices."""
    monkeypatch.setattr(job_table, "_SLICE_S", 0.0)  # a slice per job: each must let the ticker run
    await two_holding_one_job(mesh)
    asker, answerer = mesh.services[NODES[1]].table, mesh.services[NODES[0]].table
    for table in (asker, answerer):
        await table.merge([completed() for _ in range(5)])
    held_before = (len(asker.records), len(answerer.records))
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ranked_at: dict[str, list[int]] = {"asker": [], "answerer": []}
    for side, table in (("asker", asker), ("answerer", answerer)):
        monkeypatch.setattr(table, "holders", _noting(table.holders, ranked_at[side], lambda: turns))
    ticking = asyncio.create_task(ticker())
    try:
        assert await asker.sync_with(answerer.me)
    finally:
        ticking.cancel()
    assert set(answerer.records) <= set(asker.records)  # it pulled what it lacked
    building = ranked_at["asker"][: held_before[0]]  # the standing: one per held job, before any ask
    answering = ranked_at["answerer"][: held_before[1]]
    assert building[0] < building[-1] and answering[0] < answering[-1]


def _noting(
    holders: Callable[[str], tuple[NodeId, ...]], into: list[int], turns: Callable[[], int]
) -> Callable[[str], tuple[NodeId, ...]]:
    def noted(job_id: str) -> tuple[NodeId, ...]:
        into.append(turns())
        return holders(job_id)

    return noted

"""``GET /v1/mesh`` and ``GET /v1/deployments`` from kept JSON answer the bytes the old routes did.

The old routes built the whole body on every poll and let FastAPI serialize it (``/v1/mesh``
through ``MeshResponse``, ``/v1/deployments`` as ``dict[str, Any]``); they are rebuilt here as they
were and compared byte for byte with the new ones on seeded random views, and again after every
kind of change a view goes through, so that kept JSON can never answer for a view that moved on.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI

from meshnode.config import AgentConfig
from meshnode.http.app import create_app
from meshnode.http.deployments import add_deployment_routes
from meshnode.http.mesh_render import MeshRender, mesh_body
from meshnode.membership.runner import GossipRunner
from meshnode.mesh.deployment import Autoscaling, DeploymentSpec
from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.records import Record
from meshnode.mesh.replica_state import ReplicaEntry, ReplicaState
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.serving.deployments import Deployments
from meshnode.serving.replicas import Replicas
from tests.unit.mesh.random_views import ME, random_entry, random_members

# Values a gossiped metadata map may hold: JSON's corner cases (floats pydantic and json.dumps
# write differently, NaN and infinities, non-ASCII text) included.
ODD_VALUES: tuple[object, ...] = (
    0,
    -1,
    2**53 + 1,
    0.1,
    1e16,
    1e-7,
    -0.0,
    math.nan,
    math.inf,
    True,
    None,
    "ünïcødé ✓",
    'quote " and \\ backslash',
    [1, "two", 3.5],
    {"nested": {"deeper": [0.25, None]}},
)


def odd_map(rng: random.Random) -> dict[str, Any]:
    return {f"k{index}": rng.choice(ODD_VALUES) for index in range(rng.randrange(5))}


def odd_members(rng: random.Random, count: int) -> list[Member]:
    """Members with every field of an entry varied, names colliding now and then."""
    members = random_members(rng, count, ["sd", "llm", "embed"])
    for member in members:
        meta = member.meta
        member.incarnation = rng.randrange(5)
        member.meta = NodeMeta(
            name=rng.choice((meta.name, "zeta", "Ålpha", "beta")),
            http=f"127.0.0.1:{rng.randrange(1, 65535)}",
            mesh=str(member.addr),
            data=meta.data,
            data_key="rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
            key_ids=tuple(rng.sample(["0a1b2c3d", "deadbeef", "feedf00d"], k=rng.randrange(3))),
            region=rng.choice(("", "eu", "us")),
            zone=meta.zone,
            tls=rng.random() < 0.3,
            device={**meta.device, **odd_map(rng)},
            load=odd_map(rng),
            models=tuple(rng.sample(["tiny-sd", "qwen", "bge"], k=rng.randrange(3))),
            hints=tuple(rng.sample(["lora-a", "lora-b"], k=rng.randrange(2))),
            speeds={"sd": {"service_ms": rng.random() * 200, "rps": rng.choice((0.0, 6.5, math.nan))}},
            replicas=meta.replicas,
            waiting=meta.waiting,
            reach=rng.choice(("", "direct", "relayed")),
            relays=tuple(rng.sample(["n001", "n002"], k=rng.randrange(2))),
            traffic={"window_s": 10.0, "requests": {"sd": [rng.randrange(9) for _ in range(8)]}},
            store={"tiny-sd": {"digest": "0123456789abcdef", "bytes": rng.randrange(1 << 40)}},
            pulls=rng.choice(({}, {"qwen": {"digest": "fedcba9876543210", "done": 5, "total": 10}})),
        )
    return members


class FakeAgent:
    node_id = str(ME)

    def __init__(self, members: list[Member]) -> None:
        self.list = members

    def members(self) -> list[Member]:
        return self.list

    def mesh_view(self) -> dict[str, Any]:
        return mesh_body(self.node_id, self.list)

    def readiness(self) -> tuple[bool, str]:
        return True, "ready"


async def get(app: FastAPI, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as client:
        response = await client.get(path)
    assert response.status_code == 200
    return response


async def assert_mesh_same(agent: FakeAgent, old: FastAPI, new: FastAPI) -> None:
    before, after = await get(old, "/v1/mesh"), await get(new, "/v1/mesh")
    assert after.content == before.content
    assert after.headers["content-type"] == before.headers["content-type"]


@pytest.mark.parametrize("seed", range(8))
async def test_mesh_answers_the_old_bytes_on_random_views(seed: int) -> None:
    rng = random.Random(seed)
    agent = FakeAgent(odd_members(rng, rng.choice((1, 7, 40, 300))))
    await assert_mesh_same(agent, create_app(agent), create_app(agent, agent))


async def test_mesh_follows_every_change_of_a_member_and_renders_only_what_changed() -> None:
    rng = random.Random(11)
    agent = FakeAgent(odd_members(rng, 30))
    old, new = create_app(agent), create_app(agent, agent)
    await assert_mesh_same(agent, old, new)
    peer = next(m for m in agent.list if m.node != ME)
    changes = [
        lambda: setattr(peer, "status", Status.SUSPECT),  # the core changes members in place
        lambda: setattr(peer, "status", Status.DEAD),
        lambda: setattr(peer, "incarnation", peer.incarnation + 1),
        lambda: setattr(agent.list[0], "incarnation", agent.list[0].incarnation + 1),  # a refutation
        lambda: setattr(peer, "addr", Address("10.0.0.9:8471")),
        lambda: setattr(peer, "meta", NodeMeta(name="renamed", load={"cpu": 99.0})),
        lambda: setattr(peer, "meta", NodeMeta(name="renamed", load={"cpu": 98.0})),
        lambda: agent.list.remove(peer),
        lambda: agent.list.append(
            Member(NodeId("zz"), Address("zz:1"), 0, Status.ALIVE, 1, NodeMeta("a"), 0)
        ),
    ]
    for change in changes:
        change()
        await assert_mesh_same(agent, old, new)

    render = MeshRender(agent.node_id, agent)
    await render.body()
    counted = render.pieces.rendered
    assert await render.body() == (await get(old, "/v1/mesh")).content
    assert render.pieces.rendered == counted  # an unchanged view renders nothing
    agent.list[3].status = Status.LEFT
    await render.body()
    assert render.pieces.rendered == counted + 1


# -- /v1/deployments ----------------------------------------------------------------------------


class FakeMembership:
    """What the placement shell asks of the gossip runner, over a view the test changes."""

    leaving = False

    def __init__(self, members: list[Member], records: list[Record]) -> None:
        self.list, self.records = members, {record.name: record for record in records}
        self._looks = 0

    @property
    def roster_version(self) -> int:
        """The test changes members in place, without a version: a new one at every look."""
        self._looks += 1
        return self._looks

    def members(self) -> list[Member]:
        return self.list

    def has_peers(self) -> bool:
        return True

    def live_records(self) -> list[Record]:
        return [record for record in self.records.values() if record.spec is not None]

    def record(self, name: str) -> Record | None:
        return self.records.get(name)

    def expire_records(self, now_ms: int, ttl_s: float) -> list[str]:
        return []


def spec_of(rng: random.Random) -> DeploymentSpec:
    # max_replicas 0: placement never starts a worker here, whatever it decides.
    prewarm = rng.random() < 0.5
    return DeploymentSpec(
        "meshnode.apps.echo:Echo",
        min_replicas=0,
        max_replicas=0,
        autoscaling=Autoscaling(target_concurrency=rng.choice((1.0, 2.5)), prewarm=prewarm),
    )


def placement(tmp_path: Path, rng: random.Random, count: int, members: int) -> Deployments:
    names = [f"d{index:03d}" for index in range(count)]
    records = [Record(name, rng.choice((0, 1, 5)), ME, spec_of(rng)) for name in names]
    config = AgentConfig(name="here", data_dir=tmp_path)
    return Deployments(
        node_id=ME,
        config=config,
        pinned={},
        replicas=Replicas(node_id=ME, config=config, on_change=lambda: None),
        membership=cast(GossipRunner, FakeMembership(random_members(rng, members, names), records)),
        publish=lambda: None,
        persist=lambda record: None,
        forget=lambda names: None,
    )


def old_deployments_app(deployments: Deployments) -> FastAPI:
    """The route as it was: every view built and serialized by FastAPI at every poll."""
    app = FastAPI()

    @app.get("/v1/deployments")
    async def list_deployments() -> dict[str, Any]:
        return {"deployments": deployments.views()}

    return app


def new_deployments_app(deployments: Deployments) -> FastAPI:
    app = FastAPI()
    add_deployment_routes(app, deployments)
    return app


async def assert_deployments_same(old: FastAPI, new: FastAPI) -> None:
    before, after = await get(old, "/v1/deployments"), await get(new, "/v1/deployments")
    assert after.content == before.content
    assert after.headers["content-type"] == before.headers["content-type"]


@pytest.mark.parametrize("seed", range(6))
async def test_deployments_answer_the_old_bytes_on_random_views(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    shell = placement(tmp_path, rng, rng.choice((1, 5, 60)), rng.randrange(2, 30))
    await shell.reconcile(100.0)
    await assert_deployments_same(old_deployments_app(shell), new_deployments_app(shell))


async def test_deployments_follow_every_change_of_their_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(5)
    shell = placement(tmp_path, rng, 40, 20)
    membership = cast(FakeMembership, shell._membership)
    await shell.reconcile(100.0)
    old, new = old_deployments_app(shell), new_deployments_app(shell)
    await assert_deployments_same(old, new)

    import meshnode.http.deployments as route

    rendered: list[str] = []
    real = route.view_of
    monkeypatch.setattr(route, "view_of", lambda inputs: rendered.append(inputs.record.name) or real(inputs))
    await assert_deployments_same(old, new)
    assert rendered == []  # nothing changed: nothing rendered

    holder = next(m for m in membership.list if m.node != ME and m.meta.replicas)
    name = next(iter(holder.meta.replicas))
    ready = ReplicaEntry(ReplicaState.READY, queue=3)
    changes = [
        lambda: setattr(holder, "status", Status.SUSPECT if holder.status != Status.SUSPECT else Status.DEAD),
        lambda: setattr(holder, "status", Status.ALIVE),
        lambda: setattr(holder, "meta", NodeMeta(name="moved", replicas={name: ready})),
        lambda: setattr(holder, "meta", NodeMeta(name="moved", replicas={name: random_entry(rng)})),
        lambda: setattr(holder, "meta", NodeMeta(name="renamed", replicas=holder.meta.replicas)),
        lambda: shell.waiting.update({name: 4}),
        lambda: shell._replicas.sit_out(name, "meshnode.apps.echo:Echo", 1e9, "setup failed: ImportError"),
        lambda: membership.records.update({name: Record(name, 9, ME, spec_of(rng))}),
        lambda: membership.records.update({"a-new-one": Record("a-new-one", 9, ME, spec_of(rng))}),
        lambda: membership.records.pop("d000"),
    ]
    for change in changes:
        change()
        rendered.clear()
        await assert_deployments_same(old, new)
        assert len(rendered) <= 3  # only the views showing what changed (a member holds up to 3)
    for step in range(3):  # rounds move the autoscalers' numbers: the outcomes change
        membership.list[1].meta = NodeMeta(
            name="busy", replicas={name: ReplicaEntry(ReplicaState.READY, queue=9)}
        )
        await shell.reconcile(101.0 + 30 * step)
        await assert_deployments_same(old, new)

"""Non-members change nothing (issue 11): forged gossip and a wrong token, against real agents.

A non-member is anyone without the mesh's token. It can reach every port, and it can write packets
that the decoder would take (``wire.encode``): here it declares a live node dead at the largest
incarnation, announces a forged member that claims a ready replica of a deployment, and declares a
deployment of its own. Sent plain or sealed with another token, every one of them is dropped at the
seal and counted; views, deployments and routing stay as they were. The same packets sealed with the
mesh's token are then believed at once, which shows that the checks would have seen them.

A "nothing happened" check watches for ``WATCH_S`` and compares the views (and counters) before and
after: ``send_and_confirm`` already proves that every agent handled every packet, so the watch only
covers what a believed packet would set off later, which the local profile does within a second.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import zmq

from meshnode.mesh import wire
from meshnode.mesh.bounds import CLAIM_STEP, MAX_INCARNATION
from meshnode.mesh.deployment import DeploymentSpec
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.records import COUNTER_BITS, Record
from meshnode.mesh.replica_state import ReplicaEntry, ReplicaState
from meshnode.mesh.types import Address, NodeId
from meshnode.trust.keyring import Keyring, key_id
from meshnode.trust.token import make_token
from tests.integration.agents import AgentProcess, Mesh, wait_for
from tests.integration.membership.intruder import LIMITS, Intruder, dropped_by_reason, drops_since

START_MESH = Callable[..., Mesh]
FORM_TIMEOUT_S = 45.0
# Python start-up and the echo replica's worker on a busy 2-core machine.
READY_TIMEOUT_S = 60.0
# A believed forged member is probed within one probe round of the local profile (0.2 s per member,
# so under a second at four members) and a believed death spreads in a few gossip rounds (50 ms):
# three seconds is several times both, on a loaded machine.
WATCH_S = 3.0
WATCH_INTERVAL_S = 0.2
# Enough requests that a forged ready replica, were it believed, would get some of them.
REQUESTS = 20
DEPLOYMENT = "echo"
STOLEN = "stolen"
FORGED = NodeId("forged-member")


class Bait:
    """A TCP port nobody should ever connect to: the forged member's mesh, data and HTTP address."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.setblocking(False)
        self.addr = Address(f"127.0.0.1:{self.server.getsockname()[1]}")
        self.connections = 0

    def connected(self) -> int:
        """Connections made to the bait so far (the kernel completes them without our accept)."""
        while True:
            try:
                connection, _ = self.server.accept()
            except BlockingIOError:
                return self.connections
            connection.close()
            self.connections += 1

    def close(self) -> None:
        self.server.close()


def forged_packets(mesh: Mesh, victim: AgentProcess, bait: Bait) -> dict[str, bytes]:
    """Well-formed packets that would change every view if believed, by what each claims."""
    accuser = NodeId(mesh.agents[0].node_id)
    replica = ReplicaEntry(ReplicaState.READY, queue=0, slots=64, capacity=64)
    meta = NodeMeta(
        name="forged",
        http=bait.addr,
        mesh=bait.addr,
        data=bait.addr,
        data_key=zmq.curve_keypair()[0].decode(),
        key_ids=(key_id(mesh.token).hex(),),
        replicas={DEPLOYMENT: replica},
    )
    spec = DeploymentSpec(app="meshnode.apps.echo:Echo", min_replicas=0, max_replicas=1)
    stamp = int(time.time() * 1000) << COUNTER_BITS
    messages: dict[str, wire.Message] = {
        "dead at the largest incarnation": wire.Dead(NodeId(victim.node_id), MAX_INCARNATION, accuser),
        "a forged member with a ready replica": wire.Alive(FORGED, 1, bait.addr, 1, meta),
        "a deployment of its own": Record(STOLEN, stamp, FORGED, spec),
    }
    packets = {
        claim: wire.encode(wire.Packet(FORGED, bait.addr, (message,)), mesh.mesh_id)
        for claim, message in messages.items()
    }
    # Well-formed: only the seal keeps them out.
    for packet in packets.values():
        wire.decode(packet, mesh.mesh_id, max_bytes=LIMITS.max_packet_bytes, max_members=LIMITS.max_members)
    return packets


def members(agent: AgentProcess) -> dict[str, tuple[str, str, str, int]]:
    """``{node id: (name, status, mesh address, incarnation)}`` in the agent's view."""
    return {
        node: (member["name"], member["status"], member["mesh"], member["incarnation"])
        for node, member in agent.members().items()
    }


def deployments(agent: AgentProcess) -> dict[str, list[tuple[str, str]]]:
    """``{deployment: [(node name, replica status), ...]}`` as ``GET /v1/deployments`` lists them."""
    response = agent.get("/v1/deployments")
    assert response.status_code == 200, agent.describe()
    return {
        view["name"]: [(replica["node"], replica["status"]) for replica in view["replicas"]]
        for view in response.json()["deployments"]
    }


def same_view(
    before: dict[str, tuple[str, str, str, int]], now: dict[str, tuple[str, str, str, int]]
) -> bool:
    """The same members with the same names, statuses and addresses.

    An incarnation may rise by honest refutations (a probe late on a loaded machine), one at a time;
    a believed claim would lift it by ``CLAIM_STEP`` at least (``bounds.py``).
    """
    if set(before) != set(now):
        return False
    return all(
        before[node][:3] == now[node][:3] and 0 <= now[node][3] - before[node][3] < CLAIM_STEP
        for node in before
    )


def hold(check: Callable[[], object], seconds: float, message: Callable[[], str]) -> None:
    """Fail if ``check`` is ever false during ``seconds`` (looked at every ``WATCH_INTERVAL_S``)."""
    deadline = time.monotonic() + seconds
    while True:
        assert check(), message()
        if time.monotonic() >= deadline:
            return
        time.sleep(WATCH_INTERVAL_S)


def predict(agent: AgentProcess, body: object) -> httpx.Response:
    return httpx.post(f"{agent.url}/v1/predict/{DEPLOYMENT}", json=body, timeout=30, trust_env=False)


def test_forged_gossip_from_non_members_is_dropped_counted_and_changes_nothing(
    start_mesh: START_MESH,
) -> None:
    mesh = start_mesh(3, extra_args={1: ["--deploy", f"{DEPLOYMENT}=meshnode.apps.echo:Echo"]})
    mesh.wait_formed(FORM_TIMEOUT_S)
    entry, server, victim = mesh.agents
    wait_for(lambda: predict(entry, {}).status_code == 200, READY_TIMEOUT_S, message=mesh.describe)
    other = Keyring([make_token()], mesh.mesh_id)

    with closing(Bait()) as bait, closing(Intruder(mesh.mesh_id, mesh.token)) as intruder:
        packets = forged_packets(mesh, victim, bait)
        views = {agent.name: members(agent) for agent in mesh.agents}
        declared = {agent.name: deployments(agent) for agent in mesh.agents}
        assert all(DEPLOYMENT in table and STOLEN not in table for table in declared.values()), declared
        counters = {agent.name: dropped_by_reason(agent) for agent in mesh.agents}

        # Every agent gets every packet twice: plain, and sealed with another mesh's token.
        for agent in mesh.agents:
            frames = [[packet] for packet in packets.values()]
            frames += [[other.seal(packet)] for packet in packets.values()]
            intruder.send_and_confirm(agent, frames)

        def diagnosis() -> str:
            now = {agent.name: (members(agent), deployments(agent)) for agent in mesh.agents}
            return f"before {views} {declared}\nnow {now}\nbait {bait.connections}\n{mesh.describe()}"

        for agent in mesh.agents:
            counted = drops_since(agent, counters[agent.name])
            # unknown_key may count more: an agent of another run whose port this one reuses.
            assert counted.pop("unknown_key", 0) >= len(packets), f"{agent.name}: {counted}"
            assert counted == {"unsealed": len(packets)}, f"{agent.name}: {counted}\n{diagnosis()}"

        def unchanged() -> bool:
            return bait.connected() == 0 and all(
                same_view(views[agent.name], members(agent)) and deployments(agent) == declared[agent.name]
                for agent in mesh.agents
            )

        hold(unchanged, WATCH_S, diagnosis)
        # Requests for the deployment go to its one real replica, never to the forged one.
        for index in range(REQUESTS):
            response = predict(entry, {"n": index})
            assert response.status_code == 200, f"{response.status_code} {response.text}\n{diagnosis()}"
            assert response.headers["X-Mesh-Route"].split(",")[-1] == server.name, response.headers
        assert unchanged(), diagnosis()

        # The control: the forged member and deployment, sealed with the mesh's token, are believed
        # (the entry probes the bait at once), so every check above would have seen them.
        sealed = [[intruder.keyring.seal(packet)] for claim, packet in packets.items() if "dead" not in claim]
        intruder.send_and_confirm(entry, sealed)
        wait_for(
            lambda: FORGED in entry.members() and STOLEN in deployments(entry) and bait.connected() > 0,
            FORM_TIMEOUT_S,
            message=diagnosis,
        )


@contextmanager
def running(agent: AgentProcess) -> Iterator[AgentProcess]:
    """Start ``agent`` and stop every process it started when the block ends."""
    try:
        yield agent.start()
    finally:
        agent.stop_all()


def test_a_node_with_a_wrong_token_and_a_seed_never_becomes_a_member(
    start_mesh: START_MESH, tmp_path: Path
) -> None:
    mesh = start_mesh(2)
    mesh.wait_formed(FORM_TIMEOUT_S)
    seed = mesh.agents[0]
    before = dropped_by_reason(seed)
    wrong = make_token()
    assert wrong != mesh.token
    # token="": no $MESHNODE_TOKEN, only the flag.
    outsider = AgentProcess(
        "outsider",
        tmp_path / "outsider",
        mesh_id=mesh.mesh_id,
        token="",
        seeds=[seed.mesh],
        extra_args=["--token", wrong],
    )

    with running(outsider):

        def answers() -> bool:
            outsider.check_running()
            try:
                return outsider.get("/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, READY_TIMEOUT_S, message=outsider.describe)
        outsider_id = outsider.get("/health").json()["node"]

        def diagnosis() -> str:
            return f"{mesh.describe()}\n{outsider.describe()}"

        def kept_out() -> bool:
            """The mesh lists exactly its own members, and the outsider only itself, not ready."""
            outsider.check_running()
            alone = outsider.statuses() == {outsider_id: "alive"}
            joining = outsider.get("/ready").status_code == 503
            return alone and joining and all(set(agent.statuses()) == set(mesh.ids) for agent in mesh.agents)

        # Its join attempts reach the seed and are dropped unread: twice, so it retried (the seed
        # retries of the local profile start 0.5 s apart) and was still refused.
        def tried_twice() -> bool:
            assert kept_out(), diagnosis()
            return drops_since(seed, before).get("unknown_key", 0) >= 2

        wait_for(tried_twice, FORM_TIMEOUT_S, message=diagnosis)
        hold(kept_out, WATCH_S, diagnosis)
        counted = drops_since(seed, before)
        assert set(counted) == {"unknown_key"}, counted

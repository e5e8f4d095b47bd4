"""Rotating the mesh token under load: every node moves to the new token, nothing fails, nobody dies.

Three real agents; ``n1`` serves ``echo`` and ``n0`` forwards a closed loop of requests to it over
the data plane while ``meshnode token rotate`` runs its three steps. Every view is polled meanwhile.
"""

from __future__ import annotations

import stat
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import httpx

from meshnode.trust.keyring import key_id
from meshnode.trust.token import make_token
from tests.integration.agents import AgentProcess, Mesh, wait_for

ROTATE_TIMEOUT_S = 180.0
MAX_REQUESTS = 20_000  # bounds the load loop whatever happens


def test_a_rotation_under_load_fails_no_request_and_suspects_nobody(tmp_path: Path) -> None:
    deploy = {1: ["--deploy", "echo=meshnode.apps.echo:Echo"]}
    with Mesh(tmp_path, 3, extra_args=deploy) as mesh:
        mesh.wait_formed()
        n0, n1, _ = mesh.agents
        url = f"{n0.url}/v1/predict/echo"
        wait_for(lambda: httpx.post(url, json={}, timeout=5).status_code == 200, 60, message=n0.describe)

        stop = threading.Event()
        outcomes: Counter[str] = Counter()
        seen: Counter[str] = Counter()

        def load() -> None:
            with httpx.Client(timeout=10) as client:
                while not stop.is_set() and sum(outcomes.values()) < MAX_REQUESTS:
                    try:
                        outcomes[str(client.post(url, json={"n": 1}).status_code)] += 1
                    except httpx.HTTPError as exc:
                        outcomes[type(exc).__name__] += 1

        def watch() -> None:
            while not stop.is_set():
                for agent in mesh.agents:
                    for status in agent.statuses().values():
                        seen[status] += 1
                stop.wait(0.1)

        threads = [threading.Thread(target=load), threading.Thread(target=watch)]
        for thread in threads:
            thread.start()
        new = make_token()
        try:
            rotated = subprocess.run(
                [sys.executable, "-m", "meshnode", "token", "rotate", "--to", new, "--node", n0.url],
                capture_output=True,
                text=True,
                timeout=ROTATE_TIMEOUT_S,
                check=False,
            )
            new_id = key_id(new).hex()
            for agent in mesh.agents:
                assert agent.get("/v1/keyring").json() == {"primary": new_id, "key_ids": [new_id]}
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)

        assert rotated.returncode == 0, rotated.stderr
        assert rotated.stdout.strip() == new
        assert set(outcomes) == {"200"}, outcomes
        assert outcomes["200"] >= 20, outcomes
        assert set(seen) == {"alive"}, seen

        # Each node kept the new ring for its next start, readable by its user only.
        ring = n1.data_dir / "keyring"
        assert stat.S_IMODE(ring.stat().st_mode) == 0o600 and new in ring.read_text()

        # The old token opens nothing any more: a node holding it never becomes a member...
        stale = AgentProcess("stale", tmp_path, mesh_id=mesh.mesh_id, token=mesh.token, seeds=[n0.mesh])
        fresh = AgentProcess("fresh", tmp_path, mesh_id=mesh.mesh_id, token=new, seeds=[n0.mesh])
        try:
            fresh.start()
            stale.start()
            # ... while one with the new token joins (the stale one started alongside, so waiting
            # for the fresh one gives the stale one as long to get in).
            wait_for(lambda: "fresh" in _names(n0), 60, message=fresh.describe)
            # The stale node's join attempts arrive and are dropped unread, and it stays out.
            wait_for(lambda: _gossip_drops(n0).get("unknown_key", 0) >= 1, 60, message=stale.describe)
            assert "stale" not in _names(n0)
            # n1 restarted comes back on the ring it kept, though it is started with the old token.
            n1.terminate()
            n1.restart()
            wait_for(lambda: _alive(n0, n1.node_id), 60, message=n1.describe)
        finally:
            stop_agents(fresh, stale)


def _names(agent: AgentProcess) -> set[str]:
    return {m["name"] for m in agent.view()["members"] if m["status"] == "alive"}


def _alive(observer: AgentProcess, node_id: str) -> bool:
    return observer.statuses().get(node_id) == "alive"


def _gossip_drops(agent: AgentProcess) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in agent.get("/metrics").text.splitlines():
        if line.startswith("meshnode_gossip_dropped_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = float(line.rsplit(" ", 1)[1])
    return counts


def stop_agents(*agents: AgentProcess) -> None:
    for agent in agents:
        agent.stop_all()

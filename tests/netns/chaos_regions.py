"""Chaos scenario on geography: two regions 20 ms apart, and where requests entering one of them run.

Four agents on one bridge, labelled ``--region a`` (n0, n1) and ``--region b`` (n2, n3); n1 and n3
each pin a narrow replica (two slots, a queue of two). Every agent's host runs ``chaos_delay.py``,
which holds each byte to or from the other region 10 ms in each direction (a 20 ms round trip, for
gossip and the data plane alike), since this kernel has no ``tc netem``. The load enters n0, in
region a, which has no replica of its own, in three phases:

- ``stay``: as many clients as n1 has slots: n1 has room, so requests should stay in region a;
- ``spill``: more clients than n1 admits: the excess should cross to n3;
- ``kill``: the same load while n1 is killed (requests in flight then run again on n3);
- ``failover``: after the kill, region a has no replica left (pinned replicas only, so none
  replaces it), and every request must cross to n3, none failing.

The share of requests that crossed comes from ``X-Mesh-Route`` (the last hop ran the request).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.agents import wait_for
from tests.netns.chaos import DEPLOYMENT, LOAD_OPTIONS, NARROW_APP, ChaosMesh
from tests.netns.chaos_load import LoadStats, Outcome, Plan
from tests.netns.netns import Bridge

__all__ = ["ONE_WAY_S", "crossed", "regions"]

REGIONS = ("a", "a", "b", "b")
ENTRY, LOCAL, REMOTE = 0, 1, 3
# Half of the round trip between the regions.
ONE_WAY_S = 0.010
DELAY_PROXY = Path(__file__).with_name("chaos_delay.py")
DELAY_PORT = 7999
NARROW_SLOTS = 2
NARROW_CAPACITY = 4
SERVICE_S = 0.1
READY_TIMEOUT_S = 30.0
# Times a fresh connection's GET /health from the entry's host to a node of each region.
TIMER = """
import json, statistics, sys, time, urllib.request
def took(url):
    began = time.monotonic()
    urllib.request.urlopen(url, timeout=5).read()
    return (time.monotonic() - began) * 1000
urls = json.loads(sys.argv[1])
print(json.dumps({name: statistics.median([took(url) for _ in range(5)]) for name, url in urls.items()}))
"""


def crossed(stats: LoadStats, remote: str) -> float:
    """The share of a load's requests that ran on ``remote`` (the other region's replica)."""
    return round(stats.served_by.get(remote, 0) / max(stats.requests, 1), 3)


def regions(workdir: Path, plan: Plan) -> Outcome:
    """Stay, spill and fail over between two regions 20 ms apart, under load entering region a."""
    with Bridge("mncg", len(REGIONS) + 1) as net:
        extra: dict[int, list[str]] = {}
        for index, region in enumerate(REGIONS):
            extra[index] = ["--region", region]
            if index in (LOCAL, REMOTE):
                extra[index] += ["--deploy", f"{DEPLOYMENT}={NARROW_APP}"]
        mesh = ChaosMesh(net, workdir, len(REGIONS), extra_args=extra)
        _delay(mesh, workdir)
        mesh.form()
        mesh.wait_replicas(DEPLOYMENT, 2)
        names = mesh.names
        timed = _time_regions(mesh)
        body = {"delay_s": SERVICE_S}
        stats: dict[str, LoadStats] = {}
        for phase, clients in (("stay", NARROW_SLOTS), ("spill", NARROW_CAPACITY + NARROW_SLOTS)):
            load = mesh.load([ENTRY], concurrency=clients, **{**LOAD_OPTIONS, "body": body})
            load.wait_flowing()
            load.at(plan.load_s)
            stats[phase] = load.stop()
        mark = mesh.mark()
        load = mesh.load([ENTRY], concurrency=NARROW_SLOTS, **{**LOAD_OPTIONS, "body": body})
        load.wait_flowing()
        load.at(plan.fault_at_s)
        mesh.kill(LOCAL)
        killed_at = time.monotonic()
        # Only requests sent after the kill count as failover: none of them could run on n1.
        failover = mesh.load([ENTRY], concurrency=NARROW_SLOTS, **{**LOAD_OPTIONS, "body": body})
        stats["kill"] = load.stop()
        survivors = [index for index in range(len(REGIONS)) if index != LOCAL]
        expected = {names[i]: "alive" for i in survivors} | {names[LOCAL]: "dead"}
        mesh.wait_members(expected, survivors)
        recover_s = time.monotonic() - killed_at
        failover.at(plan.load_s)
        stats["failover"] = failover.stop()
        spared = names[LOCAL]
        return Outcome(
            f"two regions {2 * ONE_WAY_S * 1000:g} ms apart",
            stats,
            round(recover_s, 1),
            mesh.suspected(mark, spared=lambda name: name == spared),
            {
                "crossed": {phase: crossed(s, names[REMOTE]) for phase, s in stats.items()},
                "served_by": {phase: dict(s.served_by) for phase, s in stats.items()},
                "health_ms": timed,
            },
            mesh.logs(),
        )


def _delay(mesh: ChaosMesh, workdir: Path) -> None:
    """Start a delay proxy on every agent's host, towards the other region's hosts; wait for all."""
    ready = []
    for index, region in enumerate(REGIONS):
        remotes = [mesh.net.addresses[i] for i, other in enumerate(REGIONS) if other != region]
        marker = workdir / f"delay{index}.ready"
        command = [sys.executable, str(DELAY_PROXY), "--port", str(DELAY_PORT), "--delay-s", str(ONE_WAY_S)]
        command += ["--seed", str(index), "--ready-file", str(marker)]
        for address in remotes:
            command += ["--remote", address]
        with (workdir / f"delay{index}.log").open("wb") as log:
            mesh.net.exec(
                mesh.hosts[index], command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        ready.append(marker)
    wait_for(
        lambda: all(marker.exists() for marker in ready),
        READY_TIMEOUT_S,
        interval=0.1,
        message=lambda: "\n".join((workdir / f"delay{i}.log").read_text() for i in range(len(REGIONS))),
    )


def _time_regions(mesh: ChaosMesh) -> dict[str, float]:
    """Median ms of a fresh GET /health from the entry's host to the other node of each region."""
    urls = {"same_region": mesh.url(LOCAL) + "/health", "other_region": mesh.url(REMOTE) + "/health"}
    result = subprocess.run(
        ["ip", "netns", "exec", mesh.hosts[ENTRY], sys.executable, "-c", TIMER, json.dumps(urls)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {name: round(ms, 1) for name, ms in json.loads(result.stdout).items()}

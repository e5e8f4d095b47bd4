"""Issue 15, serving: a node behind NAT serves requests that enter the cloud, through its relays.

The topology and agents of test_netns_nat.py (harness: tests/netns/nat_mesh.py), with h0 hosting
the mesh's only replica of ``echo``. Nobody can dial h0, so every request that enters a cloud node
reaches h0 over a connection h0 opened: to the entry itself when the entry is one of h0's relays,
else through one relay (``X-Mesh-Route`` "c1,c0,h0"). A loader inside the entry's namespace posts
one request after another and writes a line for each (status, route, whether it was echoed), so a
test checks every request, also those that were in flight when a relay was killed.

Each test runs with h0 keeping two relays (the default: both cloud nodes, so every request goes
straight from its entry to h0) and keeping one (``--set relay_count=1``: a request entering the
other cloud node crosses the relay, and killing the relay makes h0 move to the survivor).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns.nat_mesh import (
    CLOUD,
    HOME,
    RELAY_LOSS_S,
    NatMesh,
    hold,
    nat_mesh,
    never_left_alive,
    relays_of_home,
    wait_relayed,
)

pytestmark = pytest.mark.netns

# A few seconds into each cloud node: hundreds of requests, enough to see every route they take.
LOAD_EACH_S = 4.0
MIN_SERVED_EACH = 5
# Load flows this long before the kill, so the kill lands among requests, not before the first.
BEFORE_KILL_S = 2.0
MIN_SERVED_BEFORE_KILL = 3
# The load outlasts the watch after the kill a little, so requests flow through all of it.
LOAD_THROUGH_KILL_S = BEFORE_KILL_S + RELAY_LOSS_S + 1.0
MIN_SERVED_THROUGH_KILL = 20
MIN_SERVED_AFTER_KILL = 10
FIRST_FAILURES_SHOWN = 5
# With one relay, h0 takes the survivor as its relay about 0.8 s after the kill; requests entering
# the survivor meanwhile wait for that (dataplane/via_relays.py) instead of failing.


@pytest.fixture(params=[2, 1], ids=["two-relays", "one-relay"])
def mesh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NatMesh]:
    with nat_mesh(tmp_path, "mnnats", serve_echo=True, home_relay_count=request.param) as started:
        started.wait_home_alive()
        wait_relayed(started)
        took = started.wait_echo_ready()
        print(f"h0's echo ready in both cloud views {took:.1f} s after h0 was relayed")
        yield started


def failed(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The requests that were not answered 200 with their own text echoed."""
    return [record for record in results if record["status"] != 200 or not record["echoed"]]


def report(mesh: NatMesh, path: Path) -> str:
    """The diagnosis, the first failed requests of the load writing to ``path`` and its last lines."""
    first = "\n".join(json.dumps(record) for record in failed(mesh.load_results(path))[:FIRST_FAILURES_SHOWN])
    return f"{mesh.diagnosis()}\n--- first failed requests:\n{first or '(none)'}\n{mesh.load_tail(path)}"


def latency_p50_ms(results: list[dict[str, Any]]) -> float:
    """The median time from sending a request to its answer, in milliseconds."""
    return statistics.median(record["done"] - record["t"] for record in results) * 1000


def figures(results: list[dict[str, Any]]) -> str:
    """Requests served and their median and longest latency, for -s output."""
    longest = max(record["done"] - record["t"] for record in results) * 1000
    return f"{len(results)} requests, p50 {latency_p50_ms(results):.1f} ms, max {longest:.0f} ms"


@pytest.mark.timeout(300)
def test_requests_entering_either_cloud_node_are_served_by_the_home_node(mesh: NatMesh) -> None:
    seen: set[str] = set()
    for entry in CLOUD:
        path = mesh.start_load(entry, LOAD_EACH_S)
        results = mesh.wait_load(path, LOAD_EACH_S)
        assert len(results) >= MIN_SERVED_EACH, f"{len(results)} requests into {entry}\n{report(mesh, path)}"
        assert failed(results) == [], f"{len(failed(results))} failed\n{report(mesh, path)}"
        other = next(name for name in CLOUD if name != entry)
        # At most one relay hop: straight to h0 when the entry relays it, else through the other.
        allowed = {f"{entry},{HOME}", f"{entry},{other},{HOME}"}
        routes = {record["route"] for record in results}
        assert routes <= allowed, f"routes {routes}, expected some of {allowed}\n{report(mesh, path)}"
        print(f"into {entry}: {figures(results)}, routes {sorted(routes)}")
        seen |= routes
    if mesh.home_relay_count == 1:  # the cloud node that is not h0's relay sends through the one that is
        assert any(route.count(",") == 2 for route in seen), f"no request crossed a relay: {seen}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mesh", [2, 1], ids=["two-relays", "one-relay"], indirect=True)
def test_killing_a_relay_of_the_home_node_loses_no_request_entering_the_other(mesh: NatMesh) -> None:
    relays = relays_of_home(mesh, "c0")
    victim = mesh.name_of(relays[0])
    survivor = next(name for name in CLOUD if name != victim)
    print(f"h0's relays as c0 sees them: {[mesh.name_of(r) for r in relays]}; killing {victim}")
    suspicions = mesh.suspicions_of(HOME, (survivor,))

    path = mesh.start_load(survivor, LOAD_THROUGH_KILL_S)
    started = time.monotonic()

    def flowing(*names: str) -> str | None:
        mesh.check_running(*names)
        results = mesh.load_results(path)
        return f"{len(failed(results))} requests failed\n{report(mesh, path)}" if failed(results) else None

    hold(BEFORE_KILL_S, flowing)
    before = len(mesh.load_results(path))
    assert before >= MIN_SERVED_BEFORE_KILL, f"{before} requests before the kill\n{report(mesh, path)}"

    mesh.kill(victim)
    killed = time.monotonic()
    moved: list[float] = []

    def served_and_kept_alive() -> str | None:
        if (problem := flowing(survivor, HOME)) is not None:
            return problem
        if (problem := never_left_alive(mesh, killed, [(survivor, HOME)])) is not None:
            return f"{problem}\n{mesh.load_tail(path)}"
        if mesh.suspicions_of(HOME, (survivor,)) != suspicions:
            return f"{survivor} logged a suspicion of h0 after {victim} died\n{mesh.diagnosis()}"
        current = relays_of_home(mesh, survivor)
        if not moved and current and mesh.ids[victim] not in current:
            moved.append(time.monotonic() - killed)
        return None

    hold(RELAY_LOSS_S, served_and_kept_alive)
    results = mesh.wait_load(path, LOAD_THROUGH_KILL_S - (time.monotonic() - started))
    assert failed(results) == [], f"{len(failed(results))} requests failed\n{report(mesh, path)}"
    after = [record for record in results if record["t"] > killed]
    assert len(results) >= MIN_SERVED_THROUGH_KILL, f"{len(results)} requests in all\n{report(mesh, path)}"
    assert len(after) >= MIN_SERVED_AFTER_KILL, (
        f"{len(after)} requests sent after the kill\n{report(mesh, path)}"
    )
    assert moved, f"h0's relays in {survivor}'s view still name {victim} (or none)\n{mesh.diagnosis()}"
    routes = sorted({record["route"] for record in results})
    print(f"into {survivor} through {victim}'s SIGKILL: {figures(results)}, routes {routes}")
    print(f"{len(after)} sent after the SIGKILL, p50 {latency_p50_ms(after):.1f} ms")
    print(f"h0's relays in {survivor}'s view dropped {victim} {moved[0]:.1f} s after its SIGKILL")

"""``meshnode doctor`` names the right cause for each fault made on purpose, on real hosts.

One mesh of three agents (n0, n1, n2) in network namespaces on a bridge is shared by every case
(``doctor_mesh.py``); each case makes one fault, runs the doctor where an operator would, checks
that it names that cause (and, where it matters, that it does not blame something else), and
undoes the fault. In file order:

- a healthy mesh: every check passes (no false alarm to start from);
- the 224.0.0.0/4 route removed: mDNS still works (zeroconf sends on the named interface), and the
  doctor says so rather than blaming the route;
- the interface's MULTICAST flag off; UDP 5353 dropped by this machine's firewall: mDNS named;
- n2's wall clock 10 minutes ahead (libfaketime): named against the 300 s bound;
- new TCP connections to n1's data port dropped by n1's firewall, and from n0 to n2's mesh port by
  n0's: each named with its port and direction, from n0 and from n1;
- an agent with another token and one with another mesh id, each seeding n0, and a seed that does
  not resolve: each named (the seed probe, the drop counters, mDNS's mesh id);
- an agent advertising an address nobody can dial (as behind NAT): named;
- an agent started on a copy of n1's data dir (the same node id): named. Last: it disturbs n1.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Iterator

import pytest

from tests.integration.agents import wait_for
from tests.netns.chaos_clock import faketime_library
from tests.netns.doctor_mesh import DATA_PORT, MESH_PORT, PHASE_TIMEOUT_S, POLL_INTERVAL_S, DoctorMesh
from tests.netns.netns import Bridge, require_netns

pytestmark = pytest.mark.netns

HOSTS = 7  # n0, n1, n2; then one host for each agent a case adds (x, y, w, the copy of n1)
AHEAD_S = 600  # past the 300 s bound by minutes
REFUTED = 5  # refutations of n1 before the doctor looks at its copy (doctor_checks.DUPLICATE_TOTAL)
# Those come about one per push-pull, which the copy runs every 2 s (the local profile's 10 s made
# five take 50 s and more, past the usual 60 s phase bound once on two busy cores). Only a failing
# run waits this long.
REFUTED_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DoctorMesh]:
    require_netns()
    if faketime_library() is None:
        pytest.skip("libfaketime is missing (apt-get install faketime)")
    workdir = tmp_path_factory.mktemp("doctor")
    with Bridge("mndoc", HOSTS) as net:
        mesh = DoctorMesh(net, workdir)
        started = time.monotonic()
        mesh.form()
        print(f"mesh formed with a key everywhere in {time.monotonic() - started:.1f} s")
        yield mesh


def test_a_healthy_mesh_passes_every_check(mesh: DoctorMesh) -> None:
    seed = f"{mesh.net.addresses[1]}:{MESH_PORT}"
    found = mesh.doctor("n0", "--seed", seed)
    assert found.code == 0, found
    assert found.find("firewall", "both ways between n0 and 2 peer(s)", level="ok"), found
    assert found.find("mdns", "2 other node(s) of this mesh", level="ok"), found
    assert found.find("seed", "is a meshnode of this mesh: n1", level="ok"), found
    for check in ("peers", "reach", "token", "trust", "id", "clock"):
        assert found.levels(check) == ["ok"], f"{check}:\n{found}"


def test_a_removed_multicast_route_is_not_blamed_since_mdns_still_works(mesh: DoctorMesh) -> None:
    mesh.ip("n0", "route", "del", "224.0.0.0/4", "dev", "eth0")
    try:
        found = mesh.doctor("n0")
    finally:
        mesh.ip("n0", "route", "add", "224.0.0.0/4", "dev", "eth0")
    assert found.levels("mdns") == ["ok"] and found.find("mdns", "2 other node(s)"), found


def test_an_interface_without_multicast_is_named(mesh: DoctorMesh) -> None:
    mesh.ip("n0", "link", "set", "eth0", "multicast", "off")
    try:
        found = mesh.doctor("n0")
    finally:
        mesh.ip("n0", "link", "set", "eth0", "multicast", "on")
    assert found.code == 1
    assert found.find("mdns", "eth0", "no MULTICAST flag", "ip link set eth0 multicast on", level="fail"), (
        found
    )


def test_mdns_dropped_by_this_machine_s_firewall_is_named(mesh: DoctorMesh) -> None:
    mesh.nft("n0", "chain input { type filter hook input priority 0; udp dport 5353 drop; }")
    try:
        found = mesh.doctor("n0")
    finally:
        mesh.unnft("n0")
    assert found.code == 1
    assert found.find("mdns", "does not even find this node", "UDP port 5353", level="fail"), found
    assert found.levels("firewall") == ["ok"], found  # TCP is fine: only mDNS is dropped


def test_a_clock_past_the_bound_is_named(mesh: DoctorMesh) -> None:
    mesh.clock.write_text(f"+{AHEAD_S}\n")
    try:
        wait_for(lambda: _ahead(mesh, "n2") > AHEAD_S - 5, PHASE_TIMEOUT_S, POLL_INTERVAL_S, mesh.diagnosis)
        found = mesh.doctor("n0")
    finally:
        mesh.clock.write_text("+0\n")
    assert found.code == 1
    assert found.find("clock", "n2's clock is", "ahead of n0's", "bound of 300 s", level="fail"), found
    assert found.levels("clock").count("fail") == 1, found  # n1's clock is fine
    wait_for(lambda: abs(_ahead(mesh, "n2")) < 5, PHASE_TIMEOUT_S, POLL_INTERVAL_S, mesh.diagnosis)


def test_a_firewall_dropping_a_port_is_named_with_the_port_and_the_direction(mesh: DoctorMesh) -> None:
    # New connections only: the mesh's own connections stay up, so only fresh dials see the drop.
    mesh.nft(
        "n1", f"chain input {{ type filter hook input priority 0; tcp dport {DATA_PORT} ct state new drop; }}"
    )
    n2 = mesh.net.addresses[2]
    mesh.nft(
        "n0",
        "chain output { type filter hook output priority 0; "
        f"ip daddr {n2} tcp dport {MESH_PORT} ct state new drop; }}",
    )
    try:
        from_n0 = mesh.doctor("n0")
        from_n1 = mesh.doctor("n1")
    finally:
        mesh.unnft("n0")
        mesh.unnft("n1")
    assert from_n0.code == 1
    dropped = "no answer within"
    assert from_n0.find("firewall", "n0 → n1: TCP to n1's data port", dropped, level="fail"), from_n0
    assert from_n0.find("firewall", "n0 → n2: TCP to n2's mesh port", dropped, level="fail"), from_n0
    # The other directions and ports work, and are not blamed.
    blamed = [f["detail"] for f in from_n0.findings if f["check"] == "firewall" and f["level"] == "fail"]
    assert len(blamed) == 2, from_n0
    # From n1: both peers fail to reach its data port, so the drop is on its own machine, inbound.
    inbound = from_n1.find(
        "firewall", "n0, n2 → n1: TCP to n1's data port", "on n1's machine, inbound", level="fail"
    )
    assert inbound is not None, from_n1


def test_seeds_of_another_token_another_mesh_id_or_no_name_are_named(mesh: DoctorMesh) -> None:
    mesh.start("x", 3, token=secrets.token_urlsafe(32), seeds=[0])  # same mesh id: mDNS finds it
    mesh.start("y", 4, mesh_id=f"{mesh.mesh_id}-other", seeds=[0])  # same token
    x, y = (f"{mesh.net.addresses[host]}:{MESH_PORT}" for host in (3, 4))
    try:
        # Each has tried to join n0 (its seed) and been dropped unread, each for its reason.
        wait_for(
            lambda: _dropped(mesh, "n0", "unknown_key") and _dropped(mesh, "n0", "forged"),
            PHASE_TIMEOUT_S,
            POLL_INTERVAL_S,
            mesh.diagnosis,
        )
        found = mesh.doctor("n0", "--seed", x, "--seed", y, "--seed", "nohost.invalid:8471")
    finally:
        mesh.stop("x")
        mesh.stop("y")
    assert found.code == 1
    for seed in (x, y):
        assert found.find("seed", f"{seed} takes TCP connections but does not answer gossip", level="fail"), (
            found
        )
    assert found.find("seed", "nohost.invalid:8471: cannot resolve host", level="fail"), found
    assert found.find("trust", "a node with another token sends to it", "unknown_key"), found
    assert found.find("trust", "a node with the same token and another --mesh-id", "forged"), found
    assert found.find("mdns", f"finds y ({y}) of mesh id '{mesh.mesh_id}-other'", level="warn"), found


def test_an_address_peers_cannot_dial_is_named(mesh: DoctorMesh) -> None:
    nobody = mesh.net.addresses[0].rsplit(".", 1)[0] + ".250"  # on the subnet, and no host has it
    advertise = ["--advertise-mesh", f"{nobody}:{MESH_PORT}", "--advertise-data", f"{nobody}:{DATA_PORT}"]
    mesh.start("w", 5, seeds=[0], mdns=False, extra=advertise)
    try:
        wait_for(lambda: _relayed(mesh, "w"), PHASE_TIMEOUT_S, POLL_INTERVAL_S, mesh.diagnosis)
        found = mesh.doctor("w")
    finally:
        mesh.stop("w")
    assert found.find("reach", f"no peer could dial this node at {nobody}:{MESH_PORT}", "NAT"), found
    assert found.find(
        "address", f"{nobody}:{MESH_PORT}, which is not an address of its machine", level="warn"
    ), found
    assert found.find("firewall", "→ w: TCP to w's mesh port", level="warn"), found  # known: relayed


def test_a_copied_data_dir_is_named_as_a_duplicate_node_id(mesh: DoctorMesh) -> None:
    copy = mesh.workdir / "n1-copy"
    shutil.copytree(mesh.workdir / "n1", copy)
    # The copy exchanges full state every 2 s, not the profile's 10 s: each exchange with n1 or a
    # node that heard of it makes one of them refute, so the fifth refutation comes in seconds.
    faster = ["--set", "push_pull_interval_s=2"]
    mesh.start("n1-copy", 6, seeds=[2], mdns=False, data_dir=copy, extra=faster)
    copied_at = f"{mesh.net.addresses[6]}:{MESH_PORT}"
    try:
        # The two refute each other whenever one hears of the other (each push-pull, 10 s here): let
        # it happen a few times, as it has by the time anyone wonders why the node flaps.
        wait_for(
            lambda: _claimed(mesh, copied_at) and _refutations(mesh, "n1") >= REFUTED,
            REFUTED_TIMEOUT_S,
            POLL_INTERVAL_S,
            mesh.diagnosis,
        )
        found = mesh.doctor("n1")
    finally:
        mesh.stop("n1-copy")
    assert found.code == 1
    duplicate = found.find("id", "another process", level="fail")
    assert duplicate is not None and "--data-dir" in duplicate["fix"], found
    assert copied_at in duplicate["detail"] or "refuted" in duplicate["detail"], found


def _ahead(mesh: DoctorMesh, name: str) -> float:
    """How far agent `name`'s wall clock is ahead of this one's, by its ``/v1/doctor``."""
    return float(json.loads(mesh.ask(name, "/v1/doctor"))["time_ms"]) / 1000 - time.time()


def _refutations(mesh: DoctorMesh, name: str) -> float:
    metrics = mesh.ask(name, "/metrics")
    line = next((line for line in metrics.splitlines() if line.startswith("meshnode_refutations_total")), "")
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


def _dropped(mesh: DoctorMesh, name: str, reason: str) -> bool:
    metrics = mesh.ask(name, "/metrics")
    line = next(
        (line for line in metrics.splitlines() if f'gossip_dropped_total{{reason="{reason}"}}' in line), ""
    )
    return bool(line) and float(line.rsplit(" ", 1)[1]) > 0


def _relayed(mesh: DoctorMesh, name: str) -> bool:
    view = mesh.view(name)
    me = next((m for m in view["members"] if m["id"] == view["self"]), None) if view else None
    return mesh.reach(name) == "relayed" and me is not None and bool(me["relays"])


def _claimed(mesh: DoctorMesh, addr: str) -> bool:
    """Whether a peer of n1 has held n1's id at `addr` (the copy's address) by now."""
    for peer in ("n0", "n2"):
        view = mesh.view(peer)
        if view is None:
            continue
        n1 = next((m for m in view["members"] if m["name"] in ("n1", "n1-copy")), None)
        if n1 is not None and n1["mesh"] == addr:
            return True
    return False

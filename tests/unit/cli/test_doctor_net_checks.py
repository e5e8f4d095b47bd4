"""``meshnode doctor``'s checks of the network: seeds, ports both ways, views, clocks, mDNS."""

from __future__ import annotations

from meshnode.cli.doctor_facts import (
    Advertised,
    ClockSample,
    DialPair,
    Interface,
    MdnsProbe,
    NodeFacts,
    PeerProbe,
    SeedProbe,
    Seen,
    Tried,
)
from meshnode.cli.doctor_net_checks import (
    clock_findings,
    firewall_findings,
    mdns_findings,
    seed_findings,
    view_asymmetry_findings,
)

ANSWERS = "it takes TCP connections but sends no gossip back: ..."
OK = Tried("10.0.0.2:8471", "ok", "connected")
DROPPED = Tried("10.0.0.2:8471", "timeout", "no answer within 2 s")
FACTS = NodeFacts("me", "lab", True, ("10.0.0.1",), (), 300.0)


def dials(mesh: Tried = OK, data: Tried = OK) -> DialPair:
    return DialPair(mesh, data)


def peer(name: str, out: DialPair | None = None, back: DialPair | None = None, **extra: object) -> PeerProbe:
    fields: dict[str, object] = {"status": "alive", "reach": "direct", **extra}
    return PeerProbe(name, name, out=out or dials(), back=back or dials(), **fields)  # type: ignore[arg-type]


# -- seeds ---------------------------------------------------------------------------------------


def test_a_seed_that_does_not_resolve_or_answer_tcp_fails_with_its_reason_and_fix() -> None:
    [unresolved] = seed_findings(SeedProbe("nohost:8471", "cannot resolve host 'nohost'", None), "lab", None)
    assert unresolved.level == "fail" and "cannot resolve" in unresolved.detail and "DNS" in unresolved.fix
    [refused] = seed_findings(
        SeedProbe("h:8471", "nothing listens on its port (connection refused)", None), "lab", None
    )
    assert refused.level == "fail" and "start the agent" in refused.fix
    [dropped] = seed_findings(
        SeedProbe("h:8471", "its port does not answer TCP within 2 s", None), "lab", None
    )
    assert dropped.level == "fail" and "firewall" in dropped.fix


def test_a_seed_that_answers_tcp_but_not_this_mesh_s_gossip_names_token_or_mesh_id() -> None:
    [silent] = seed_findings(SeedProbe("h:8471", ANSWERS, False), "lab", None)
    assert silent.level == "fail"
    assert "another token or --mesh-id" in silent.detail and "'lab'" in silent.detail
    assert "sealed" in silent.tried


def test_a_seed_of_this_mesh_is_ok_and_a_node_not_seeded_with_it_is_told() -> None:
    answer = Seen("s" * 32, "seed", "10.0.0.2:8471", "alive")
    probe = SeedProbe("10.0.0.2:8471", ANSWERS, True, answer, (answer,))
    [ok] = seed_findings(probe, "lab", ["10.0.0.2:8471"])
    assert ok.level == "ok" and "seed (ssssssss) answered" in ok.detail
    ok, hint = seed_findings(probe, "lab", [])
    assert hint.level == "warn" and "--seed 10.0.0.2:8471" in hint.fix
    assert len(seed_findings(probe, "lab", [], alive={"s" * 32})) == 1  # it found the seed anyway


def test_without_a_token_the_seed_s_gossip_is_not_tried() -> None:
    [finding] = seed_findings(SeedProbe("h:8471", ANSWERS, None), "lab", None)
    assert finding.level == "warn" and "--token-file" in finding.fix


# -- ports both ways -------------------------------------------------------------------------------


def test_ports_open_both_ways_are_one_ok_line() -> None:
    [finding] = firewall_findings([peer("b"), peer("c")], "a")
    assert finding.level == "ok" and "both ways between a and 2 peer(s)" in finding.detail


def test_a_peer_whose_mesh_port_drops_inbound_is_named_with_port_and_direction() -> None:
    found = firewall_findings([peer("b", out=dials(mesh=DROPPED)), peer("c")], "a")
    failed = [f for f in found if f.level == "fail"]
    assert len(failed) == 1
    assert "a → b: TCP to b's mesh port 10.0.0.2:8471: no answer within 2 s" in failed[0].detail
    assert (
        "a firewall drops it (a's outbound or b's inbound)" in failed[0].fix
        and "TCP port 8471" in failed[0].fix
    )


def test_every_peer_failing_from_the_node_points_at_the_node_s_outbound() -> None:
    found = firewall_findings([peer("b", out=dials(data=DROPPED)), peer("c", out=dials(data=DROPPED))], "a")
    assert all("on a's machine, outbound: every peer fails" in f.fix for f in found if f.level == "fail")
    assert all("data port" in f.detail for f in found if f.level == "fail")


def test_peers_that_cannot_dial_the_node_point_at_its_inbound() -> None:
    back = dials(mesh=Tried("10.0.0.1:8471", "timeout", "no answer within 2 s"))
    found = firewall_findings([peer("b", back=back), peer("c", back=back)], "a")
    assert [f.level for f in found] == ["fail"]  # one address dialed by both: one line
    assert "b, c → a: TCP to a's mesh port 10.0.0.1:8471: no answer within 2 s" in found[0].detail
    assert "on a's machine, inbound: no peer reaches it" in found[0].fix
    # A node reached through relays knows nobody can dial it: the same lines, as warnings.
    assert [f.level for f in firewall_findings([peer("b", back=back)], "a", relayed=True)] == ["warn"]


def test_a_refused_or_unreachable_dial_says_what_is_wrong_at_that_address() -> None:
    refused = Tried("10.0.0.2:8472", "refused", "connection refused")
    unreachable = Tried("10.0.0.9:8472", "unreachable", "No route to host")
    [listens] = firewall_findings([peer("b", out=dials(data=refused))], "a")
    assert "nothing listens at 10.0.0.2:8472" in listens.fix and "--advertise-data" in listens.fix
    natted, fine = firewall_findings([peer("b", back=dials(data=unreachable)), peer("c")], "a")
    assert natted.level == "fail" and "behind NAT" in natted.fix and "b → a" in natted.detail
    assert fine.level == "ok" and "1 peer(s)" in fine.detail


def test_a_relayed_peer_is_not_a_firewall_fault_and_a_peer_not_asked_says_why() -> None:
    relayed = peer("laptop", out=dials(DROPPED, DROPPED), reach="relayed")
    unasked = PeerProbe("c", "c", "alive", "direct", out=dials(), asked_error="http://c wants an API key")
    found = firewall_findings([relayed, unasked], "a")
    assert [f.level for f in found] == ["warn"]  # the laptop is reached through relays, by design
    assert "c → a not tried" in found[0].detail and "--api-key" in found[0].fix


def test_a_peer_holding_the_node_dead_while_the_node_holds_it_alive_is_named() -> None:
    holds = Seen("a", "a", "10.0.0.1:8471", "dead")
    [finding] = view_asymmetry_findings([peer("b", holds_node=holds), peer("c")], "a")
    assert finding.level == "warn" and "b holds a dead" in finding.detail


# -- clocks ----------------------------------------------------------------------------------------


def test_clocks_past_the_bound_fail_within_a_fraction_warn_and_close_ones_are_ok() -> None:
    found = clock_findings(
        [("b", ClockSample(600.0, 0.01)), ("c", ClockSample(-45.0, 0.01)), ("d", ClockSample(0.2, 0.01))],
        "a",
        300.0,
    )
    assert [f.level for f in found] == ["fail", "warn"]
    assert "b's clock is 600.0 s ahead of a's, past the mesh's bound of 300 s" in found[0].detail
    assert "c's clock is 45.0 s behind a's" in found[1].detail and "NTP" in found[1].fix
    [ok] = clock_findings([("d", ClockSample(0.2, 0.01))], "a", 300.0)
    assert ok.level == "ok"


def test_an_offset_within_the_measurement_s_uncertainty_is_not_blamed() -> None:
    [finding] = clock_findings([("b", ClockSample(301.0, 2.0))], "a", 300.0)
    assert finding.level == "warn"  # 299 to 303 s apart: maybe within the bound


# -- mDNS ------------------------------------------------------------------------------------------


def interface(**fields: object) -> Interface:
    values: dict[str, object] = {"device": "eth0", "up": True, "multicast": True, **fields}
    return Interface("10.0.0.1", **values)  # type: ignore[arg-type]


def advert(node: str, mesh_id: str = "lab") -> Advertised:
    return Advertised(node, node, mesh_id, f"{node}:8471")


def test_mdns_finding_nodes_of_the_mesh_is_ok() -> None:
    [finding] = mdns_findings([MdnsProbe(interface(), 2.0, (advert("me"), advert("b")))], FACTS, local=True)
    assert finding.level == "ok" and "1 other node(s) of this mesh: b" in finding.detail


def test_an_interface_missing_down_or_without_multicast_is_named_with_its_fix() -> None:
    [missing] = mdns_findings([MdnsProbe(Interface("10.9.9.9", ""), 2.0)], FACTS, local=True)
    assert missing.level == "fail" and "not an address of this machine" in missing.detail
    [down] = mdns_findings([MdnsProbe(interface(up=False), 2.0)], FACTS, local=True)
    assert down.level == "fail" and down.fix == "ip link set eth0 up"
    found = mdns_findings([MdnsProbe(interface(multicast=False), 2.0, (advert("me"),))], FACTS, local=True)
    assert found[0].level == "fail" and found[0].fix == "ip link set eth0 multicast on"


def test_not_even_finding_the_node_itself_points_at_this_machine_s_firewall() -> None:
    [finding] = mdns_findings([MdnsProbe(interface(), 2.0)], FACTS, local=True)
    assert finding.level == "fail" and "UDP port 5353" in finding.detail
    [remote] = mdns_findings([MdnsProbe(interface(), 2.0)], FACTS, local=False)
    assert remote.level == "warn" and "finds no other node" in remote.detail


def test_only_the_node_itself_means_nobody_else_answers_on_that_segment() -> None:
    [finding] = mdns_findings([MdnsProbe(interface(), 2.0, (advert("me"),))], FACTS, local=True)
    assert finding.level == "warn" and "finds no other node" in finding.detail and "--seed" in finding.fix


def test_a_node_of_another_mesh_id_on_the_segment_is_named() -> None:
    [finding] = mdns_findings(
        [MdnsProbe(interface(), 2.0, (advert("me"), advert("x", "other")))], FACTS, True
    )
    assert finding.level == "warn" and "mesh id 'other', not this node's 'lab'" in finding.detail


def test_mdns_off_is_said_and_not_blamed_when_the_node_has_seeds() -> None:
    off = NodeFacts("me", "lab", False, (), (), 300.0)
    [alone] = mdns_findings([], off, local=True)
    assert alone.level == "warn" and "--no-mdns" in alone.detail
    seeded = NodeFacts("me", "lab", False, (), ("10.0.0.2:8471",), 300.0)
    assert mdns_findings([], seeded, local=True)[0].level == "ok"


def test_mdns_is_not_checked_for_a_remote_node_without_interfaces() -> None:
    [finding] = mdns_findings([], FACTS, local=False)
    assert finding.level == "warn" and "--interface" in finding.fix

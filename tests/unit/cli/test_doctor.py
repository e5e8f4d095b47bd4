"""``meshnode doctor``'s checks of the node itself: its view, token, drop counters, duplicate ids."""

from __future__ import annotations

from typing import Any

from meshnode.cli.doctor import findings
from meshnode.cli.doctor_checks import drop_findings, token_finding, view_findings
from meshnode.cli.doctor_facts import (
    Counters,
    DialPair,
    Finding,
    NodeFacts,
    PeerProbe,
    SeedProbe,
    Seen,
    Tried,
)
from meshnode.cli.doctor_probe import Observed, parse_counters
from meshnode.cli.doctor_suspicions import duplicate_findings, stall_findings


def member(node: str, status: str = "alive", mesh: str = "10.0.0.1:8471", **extra: Any) -> dict[str, Any]:
    return {"id": node, "name": node, "status": status, "mesh": mesh, "data": "10.0.0.1:8472", **extra}


def levels(found: list[Finding]) -> dict[str, list[str]]:
    by_check: dict[str, list[str]] = {}
    for finding in found:
        by_check.setdefault(finding.check, []).append(finding.level)
    return by_check


def test_a_direct_node_with_peers_is_all_ok() -> None:
    view = {"self": "a", "members": [member("a", reach="direct"), member("b", mesh="10.0.0.2:8471")]}
    found = view_findings(view)
    assert levels(found) == {"peers": ["ok"], "reach": ["ok"]}
    assert "peers can dial this node at 10.0.0.1:8471" in found[1].detail
    assert all(finding.tried for finding in found)


def test_members_of_a_release_before_load_news_are_named_while_alive() -> None:
    now = ["load-news"]
    members = [
        member("a", reach="direct", features=now),
        member("b", mesh="10.0.0.2:8471", features=now),
        member("old", mesh="10.0.0.3:8471", features=[]),
        member("gone", status="left", mesh="10.0.0.4:8471", features=[]),
    ]
    found = [f for f in view_findings({"self": "a", "members": members}) if f.check == "releases"]
    assert [(f.level, f.detail.split(" run")[0]) for f in found] == [("warn", "old")]
    assert "upgrade" in found[0].fix
    # A view without features at all is a node of that release's: it cannot tell, nor can the doctor.
    quiet = [member("a", reach="direct"), member("old", mesh="10.0.0.3:8471")]
    assert not [f for f in view_findings({"self": "a", "members": quiet}) if f.check == "releases"]


def test_a_node_alone_is_told_to_give_a_seed() -> None:
    [peers, reach] = view_findings({"self": "a", "members": [member("a")]})
    assert peers.level == "fail" and "--seed" in peers.fix
    assert reach.level == "warn" and "not known yet" in reach.detail


def test_a_relayed_node_is_told_its_relays_the_inbound_drop_and_how_to_be_dialed() -> None:
    view = {
        "self": "laptop",
        "members": [
            member("laptop", mesh="192.168.1.5:8471", reach="relayed", relays=["c1", "c2"]),
            member("c1", mesh="203.0.113.1:8471", reach="direct"),
            member("c2", mesh="203.0.113.2:8471", reach="direct"),
        ],
    }
    reach = next(f for f in view_findings(view) if f.check == "reach")
    assert reach.level == "ok"
    assert "reached through c1, c2" in reach.detail and "--advertise-mesh" in reach.fix
    assert "inbound TCP to its mesh port is dropped" in reach.detail


def test_a_relayed_node_without_relays_fails() -> None:
    view = {"self": "a", "members": [member("a", reach="relayed", relays=[]), member("b")]}
    reach = next(f for f in view_findings(view) if f.check == "reach")
    assert reach.level == "fail" and "no relay" in reach.detail


def test_suspect_and_dead_members_are_named_with_the_likely_cause() -> None:
    view = {
        "self": "a",
        "members": [member("a", reach="direct"), member("b", "suspect"), member("c", "dead")],
    }
    found = [f for f in view_findings(view) if f.check == "members"]
    assert [f.level for f in found] == ["warn", "warn"]
    assert "b is suspect" in found[0].detail and "c is dead" in found[1].detail
    peers = next(f for f in view_findings(view) if f.check == "peers")
    assert peers.level == "fail"  # nobody else alive


def test_a_loopback_address_advertised_to_other_machines_fails_but_on_one_machine_is_fine() -> None:
    remote = {"self": "a", "members": [member("a", mesh="127.0.0.1:8471"), member("b", mesh="10.0.0.2:8471")]}
    address = next(f for f in view_findings(remote) if f.check == "address")
    assert address.level == "fail" and "--advertise-mesh" in address.fix
    local = {"self": "a", "members": [member("a", mesh="127.0.0.1:8471"), member("b", mesh="127.0.0.1:9471")]}
    assert all(f.check != "address" for f in view_findings(local))


def test_a_wildcard_address_fails_and_one_not_of_the_machine_warns() -> None:
    wildcard = {"self": "a", "members": [member("a", mesh="0.0.0.0:8471")]}
    assert next(f for f in view_findings(wildcard) if f.check == "address").level == "fail"
    natted = {"self": "a", "members": [member("a", mesh="203.0.113.9:8471"), member("b")]}
    address = next(f for f in view_findings(natted, {"10.0.0.1", "127.0.0.1"}) if f.check == "address")
    assert address.level == "warn" and "not an address of its machine" in address.detail
    assert all(f.check != "address" for f in view_findings(natted, {"203.0.113.9"}))
    assert all(f.check != "address" for f in view_findings(natted))  # the machine's are not known


def test_a_view_without_the_node_itself_is_not_a_meshnode() -> None:
    [finding] = view_findings({"self": "a", "members": [member("b")]})
    assert finding.level == "fail"


def test_the_doctor_s_token_is_compared_with_the_node_s_keys() -> None:
    assert token_finding(["k1"], ["k1", "k0"], "$MESHNODE_TOKEN", "lab").level == "ok"
    other = token_finding(["k9"], ["k1"], "--token-file t", "lab")
    assert other.level == "warn" and "not one this node holds" in other.detail and "--token-file" in other.fix
    none = token_finding([], ["k1"], "none found", "lab")
    assert none.level == "warn" and "no token" in none.detail


def test_drops_name_another_token_or_mesh_id_and_say_whether_they_still_arrive() -> None:
    before = Counters({"unknown_key": 4.0, "forged": 2.0}, {"unauthenticated": 1.0})
    after = Counters({"unknown_key": 9.0, "forged": 2.0, "relay_no_link": 3.0}, {"unauthenticated": 1.0})
    found = drop_findings(before, after, 2.0)
    assert [(f.check, f.level) for f in found] == [("trust", "fail"), ("trust", "warn"), ("trust", "warn")]
    token, mesh_id, data = found
    assert "another token" in token.detail and "5 in the last 2 s" in token.detail
    assert (
        "another mesh id" in mesh_id.detail and "none lately" in mesh_id.detail and "--mesh-id" in mesh_id.fix
    )
    assert "data port" in data.detail
    [clean] = drop_findings(Counters(), Counters({"relay_no_link": 3.0}), 2.0)
    assert clean.level == "ok"


def test_a_duplicate_id_is_named_from_where_others_hold_it_and_from_refutations() -> None:
    me = Seen("a" * 32, "a", "10.0.0.1:8471", "alive")
    elsewhere = Seen("a" * 32, "a", "10.0.0.9:8471", "alive")
    [held] = duplicate_findings(me, 0, 2.0, [("b", me), ("seed 10.0.0.2:8471", elsewhere)])
    assert held.level == "fail" and "seed 10.0.0.2:8471 holds this node's id" in held.detail
    assert "10.0.0.9:8471" in held.detail and "--data-dir" in held.fix
    [refuting] = duplicate_findings(me, 7, 2.0, [])
    assert refuting.level == "fail" and "refuted 7 claims" in refuting.detail
    # Refuted steadily since it started: 6 in 3 minutes (a healthy node: a few a day).
    [steady] = duplicate_findings(me, 0, 2.0, [("b", me)], refuted_total=6, uptime_s=180)
    assert steady.level == "fail"
    assert "refuted 6 claims about itself since it started 3 min ago" in steady.detail
    [once] = duplicate_findings(me, 1, 2.0, [("b", me)], refuted_total=1, uptime_s=180)
    assert once.level == "warn" and "run the doctor again" in once.fix
    # A few over a long life are false suspicions after pauses, not a duplicate.
    [fine] = duplicate_findings(me, 0, 2.0, [("b", me)], refuted_total=6, uptime_s=3 * 86400)
    assert fine.level == "ok"


def test_counters_are_read_from_the_prometheus_text() -> None:
    text = (
        "# TYPE meshnode_gossip_dropped counter\n"
        'meshnode_gossip_dropped_total{reason="unknown_key"} 3.0\n'
        'meshnode_gossip_dropped_total{reason="forged"} 1.0\n'
        "# TYPE meshnode_data_dropped counter\n"
        'meshnode_data_dropped_total{reason="unauthenticated"} 2.0\n'
        "# TYPE meshnode_refutations counter\n"
        "meshnode_refutations_total 5.0\n"
        "# TYPE meshnode_stalls counter\n"
        "meshnode_stalls_total 2.0\n"
    )
    counters = parse_counters(text)
    assert counters.gossip_dropped == {"unknown_key": 3.0, "forged": 1.0}
    assert counters.data_dropped == {"unauthenticated": 2.0} and counters.refutations == 5.0
    assert counters.stalls == 2.0


def test_stalls_warn_while_the_doctor_looks_or_at_a_steady_rate_and_pauses_pass() -> None:
    hour = 3600.0
    [now] = stall_findings(Counters(stalls=4), Counters(stalls=6), 2.0, uptime_s=10 * hour)
    assert now.level == "warn" and now.check == "stalls"
    assert "2 while the doctor looked, 6 since it started 600 min ago" in now.detail
    assert "starved of CPU" in now.detail and "throttling" in now.fix
    # 12 in an hour: a node its machine keeps starving, though none happened just now.
    [steady] = stall_findings(Counters(stalls=12), Counters(stalls=12), 2.0, uptime_s=hour)
    assert steady.level == "warn" and "12 since it started 60 min ago" in steady.detail
    # Two pauses in a day (a laptop's lid, a debugger) are no starved node.
    [paused] = stall_findings(Counters(stalls=2), Counters(stalls=2), 2.0, uptime_s=24 * hour)
    assert paused.level == "ok" and "pauses, not a starved node" in paused.detail
    [never] = stall_findings(Counters(), Counters(), 2.0, uptime_s=hour)
    assert (
        never.level == "ok"
        and never.detail == "this node's failure detector ran on time while the doctor looked"
    )


def test_one_run_s_observations_become_findings_in_print_order() -> None:
    facts = NodeFacts("a", "lab", True, ("10.0.0.1",), ("10.0.0.2:8471",), 300.0)
    ok = Tried("x:1", "ok", "connected")
    peer = PeerProbe(
        "b",
        "b",
        "alive",
        "direct",
        DialPair(ok, ok),
        DialPair(ok, ok),
        Seen("a", "a", "10.0.0.1:8471", "alive"),
    )
    seen = Observed(
        view={
            "self": "a",
            "members": [member("a", reach="direct", key_ids=["k1"]), member("b", mesh="10.0.0.2:8471")],
        },
        facts=facts,
        before=Counters(),
        after=Counters(),
        window_s=2.0,
        peers=[peer],
        seeds=[
            SeedProbe("10.0.0.2:8471", "it takes TCP connections but ...", True, Seen("b", "b", "x", "alive"))
        ],
    )
    found = findings(seen, ["k1"], "$MESHNODE_TOKEN", machine=None)
    assert [f.check for f in found] == [
        "peers",
        "reach",
        "token",
        "trust",
        "id",
        "stalls",
        "firewall",
        "seed",
        "mdns",
    ]
    assert {f.level for f in found[:-1]} == {"ok"}
    assert "mDNS not checked" in found[-1].detail


def test_a_node_that_does_not_answer_is_one_failure() -> None:
    [finding] = findings(Observed(view_error="cannot reach a meshnode at http://x"), [], "", machine=set())
    assert finding.level == "fail" and "meshnode join" in finding.detail

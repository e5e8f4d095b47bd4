"""``meshnode doctor``'s checks: what a node's view and a seed's probe say, and what to do."""

from __future__ import annotations

from typing import Any

from meshnode.cli.doctor import Finding, seed_finding, view_findings


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


def test_a_node_alone_is_told_to_give_a_seed() -> None:
    [peers, reach] = view_findings({"self": "a", "members": [member("a")]})
    assert peers.level == "fail" and "--seed" in peers.detail
    assert reach.level == "warn" and "not known yet" in reach.detail


def test_a_relayed_node_is_told_its_relays_and_how_to_be_dialed() -> None:
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
    assert "reached through c1, c2" in reach.detail and "--advertise-mesh" in reach.detail


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
    assert address.level == "fail" and "--advertise-mesh" in address.detail
    local = {"self": "a", "members": [member("a", mesh="127.0.0.1:8471"), member("b", mesh="127.0.0.1:9471")]}
    assert all(f.check != "address" for f in view_findings(local))


def test_a_view_without_the_node_itself_is_not_a_meshnode() -> None:
    [finding] = view_findings({"self": "a", "members": [member("b")]})
    assert finding.level == "fail"


def test_a_seed_that_answers_tcp_is_ok_and_one_that_does_not_says_why() -> None:
    answers = seed_finding("10.0.0.1:8471", "it takes TCP connections but sends no gossip back: ...")
    assert answers.level == "ok" and "--mesh-id and token" in answers.detail
    refused = seed_finding("10.0.0.1:8471", "nothing listens on its port (connection refused)")
    assert refused.level == "fail" and "nothing listens" in refused.detail

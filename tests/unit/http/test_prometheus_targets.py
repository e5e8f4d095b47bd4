"""GET /v1/prometheus/targets: Prometheus HTTP service discovery of every live node."""

from __future__ import annotations

import re

from meshnode.http.prometheus_targets import TARGETS_PATH, targets
from meshnode.mesh.access import Scope, need_for
from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.types import Address, NodeId, Status


def member(
    node: str, status: Status, http: str, *, tls: bool = False, region: str = "", zone: str = ""
) -> Member:
    meta = NodeMeta(name=f"name-{node}", http=http, tls=tls, region=region, zone=zone)
    return Member(NodeId(node), Address(f"{node}:1"), 0, status, 1, meta, since=0.0)


def test_one_group_per_live_node_with_its_labels_and_scheme() -> None:
    members = [
        member("b", Status.ALIVE, "10.0.0.2:8470", tls=True, region="eu", zone="eu-1"),
        member("a", Status.SUSPECT, "10.0.0.1:8470"),
        member("c", Status.DEAD, "10.0.0.3:8470"),
        member("d", Status.LEFT, "10.0.0.4:8470"),
        member("e", Status.ALIVE, ""),  # no HTTP address gossiped yet
    ]
    assert targets(members) == [
        {
            "targets": ["10.0.0.1:8470"],
            "labels": {"node": "name-a", "node_id": "a", "region": "", "zone": "", "__scheme__": "http"},
        },
        {
            "targets": ["10.0.0.2:8470"],
            "labels": {
                "node": "name-b",
                "node_id": "b",
                "region": "eu",
                "zone": "eu-1",
                "__scheme__": "https",
            },
        },
    ]


def test_label_names_are_valid_prometheus_label_names() -> None:
    (group,) = targets([member("a", Status.ALIVE, "127.0.0.1:1")])
    assert all(re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name) for name in group["labels"])


def test_the_targets_and_metrics_need_the_same_key_from_other_machines() -> None:
    assert need_for("GET", TARGETS_PATH) is need_for("GET", "/metrics") is Scope.INVOKE

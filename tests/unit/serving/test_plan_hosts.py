"""Placement's view of the live nodes (``HostSet``) carries what each node's store holds."""

from __future__ import annotations

from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.serving.plans import HostSet


def test_each_host_lists_the_models_its_store_gossips() -> None:
    holder = NodeMeta(name="a", store={"tiny-sd": {"digest": "0" * 16, "bytes": 8_000_000}})
    members = [
        Member(NodeId("b"), Address("b:1"), 0, Status.ALIVE, 1, NodeMeta(name="b"), since=0.0),
        Member(NodeId("a"), Address("a:1"), 0, Status.ALIVE, 1, holder, since=0.0),
    ]
    hosts = {host.node: host for host in HostSet.of(members).hosts}
    assert hosts[NodeId("a")].models == frozenset({"tiny-sd"})
    assert hosts[NodeId("b")].models == frozenset()

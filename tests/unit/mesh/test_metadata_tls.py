"""NodeMeta's ``tls`` flag: HTTPS nodes say so, and nodes that predate the flag read as plain HTTP."""

from __future__ import annotations

import msgpack
import pytest

from meshnode.mesh.metadata import MetaError, NodeMeta


def test_a_tls_node_says_so_through_the_wire() -> None:
    meta = NodeMeta(name="node-a", http="10.0.0.2:8470", tls=True)
    decoded = NodeMeta.from_wire(msgpack.unpackb(msgpack.packb(meta.to_wire())))
    assert decoded.tls is True
    assert decoded == meta


def test_metadata_of_an_older_node_without_the_flag_reads_as_plain_http() -> None:
    """A row gossiped by a node that predates TLS has no "tls" key at all."""
    old_row = {"name": "node-a", "http": "10.0.0.2:8470", "mesh": "10.0.0.2:8471", "data": "10.0.0.2:40001"}
    meta = NodeMeta.from_wire(msgpack.unpackb(msgpack.packb(old_row)))
    assert meta.tls is False
    assert meta.http == "10.0.0.2:8470"


def test_a_plain_node_sends_false_so_newer_readers_need_no_guess() -> None:
    assert NodeMeta(name="node-a").to_wire()["tls"] is False


def test_an_older_reader_sees_only_a_key_it_ignores() -> None:
    """What older nodes do with the new key: drop unknown keys, keep every field they know."""
    row = NodeMeta(name="node-a", http="10.0.0.2:8470", zone="z", tls=True).to_wire()
    known_before_tls = {key: value for key, value in row.items() if key != "tls"}
    assert NodeMeta.from_wire(known_before_tls) == NodeMeta(name="node-a", http="10.0.0.2:8470", zone="z")


@pytest.mark.parametrize("value", [1, 0, "true", "", None, [True], {"on": True}])
def test_the_flag_must_be_a_boolean(value: object) -> None:
    with pytest.raises(MetaError, match="'tls'"):
        NodeMeta.from_wire({"name": "node-a", "tls": value})

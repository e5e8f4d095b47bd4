"""The membership wire format: what round-trips, and every way a packet is refused.

A packet that passes ``decode`` goes straight into the membership core, so every test below that
expects a rejection is a promise that such bytes never reach it; the ``reason`` is what the shell
counts, so it is checked too.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.mesh.access import ApiKey, Scope
from meshnode.mesh.bounds import MAX_META_VERSION
from meshnode.mesh.deployment import Autoscaling, DeploymentSpec, Resources
from meshnode.mesh.keyring_record import KeyringRecord
from meshnode.mesh.load_news import Load
from meshnode.mesh.metadata import MAX_DEPTH, MAX_LABEL_CHARS, NodeMeta
from meshnode.mesh.records import Record
from meshnode.mesh.replica_state import ReplicaEntry, ReplicaState
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.mesh.wire import (
    MAX_COUNTER,
    MAX_KIND,
    MAX_MESSAGES,
    PROTOCOL_VERSION,
    Ack,
    Alive,
    Dead,
    IndirectPing,
    Kind,
    MemberState,
    Message,
    Nack,
    Packet,
    Ping,
    PushPull,
    RejectReason,
    Suspect,
    WireError,
    decode,
    encode,
    encoded_size,
    message_to_list,
)

MESH = "test-mesh"
MAX_BYTES = 1 << 20
MAX_MEMBERS = 100
SENDER = NodeId("0123456789abcdef0123456789abcdef")
SENDER_ADDR = Address("127.0.0.1:8471")
PEER = NodeId("fedcba9876543210fedcba9876543210")
PEER_ADDR = Address("10.0.0.2:8471")


def node_meta(name: str = "node-a") -> NodeMeta:
    """Metadata shaped like a real node's: nested device and load summaries, models, hints."""
    return NodeMeta(
        name=name,
        http="http://10.0.0.2:8470",
        mesh=MESH,
        region="eu-west",
        zone="eu-west-1a",
        device={
            "cpu": "x86_64",
            "cores": 16,
            "memory": 128 * 2**30,
            "accelerators": [{"kind": "cuda", "name": "H100", "memory": 80 * 2**30}],
        },
        load={"cpu": 37.5, "mem_used": 4 * 2**30, "mem_total": 16 * 2**30, "in_flight": 2},
        models=("tiny-sd", "all-MiniLM-L6-v2"),
        hints=("gpu",),
        speeds={"tiny-sd": {"images_per_s": 6.5}},
    )


def one_of_each_kind() -> tuple[Message, ...]:
    """One message of every kind, the push-pull carrying a row in every status."""
    rows = tuple(
        MemberState(
            node=NodeId(f"node-{status.value}"),
            addr=Address(f"10.0.0.{i}:8471"),
            incarnation=i,
            status=status,
            meta_version=i * 10,
            meta=node_meta(f"node-{status.value}"),
        )
        for i, status in enumerate(Status, start=1)
    )
    return (
        Ping(seq=1, target=PEER),
        IndirectPing(seq=2, target=PEER, target_addr=PEER_ADDR, want_nack=True),
        Ack(seq=3),
        Nack(seq=4),
        Alive(node=PEER, incarnation=5, addr=PEER_ADDR, meta_version=6, meta=node_meta()),
        Suspect(node=PEER, incarnation=7, source=SENDER),
        Dead(node=PEER, incarnation=8, source=PEER),
        PushPull(True, False, rows, records=(RECORD, TOMBSTONE), keys=(KEY, REVOKED), keyring=RING),
        RECORD,
        KEY,
        RING,
        LOAD,
    )


ENTRY = ReplicaEntry(ReplicaState.READY, queue=3)
LOAD = Load.of(PEER, 5, 7, 6, NodeMeta(name="peer", load={"cpu": 40.5}, replicas={"echo": ENTRY}))
RECORD = Record(
    "echo",
    (1_700_000_000_000 << 16) | 3,
    PEER,
    DeploymentSpec(
        "apps/echo.py:Echo",
        min_replicas=0,
        max_replicas=4,
        resources=Resources(("cpu", "cuda"), 1.5, True),
        autoscaling=Autoscaling(3.0, 2.0, 1.0, 4.0, 30.0),
        backups=1,
        spread="zone",
    ),
)
TOMBSTONE = Record("gone", 5, SENDER, None)
RING = KeyringRecord(("a" * 32, "b" * 43), 7 << 16, SENDER)
KEY = ApiKey("0123456789ab", "ci runner", Scope.INVOKE, bytes(range(32)), 1_700_000_000_000)
REVOKED = ApiKey("ba9876543210", "", Scope.ADMIN, bytes(32), 1_700_000_000_001, revoked=True)


def encode_messages(*messages: Message) -> bytes:
    return encode(Packet(SENDER, SENDER_ADDR, messages), MESH)


def raw_packet(
    body: object,
    *,
    version: object = PROTOCOL_VERSION,
    mesh: object = MESH,
    sender: object = SENDER,
    sender_addr: object = SENDER_ADDR,
) -> bytes:
    """Bytes of a packet built by hand, so fields can hold what ``encode`` would never write."""
    return msgpack.packb([version, mesh, sender, sender_addr, body])


def decode_default(data: bytes, *, max_bytes: int = MAX_BYTES, max_members: int = MAX_MEMBERS) -> Packet:
    return decode(data, MESH, max_bytes=max_bytes, max_members=max_members)


def assert_rejected(data: bytes, reason: RejectReason, **limits: int) -> WireError:
    with pytest.raises(WireError) as caught:
        decode_default(data, **limits)
    assert caught.value.reason == reason, caught.value
    return caught.value


def alive_fields(**changes: object) -> list[Any]:
    """An alive message as a raw list, with some fields replaced."""
    fields: dict[str, object] = {
        "node": PEER,
        "incarnation": 1,
        "addr": PEER_ADDR,
        "meta_version": 0,
        "meta": node_meta().to_wire(),
    }
    fields.update(changes)
    return [Kind.ALIVE, *fields.values()]


def member_row(**changes: object) -> list[Any]:
    """A push-pull row as a raw list, with some fields replaced."""
    fields: dict[str, object] = {
        "node": PEER,
        "addr": PEER_ADDR,
        "incarnation": 1,
        "status": Status.ALIVE.value,
        "meta_version": 0,
        "meta": {"name": "peer"},
    }
    fields.update(changes)
    return list(fields.values())


# -- round trips ---------------------------------------------------------------------------


def test_every_message_kind_round_trips() -> None:
    packet = Packet(SENDER, SENDER_ADDR, one_of_each_kind())
    assert len({type(m) for m in packet.messages}) == len(Kind)
    assert decode_default(encode(packet, MESH)) == packet


def test_push_pull_rows_keep_status_and_metadata() -> None:
    (push_pull,) = decode_default(encode_messages(one_of_each_kind()[-5])).messages
    assert isinstance(push_pull, PushPull)
    assert push_pull.keys == (KEY, REVOKED)
    assert [row.status for row in push_pull.states] == list(Status)
    assert push_pull.states[0].meta.device["accelerators"][0]["name"] == "H100"
    assert push_pull.states[0].meta.load["in_flight"] == 2


def test_an_empty_packet_and_an_ipv6_sender_round_trip() -> None:
    packet = Packet(SENDER, Address("[::1]:8471"), ())
    assert decode_default(encode(packet, MESH)) == packet


def test_extreme_but_legal_values_round_trip() -> None:
    packet = Packet(
        NodeId("a"),
        Address("h:1"),
        (
            Ping(seq=MAX_COUNTER, target=NodeId("A" * 64)),
            Suspect(node=NodeId("node_1.b-2"), incarnation=0, source=NodeId("x")),
            Alive(NodeId("n"), MAX_COUNTER, Address("h:65535"), MAX_COUNTER, NodeMeta(name="n")),
        ),
    )
    assert decode_default(encode(packet, MESH)) == packet


def test_packet_layout_is_the_documented_one() -> None:
    """Peers running other builds parse this layout: pin it, field order and kind numbers included."""
    data = encode_messages(Ping(seq=9, target=PEER), Ack(seq=9))
    assert msgpack.unpackb(data) == [
        PROTOCOL_VERSION,
        MESH,
        SENDER,
        SENDER_ADDR,
        [[1, 9, PEER], [3, 9]],
    ]
    assert [int(kind) for kind in Kind] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    load = msgpack.unpackb(encode_messages(LOAD))[4]
    assert load == [[12, PEER, 5, 7, 6, {**LOAD.fields, "replicas": {"echo": [3, 0.0]}}]]


def test_encoded_size_is_what_the_message_adds_to_a_packet() -> None:
    """The piggyback budget relies on it: a packet grows by exactly this many bytes."""
    alive = Alive(PEER, 3, PEER_ADDR, 4, node_meta())
    grown = len(encode_messages(alive)) - len(encode_messages())
    assert encoded_size(alive) == grown


# -- size limits ---------------------------------------------------------------------------


def test_a_packet_of_exactly_max_bytes_is_accepted_one_more_is_oversized() -> None:
    data = encode_messages(*one_of_each_kind())
    assert decode_default(data, max_bytes=len(data)).messages
    assert_rejected(data, "oversized", max_bytes=len(data) - 1)


def test_size_is_checked_before_parsing() -> None:
    """Garbage that is also too big counts as oversized: the cheap check runs first."""
    assert_rejected(b"\xc1" * 100, "oversized", max_bytes=99)


def test_push_pull_with_max_members_rows_is_accepted_one_more_is_oversized() -> None:
    rows = [member_row(node=f"n{i}") for i in range(MAX_MEMBERS)]
    packet = decode_default(raw_packet([[Kind.PUSH_PULL, False, True, rows]]))
    (push_pull,) = packet.messages
    assert isinstance(push_pull, PushPull) and len(push_pull.states) == MAX_MEMBERS

    too_many = [*rows, member_row(node="one-more")]
    assert_rejected(raw_packet([[Kind.PUSH_PULL, False, True, too_many]]), "oversized")


def test_max_messages_is_accepted_one_more_is_refused() -> None:
    acks = [[Kind.ACK, i] for i in range(MAX_MESSAGES)]
    assert len(decode_default(raw_packet(acks)).messages) == MAX_MESSAGES
    assert_rejected(raw_packet([*acks, [Kind.ACK, 0]]), "malformed")


# -- not msgpack, or not a packet ----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(bytes(range(256)), id="every-byte"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="http-request"),
        pytest.param(b"\x00\x01\x02", id="trailing-data"),
    ],
)
def test_random_bytes_are_malformed(data: bytes) -> None:
    assert_rejected(data, "malformed")


@pytest.mark.parametrize("cut", [1, 2, 10, -1])
def test_truncated_msgpack_is_malformed(cut: int) -> None:
    data = encode_messages(*one_of_each_kind())
    assert_rejected(data[:cut], "malformed")


@pytest.mark.parametrize(
    "top",
    [
        pytest.param({"version": 1}, id="map"),
        pytest.param(1, id="integer"),
        pytest.param([PROTOCOL_VERSION, MESH, SENDER, SENDER_ADDR], id="four-items"),
        pytest.param([PROTOCOL_VERSION, MESH, SENDER, SENDER_ADDR, [], []], id="six-items"),
    ],
)
def test_a_packet_must_be_a_five_item_array(top: object) -> None:
    assert_rejected(msgpack.packb(top), "malformed")


@pytest.mark.parametrize("body", [{}, "ping", None, 3], ids=["map", "str", "nil", "integer"])
def test_the_message_list_must_be_an_array(body: object) -> None:
    assert_rejected(raw_packet(body), "malformed")


# -- version and mesh ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, 255, "1", None])
def test_another_protocol_version_is_refused_as_version(version: object) -> None:
    assert_rejected(raw_packet([], version=version), "version")


@pytest.mark.parametrize("version", [True, 1.0])
def test_version_must_be_the_integer_itself(version: object) -> None:
    """``True == 1`` and ``1.0 == 1`` in Python, but neither is what a peer of this version sends."""
    assert_rejected(raw_packet([], version=version), "version")


@pytest.mark.parametrize("mesh", ["other-mesh", "", MESH.upper(), MESH + " ", None, 1])
def test_another_mesh_is_refused_as_mesh(mesh: object) -> None:
    assert_rejected(raw_packet([[Kind.ACK, 1]], mesh=mesh), "mesh")


def test_encode_binds_the_packet_to_its_mesh() -> None:
    data = encode(Packet(SENDER, SENDER_ADDR, (Ack(1),)), "mesh-a")
    with pytest.raises(WireError) as caught:
        decode(data, "mesh-b", max_bytes=MAX_BYTES, max_members=MAX_MEMBERS)
    assert caught.value.reason == "mesh"


# -- extension types -----------------------------------------------------------------------


EXT = msgpack.ExtType(42, b"\x80\x04payload")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(msgpack.packb(EXT), id="whole-packet"),
        pytest.param(raw_packet([], sender=EXT), id="sender"),
        pytest.param(raw_packet([[Kind.PING, EXT, PEER]]), id="message-field"),
        pytest.param(
            raw_packet([alive_fields(meta={"name": "x", "device": {"blob": EXT}})]),
            id="inside-metadata",
        ),
    ],
)
def test_msgpack_extension_types_are_malformed(data: bytes) -> None:
    assert_rejected(data, "malformed")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(raw_packet([[Kind.ACK, msgpack.Timestamp(1, 0)]]), id="as-seq"),
        pytest.param(
            raw_packet([alive_fields(meta={"name": "x", "load": {"at": msgpack.Timestamp(1, 0)}})]),
            id="inside-metadata",
        ),
    ],
)
def test_the_builtin_timestamp_extension_is_malformed_too(data: bytes) -> None:
    """msgpack decodes extension -1 itself, without the ext hook; it is still an extension type."""
    assert_rejected(data, "malformed")


# -- field types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(alive_fields(incarnation="1"), id="incarnation-str"),
        pytest.param(alive_fields(incarnation=True), id="incarnation-bool"),
        pytest.param(alive_fields(incarnation=1.0), id="incarnation-float"),
        pytest.param(alive_fields(incarnation=None), id="incarnation-nil"),
        pytest.param(alive_fields(incarnation=-1), id="incarnation-negative"),
        pytest.param(alive_fields(incarnation=2**63), id="incarnation-2**63"),
        pytest.param(alive_fields(incarnation=2**64 - 1), id="incarnation-uint64-max"),
        pytest.param(alive_fields(meta_version=False), id="meta-version-bool"),
        pytest.param(alive_fields(meta_version=-5), id="meta-version-negative"),
        pytest.param([Kind.PING, True, PEER], id="seq-bool"),
        pytest.param([Kind.ACK, -1], id="seq-negative"),
        pytest.param([Kind.NACK, 2**63], id="seq-2**63"),
        pytest.param([Kind.ACK, "1"], id="seq-str"),
        pytest.param([Kind.SUSPECT, PEER, -(2**63), SENDER], id="suspect-incarnation-int64-min"),
        pytest.param([Kind.DEAD, PEER, [1], SENDER], id="dead-incarnation-array"),
    ],
)
def test_counters_must_be_non_negative_int64_and_not_bool(message: list[Any]) -> None:
    assert_rejected(raw_packet([message]), "malformed")


@pytest.mark.parametrize(
    "message",
    [
        pytest.param([Kind.INDIRECT_PING, 1, PEER, PEER_ADDR, 1], id="want-nack-1"),
        pytest.param([Kind.INDIRECT_PING, 1, PEER, PEER_ADDR, None], id="want-nack-nil"),
        pytest.param([Kind.PUSH_PULL, 0, False, []], id="reply-wanted-0"),
        pytest.param([Kind.PUSH_PULL, True, 1, []], id="join-1"),
        pytest.param([Kind.PUSH_PULL, "yes", True, []], id="reply-wanted-str"),
    ],
)
def test_flags_must_be_booleans(message: list[Any]) -> None:
    assert_rejected(raw_packet([message]), "malformed")


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(member_row(status="zombie"), id="unknown-status"),
        pytest.param(member_row(status="ALIVE"), id="status-wrong-case"),
        pytest.param(member_row(status=0), id="status-int"),
        pytest.param(member_row(status=["alive"]), id="status-array"),
        pytest.param(member_row(incarnation="3"), id="incarnation-str"),
        pytest.param(member_row(meta_version=True), id="meta-version-bool"),
        pytest.param(member_row(node=""), id="bad-node"),
        pytest.param(member_row(addr="10.0.0.2"), id="bad-addr"),
        pytest.param(member_row(meta={}), id="bad-meta"),
        pytest.param(member_row()[:5], id="five-items"),
        pytest.param([*member_row(), "extra"], id="seven-items"),
        pytest.param({"node": PEER}, id="map"),
    ],
)
def test_push_pull_rows_are_validated_like_messages(row: object) -> None:
    assert_rejected(raw_packet([[Kind.PUSH_PULL, False, False, [member_row(), row]]]), "malformed")


def test_a_push_pull_from_before_deployment_records_still_decodes() -> None:
    (push_pull,) = decode_default(raw_packet([[Kind.PUSH_PULL, False, True, [member_row()]]])).messages
    assert isinstance(push_pull, PushPull) and push_pull.records == ()


@pytest.mark.parametrize(
    "row",
    [
        ["bad name!", 1, PEER, None],
        ["echo", -1, PEER, None],
        ["echo", 1, "", None],
        ["echo", 1, PEER, {"app": ""}],
        ["echo", 1, PEER, {"app": "a.py:A", "min_replicas": 3, "max_replicas": 2}],
        ["echo", 1, PEER, {"app": "a.py:A", "surprise": 1}],
        ["echo", 1, PEER],
        "echo",
    ],
    ids=["name", "stamp", "origin", "app", "bounds", "unknown-field", "short", "not-array"],
)
def test_bad_deployment_records_are_malformed_alone_or_in_a_push_pull(row: object) -> None:
    single = [Kind.RECORD, *row] if isinstance(row, list) else [Kind.RECORD, row]
    assert_rejected(raw_packet([single]), "malformed")
    assert_rejected(raw_packet([[Kind.PUSH_PULL, False, False, [], [row]]]), "malformed")


@pytest.mark.parametrize("rows", [{}, "rows", None, 3], ids=["map", "str", "nil", "integer"])
def test_push_pull_rows_that_are_not_an_array_are_malformed(rows: object) -> None:
    """Not a list at all is a broken packet, not a big one."""
    assert_rejected(raw_packet([[Kind.PUSH_PULL, False, False, rows]]), "malformed")


# -- node ids and addresses ----------------------------------------------------------------


@pytest.mark.parametrize(
    "node_id",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 65, id="65-chars"),
        pytest.param("node a", id="space"),
        pytest.param("node/a", id="slash"),
        pytest.param("node:a", id="colon"),
        pytest.param("nöde", id="non-ascii"),
        pytest.param("node\n", id="trailing-newline"),
        pytest.param(b"node", id="bytes"),
        pytest.param(7, id="integer"),
        pytest.param(None, id="nil"),
    ],
)
def test_bad_node_ids_are_malformed_wherever_they_appear(node_id: object) -> None:
    assert_rejected(raw_packet([], sender=node_id), "malformed")
    assert_rejected(raw_packet([[Kind.PING, 1, node_id]]), "malformed")
    assert_rejected(raw_packet([[Kind.SUSPECT, PEER, 1, node_id]]), "malformed")
    assert_rejected(raw_packet([alive_fields(node=node_id)]), "malformed")


@pytest.mark.parametrize("node_id", ["a", "A" * 64, "node_1.example-2", "0123456789abcdef0123456789abcdef"])
def test_node_ids_of_1_to_64_allowed_characters_are_accepted(node_id: str) -> None:
    (ping,) = decode_default(raw_packet([[Kind.PING, 1, node_id]], sender=node_id)).messages
    assert ping == Ping(1, NodeId(node_id))


@pytest.mark.parametrize(
    "addr",
    [
        pytest.param("10.0.0.2", id="no-port"),
        pytest.param("10.0.0.2:", id="empty-port"),
        pytest.param(":8471", id="no-host"),
        pytest.param("10.0.0.2:0", id="port-0"),
        pytest.param("10.0.0.2:65536", id="port-65536"),
        pytest.param("10.0.0.2:70000", id="port-70000"),
        pytest.param("10.0.0.2:84x1", id="non-digit-port"),
        pytest.param("10.0.0.2:-1", id="negative-port"),
        pytest.param("10.0.0.2:+80", id="signed-port"),
        pytest.param("10.0.0.2: 80", id="spaced-port"),
        pytest.param("10.0.0.2:\uff18\uff10", id="fullwidth-digit-port"),
        pytest.param("10.0.0.2:\u0668\u0660", id="arabic-indic-digit-port"),
        pytest.param("10.0.0.2:\u00b2", id="superscript-port"),
        pytest.param("h" * 266 + ":8471", id="271-chars"),
        pytest.param(b"10.0.0.2:8471", id="bytes"),
        pytest.param(8471, id="integer"),
    ],
)
def test_bad_addresses_are_malformed_wherever_they_appear(addr: object) -> None:
    assert_rejected(raw_packet([], sender_addr=addr), "malformed")
    assert_rejected(raw_packet([[Kind.INDIRECT_PING, 1, PEER, addr, False]]), "malformed")
    assert_rejected(raw_packet([alive_fields(addr=addr)]), "malformed")


@pytest.mark.parametrize("addr", ["h:1", "10.0.0.2:65535", "[::1]:8471", "node.example.com:8471"])
def test_host_port_addresses_are_accepted(addr: str) -> None:
    assert decode_default(raw_packet([], sender_addr=addr)).sender_addr == addr


# -- message kinds and shapes --------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        pytest.param([0, 1], id="kind-0"),
        pytest.param([9, 1], id="kind-9"),
        pytest.param([-1, 1], id="kind-negative"),
        pytest.param([256, 1], id="kind-past-max"),
        pytest.param([2**64 - 1, 1], id="kind-uint64-max"),
        pytest.param(["ack", 1], id="kind-str"),
        pytest.param([True, 1, PEER], id="kind-bool"),
        pytest.param([3.0, 1], id="kind-float"),
        pytest.param([], id="empty-message"),
        pytest.param({"kind": 3, "seq": 1}, id="map-message"),
        pytest.param(3, id="bare-integer"),
    ],
)
def test_unknown_kinds_and_shapes_are_malformed(message: object) -> None:
    assert_rejected(raw_packet([[Kind.ACK, 1], message]), "malformed")


@pytest.mark.parametrize(
    "message",
    [
        pytest.param([Kind.LOAD, PEER, 1, 2, 1], id="short"),
        pytest.param([Kind.LOAD, PEER, 1, 2, 1, {}, 0], id="long"),
        pytest.param([Kind.LOAD, PEER, 1, 2, 2, {}], id="base-not-earlier"),
        pytest.param([Kind.LOAD, PEER, 1, 2, 3, {}], id="base-later"),
        pytest.param([Kind.LOAD, PEER, 1, 2, 1, {"device": {}}], id="not-a-load-field"),
        pytest.param([Kind.LOAD, PEER, 1, 2, 1, [["load", {}]]], id="fields-not-a-map"),
        pytest.param([Kind.LOAD, PEER, -1, 2, 1, {}], id="incarnation-negative"),
        pytest.param([Kind.LOAD, PEER, 1, MAX_META_VERSION + 1, 1, {}], id="version-past-max"),
        pytest.param([Kind.LOAD, PEER, True, 2, 1, {}], id="incarnation-bool"),
        pytest.param([Kind.LOAD, "no spaces allowed", 1, 2, 1, {}], id="bad-node-id"),
    ],
)
def test_malformed_load_news_is_malformed(message: list[Any]) -> None:
    assert_rejected(raw_packet([[Kind.ACK, 1], message]), "malformed")


@pytest.mark.parametrize("kind", [13, 19, 24, 99, MAX_KIND])
def test_a_kind_of_a_later_version_is_skipped_and_the_rest_of_the_packet_taken(kind: int) -> None:
    # A newer node may piggyback a message this version does not know on a ping: the ping counts.
    packet = decode_default(raw_packet([[Kind.PING, 7, PEER], [kind, "anything", [1, 2]], [Kind.ACK, 8]]))
    assert packet.messages == (Ping(7, NodeId(PEER)), Ack(8))


@pytest.mark.parametrize(
    "message",
    [
        pytest.param([Kind.PING, 1], id="ping-short"),
        pytest.param([Kind.PING, 1, PEER, PEER], id="ping-long"),
        pytest.param([Kind.INDIRECT_PING, 1, PEER, PEER_ADDR], id="indirect-short"),
        pytest.param([Kind.ACK], id="ack-short"),
        pytest.param([Kind.ACK, 1, 2], id="ack-long"),
        pytest.param([Kind.NACK], id="nack-short"),
        pytest.param(alive_fields()[:-1], id="alive-short"),
        pytest.param([*alive_fields(), 0], id="alive-long"),
        pytest.param([Kind.SUSPECT, PEER, 1], id="suspect-short"),
        pytest.param([Kind.DEAD, PEER, 1, SENDER, SENDER], id="dead-long"),
        pytest.param([Kind.PUSH_PULL, True, False], id="push-pull-short"),
        pytest.param([Kind.PUSH_PULL, True, False, [], [], [], None, []], id="push-pull-long"),
        pytest.param([Kind.KEYRING, 1, SENDER], id="keyring-short"),
        pytest.param([Kind.KEY, "0123456789ab"], id="key-short"),
        pytest.param([Kind.RECORD, "echo", 1, PEER], id="record-short"),
        pytest.param([Kind.RECORD, "echo", 1, PEER, None, None], id="record-long"),
    ],
)
def test_wrong_field_counts_are_malformed(message: list[Any]) -> None:
    assert_rejected(raw_packet([message]), "malformed")


def test_one_bad_message_rejects_the_whole_packet() -> None:
    """Nothing from a packet that fails reaches the core, not even its valid messages."""
    good = [message_to_list(m) for m in one_of_each_kind()]
    assert_rejected(raw_packet([*good, [Kind.ACK, -1]]), "malformed")


# -- metadata inside messages --------------------------------------------------------------


def nested_map(levels: int) -> dict[str, Any]:
    """A map nested ``levels`` maps deep, with a scalar at the bottom."""
    value: Any = 1
    for _ in range(levels):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    "meta",
    [
        pytest.param({"http": "http://x"}, id="name-missing"),
        pytest.param({"name": ""}, id="name-empty"),
        pytest.param({"name": "n" * (MAX_LABEL_CHARS + 1)}, id="name-too-long"),
        pytest.param({"name": 5}, id="name-not-str"),
        pytest.param({"name": "n", "models": "tiny-sd"}, id="models-a-string"),
        pytest.param({"name": "n", "models": ["tiny-sd", 3]}, id="models-with-int"),
        pytest.param({"name": "n", "models": {"tiny-sd": 1}}, id="models-a-map"),
        pytest.param({"name": "n", "device": nested_map(MAX_DEPTH + 1)}, id="device-too-deep"),
        pytest.param({"name": "n", "load": nested_map(200)}, id="load-far-too-deep"),
        pytest.param({"name": "n", "device": {b"gpu": 1}}, id="device-binary-key"),
        pytest.param({"name": "n", b"zone": "a"}, id="top-level-binary-key"),
        pytest.param({"name": "n", "device": [1, 2]}, id="device-not-a-map"),
        pytest.param({"name": "n", "speeds": {"x": b"\x00"}}, id="speeds-binary-value"),
        pytest.param(["n"], id="meta-an-array"),
        pytest.param(None, id="meta-nil"),
    ],
)
def test_metadata_failures_are_malformed(meta: object) -> None:
    assert_rejected(raw_packet([alive_fields(meta=meta)]), "malformed")
    assert_rejected(raw_packet([[Kind.PUSH_PULL, False, False, [member_row(meta=meta)]]]), "malformed")


def test_integer_map_keys_anywhere_are_malformed() -> None:
    assert_rejected(raw_packet([alive_fields(meta={"name": "n", "load": {1: "x"}})]), "malformed")


# -- properties ----------------------------------------------------------------------------


def decode_or_wire_error(data: bytes) -> None:
    """decode either returns a Packet or raises WireError; anything else escapes the test."""
    try:
        packet = decode_default(data, max_members=8)
    except WireError:
        return
    assert isinstance(packet, Packet)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=512))
def test_decode_of_arbitrary_bytes_raises_only_wire_error(data: bytes) -> None:
    decode_or_wire_error(data)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=256))
def test_decode_of_corrupted_valid_packets_raises_only_wire_error(noise: bytes) -> None:
    """Real packets with their tail overwritten: parses deeper than random bytes usually get."""
    data = bytearray(encode_messages(*one_of_each_kind()))
    cut = len(data) - len(noise) if len(noise) < len(data) else 0
    data[cut:] = noise
    decode_or_wire_error(bytes(data))


INT64_OR_UINT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can carry
PLAIN_SCALAR = (
    st.none()
    | st.booleans()
    | INT64_OR_UINT64
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12)
    # Values that pass some validator, so a mutated packet often gets past that check.
    | st.sampled_from([0, 1, 8, MAX_COUNTER, "n1", PEER, PEER_ADDR, "[::1]:1", "alive", "left"])
)
ANY_VALUE = st.recursive(
    PLAIN_SCALAR | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=8) | st.binary(max_size=4) | INT64_OR_UINT64, children, max_size=4)
    ),
    max_leaves=30,
)
# Like ANY_VALUE but always decodable, so mutated packets fail (if at all) in validation.
PLAIN_VALUE = st.recursive(
    PLAIN_SCALAR | st.sampled_from([{"name": "n"}, node_meta().to_wire(), nested_map(MAX_DEPTH)]),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, database=None)
@given(ANY_VALUE)
def test_decode_of_arbitrary_msgpack_values_raises_only_wire_error(value: object) -> None:
    decode_or_wire_error(msgpack.packb(value))


Path = tuple[int | str, ...]


def every_path(tree: Any, prefix: Path = ()) -> list[Path]:
    """The path of every node in a decoded structure: each list item and map value, at any depth."""
    children: list[tuple[int | str, Any]] = []
    if isinstance(tree, list):
        children = list(enumerate(tree))
    elif isinstance(tree, dict):
        children = list(tree.items())
    found = [prefix]
    for key, child in children:
        found += every_path(child, (*prefix, key))
    return found


def replace_at(tree: Any, path: Path, new: object) -> Any:
    """A copy of ``tree`` with the node at ``path`` replaced by ``new``.

    Where an earlier mutation already removed part of the path, the node where it ends is replaced.
    """
    if not path:
        return new
    key, rest = path[0], path[1:]
    if isinstance(tree, dict) and key in tree:
        return {**tree, key: replace_at(tree[key], rest, new)}
    if isinstance(tree, list) and isinstance(key, int) and key < len(tree):
        return [*tree[:key], replace_at(tree[key], rest, new), *tree[key + 1 :]]
    return new


VALID_BODY = msgpack.unpackb(encode_messages(*one_of_each_kind()))[4]
MUTATIONS = st.lists(
    st.tuples(st.sampled_from(every_path(VALID_BODY)[1:]), PLAIN_VALUE),
    min_size=1,
    max_size=3,
)


@settings(max_examples=300, deadline=None, database=None)
@given(MUTATIONS)
def test_decode_of_mutated_valid_packets_raises_only_wire_error(mutations: list[tuple[Path, Any]]) -> None:
    """Arbitrary values planted at any depth of a real packet's messages, where validators must catch them."""
    body: Any = VALID_BODY
    for path, new in mutations:
        body = replace_at(body, path, new)
    decode_or_wire_error(raw_packet(body))


ID_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
NODE_IDS = st.text(ID_CHARACTERS, min_size=1, max_size=64).map(NodeId)
ADDRESSES = st.builds(
    lambda host, port: Address(f"{host}:{port}"),
    st.sampled_from(["127.0.0.1", "[::1]", "node-1.example", "10.1.2.3"]),
    st.integers(min_value=1, max_value=65535),
)
COUNTERS = st.integers(min_value=0, max_value=MAX_COUNTER)
METAS = st.builds(
    NodeMeta,
    name=st.text(min_size=1, max_size=MAX_LABEL_CHARS),
    region=st.text(max_size=20),
    models=st.lists(st.text(max_size=20), max_size=4).map(tuple),
    load=st.dictionaries(st.text(max_size=8), st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8)),
)
MESSAGES: st.SearchStrategy[Message] = st.one_of(
    st.builds(Ping, COUNTERS, NODE_IDS),
    st.builds(IndirectPing, COUNTERS, NODE_IDS, ADDRESSES, st.booleans()),
    st.builds(Ack, COUNTERS),
    st.builds(Nack, COUNTERS),
    st.builds(Alive, NODE_IDS, COUNTERS, ADDRESSES, COUNTERS, METAS),
    st.builds(Suspect, NODE_IDS, COUNTERS, NODE_IDS),
    st.builds(Dead, NODE_IDS, COUNTERS, NODE_IDS),
    st.builds(
        PushPull,
        st.booleans(),
        st.booleans(),
        st.lists(
            st.builds(MemberState, NODE_IDS, ADDRESSES, COUNTERS, st.sampled_from(Status), COUNTERS, METAS),
            max_size=3,
        ).map(tuple),
    ),
)


@settings(max_examples=100, deadline=None, database=None)
@given(NODE_IDS, ADDRESSES, st.lists(MESSAGES, max_size=5).map(tuple))
def test_every_valid_packet_round_trips(sender: NodeId, addr: Address, messages: tuple[Message, ...]) -> None:
    packet = Packet(sender, addr, messages)
    assert decode_default(encode(packet, MESH)) == packet


def test_a_push_pull_from_a_node_without_keys_still_decodes() -> None:
    """Nodes of the version before API keys send four fields; theirs has no keys, not an error."""
    old = [Kind.PUSH_PULL, False, False, [], []]
    body = msgpack.packb([PROTOCOL_VERSION, MESH, SENDER, "127.0.0.1:1", [old]])
    (push_pull,) = decode_default(body).messages
    assert isinstance(push_pull, PushPull) and push_pull.keys == ()


@pytest.mark.parametrize(
    "row",
    [
        ["0123456789AB", "n", "invoke", bytes(32), 1, False],  # upper-case id
        ["0123456789ab", "n", "root", bytes(32), 1, False],  # unknown scope
        ["0123456789ab", "n", "invoke", bytes(31), 1, False],  # short digest
        ["0123456789ab", "n", "invoke", bytes(32), -1, False],  # negative time
        ["0123456789ab", "n", "invoke", bytes(32), 1, 1],  # revoked not a bool
        ["0123456789ab", "x" * 65, "invoke", bytes(32), 1, False],  # long name
    ],
)
def test_a_malformed_key_drops_the_packet(row: list[object]) -> None:
    body = msgpack.packb([PROTOCOL_VERSION, MESH, SENDER, "127.0.0.1:1", [[Kind.KEY, *row]]])
    with pytest.raises(WireError) as refused:
        decode_default(body)
    assert refused.value.reason == "malformed"

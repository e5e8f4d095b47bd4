"""NodeMeta: what a node says about itself survives the wire intact, and nothing unchecked gets in."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from meshnode.inference.devices import Accelerator, DeviceInfo
from meshnode.load import LoadSample
from meshnode.mesh.metadata import MAX_DEPTH, MAX_LABEL_CHARS, MAX_LIST_ITEMS, MAX_RELAYS, MetaError, NodeMeta
from meshnode.mesh.replica_state import ReplicaEntry, ReplicaState

LABELS = ("name", "http", "mesh", "data", "data_key", "region", "zone")
LISTS = ("models", "hints", "key_ids", "features")
FLAGS = ("tls",)
MAPS = ("device", "load", "speeds", "replicas", "waiting", "traffic")
REACH = ("reach", "relays")
# Typed maps of models (tests/unit/mesh/test_metadata_models.py).
MODEL_MAPS = ("store", "pulls")
# Maps whose values are free-form (bounded) rather than typed entries like ``replicas``.
PLAIN_MAPS = tuple(key for key in MAPS if key != "replicas")

GPU = Accelerator(kind="cuda", index=0, name="NVIDIA H100", memory_bytes=80 * 2**30, capability="9.0")
DEVICE = DeviceInfo("AMD EPYC", 16, 128 * 2**30, (GPU,), "2.13.0")
LOAD = LoadSample(cpu_percent=37.26, memory_used_bytes=4 * 2**30, memory_total_bytes=16 * 2**30, in_flight=2)


def full_meta() -> NodeMeta:
    return NodeMeta(
        name="node-a",
        http="http://10.0.0.2:8470",
        mesh="lab",
        region="eu-west",
        zone="eu-west-1a",
        device=DEVICE.to_wire(),
        load=LOAD.to_wire(),
        models=("tiny-sd", "all-MiniLM-L6-v2"),
        hints=("gpu", "fast"),
        speeds={"tiny-sd": {"images_per_s": 6.5, "warm": True}, "notes": None},
        data="10.0.0.2:40001",
        replicas={"tiny-sd": ReplicaEntry(ReplicaState.READY, queue=2, hints=("a",))},
        waiting={"embed": 3},
        reach="relayed",
        relays=("relay-1", "relay-2"),
    )


def with_field(key: str, value: object) -> dict[str, Any]:
    """A minimal valid wire dict with one field set."""
    return {"name": "node-a", key: value}


def nested(levels: int, leaf: object = 1) -> object:
    """``levels`` maps, one inside the other, with ``leaf`` at the bottom."""
    value = leaf
    for _ in range(levels):
        value = {"k": value}
    return value


def rejected(raw: object) -> MetaError:
    with pytest.raises(MetaError) as caught:
        NodeMeta.from_wire(raw)
    return caught.value


# -- round trips ---------------------------------------------------------------------------


def test_to_wire_and_from_wire_round_trip() -> None:
    meta = full_meta()
    assert NodeMeta.from_wire(meta.to_wire()) == meta


def test_round_trip_through_msgpack() -> None:
    meta = full_meta()
    assert NodeMeta.from_wire(msgpack.unpackb(msgpack.packb(meta.to_wire()))) == meta


def test_wire_keys_are_the_documented_fields() -> None:
    """Older and newer peers read these names; renaming one is a wire format change."""
    assert set(full_meta().to_wire()) == {*LABELS, *LISTS, *FLAGS, *MAPS, *REACH, *MODEL_MAPS}


def test_only_a_name_is_required() -> None:
    meta = NodeMeta.from_wire({"name": "node-a"})
    assert meta == NodeMeta(name="node-a")
    assert (meta.http, meta.models, meta.device, meta.speeds) == ("", (), {}, {})


def test_what_the_device_and_load_samplers_produce_is_accepted() -> None:
    meta = NodeMeta.from_wire({"name": "n", "device": DEVICE.to_wire(), "load": LOAD.to_wire()})
    assert DeviceInfo.from_wire(meta.device) == DEVICE
    assert meta.load["in_flight"] == 2


def test_lists_come_back_as_tuples_so_metadata_stays_immutable() -> None:
    meta = NodeMeta.from_wire({"name": "n", "models": ["a", "b"], "hints": ["h"]})
    assert meta.models == ("a", "b")
    assert meta.hints == ("h",)


# -- reach ---------------------------------------------------------------------------------


def test_a_reach_this_version_does_not_know_reads_as_not_known() -> None:
    # A newer node may name a way of being reached that this one cannot use: it dials as before.
    assert NodeMeta.from_wire({"name": "n", "reach": "teleported"}).reach == ""
    assert NodeMeta.from_wire({"name": "n", "reach": "relayed"}).reach == "relayed"


def test_relays_are_bounded() -> None:
    assert NodeMeta.from_wire({"name": "n", "relays": ["r"] * MAX_RELAYS}).relays == ("r",) * MAX_RELAYS
    assert "at most" in str(rejected({"name": "n", "relays": ["r"] * (MAX_RELAYS + 1)}))
    rejected({"name": "n", "relays": [7]})
    rejected({"name": "n", "reach": 1})


# -- forward compatibility -----------------------------------------------------------------


def test_unknown_string_keys_from_newer_versions_are_ignored() -> None:
    raw = {
        "name": "node-a",
        "zone": "z1",
        "gpu_temperature": 71,
        "future": {"nested": [1, 2, {"deeper": None}]},
        "flags": ["x"],
    }
    assert NodeMeta.from_wire(raw) == NodeMeta(name="node-a", zone="z1")


@pytest.mark.parametrize("key", [1, b"future", None, 2.5, True])
def test_non_string_keys_are_refused_even_when_unknown(key: object) -> None:
    rejected({"name": "node-a", key: "x"})


@pytest.mark.parametrize("raw", [None, "node-a", ["node-a"], 7, b"\x80"])
def test_metadata_must_be_a_map(raw: object) -> None:
    rejected(raw)


# -- labels --------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [{}, {"name": ""}, {"name": None}, {"http": "http://x"}])
def test_name_is_required_and_not_empty(raw: dict[str, Any]) -> None:
    rejected(raw)


@pytest.mark.parametrize("key", LABELS)
def test_labels_up_to_the_limit_are_accepted(key: str) -> None:
    meta = NodeMeta.from_wire(with_field(key, "x" * MAX_LABEL_CHARS))
    assert getattr(meta, key) == "x" * MAX_LABEL_CHARS


@pytest.mark.parametrize("key", LABELS)
def test_labels_over_the_limit_are_refused(key: str) -> None:
    rejected(with_field(key, "x" * (MAX_LABEL_CHARS + 1)))


@pytest.mark.parametrize("key", LABELS)
@pytest.mark.parametrize(
    "value", [5, None, ["a"], b"bytes", True], ids=["int", "nil", "list", "bytes", "bool"]
)
def test_labels_must_be_strings(key: str, value: object) -> None:
    rejected(with_field(key, value))


@pytest.mark.parametrize("key", ["http", "mesh", "region", "zone"])
def test_optional_labels_may_be_empty(key: str) -> None:
    assert getattr(NodeMeta.from_wire(with_field(key, "")), key) == ""


# -- models and hints ----------------------------------------------------------------------


@pytest.mark.parametrize("key", LISTS)
def test_lists_up_to_the_limits_are_accepted(key: str) -> None:
    items = ["m" * MAX_LABEL_CHARS] * MAX_LIST_ITEMS
    assert getattr(NodeMeta.from_wire(with_field(key, items)), key) == tuple(items)


@pytest.mark.parametrize("key", LISTS)
@pytest.mark.parametrize(
    "value",
    [
        pytest.param("tiny-sd", id="a-string-not-a-list"),
        pytest.param({"tiny-sd": True}, id="a-map"),
        pytest.param(None, id="nil"),
        pytest.param(["tiny-sd", 3], id="an-int-item"),
        pytest.param([["tiny-sd"]], id="a-nested-list"),
        pytest.param([b"tiny-sd"], id="a-bytes-item"),
        pytest.param(["m" * (MAX_LABEL_CHARS + 1)], id="an-item-too-long"),
        pytest.param(["m"] * (MAX_LIST_ITEMS + 1), id="too-many-items"),
    ],
)
def test_lists_must_hold_few_short_strings(key: str, value: object) -> None:
    rejected(with_field(key, value))


# -- device, load, speeds ------------------------------------------------------------------


@pytest.mark.parametrize("key", PLAIN_MAPS)
def test_maps_of_plain_values_are_accepted(key: str) -> None:
    value = {
        "nil": None,
        "flag": False,
        "count": -3,
        "big": 2**64 - 1,
        "ratio": 0.5,
        "text": "t",
        "list": [1],
    }
    assert getattr(NodeMeta.from_wire(with_field(key, value)), key) == value


@pytest.mark.parametrize("key", MAPS)
def test_nesting_up_to_max_depth_is_accepted_one_more_level_is_refused(key: str) -> None:
    # The field's own map is level 1, so the deepest value allowed sits at level MAX_DEPTH.
    deepest_allowed = nested(MAX_DEPTH - 1)
    if key in PLAIN_MAPS:
        assert getattr(NodeMeta.from_wire(with_field(key, deepest_allowed)), key) == deepest_allowed
    else:
        NodeMeta.from_wire(with_field(key, deepest_allowed))  # accepted (an entry without a state)
    rejected(with_field(key, nested(MAX_DEPTH)))
    rejected(with_field(key, {"list": [[[1]]]}))


@pytest.mark.parametrize("key", MAPS)
def test_absurd_nesting_is_refused_not_a_recursion_error(key: str) -> None:
    rejected(with_field(key, nested(5000)))


@pytest.mark.parametrize("key", MAPS)
@pytest.mark.parametrize(
    "value",
    [
        pytest.param([1, 2], id="a-list"),
        pytest.param("cpu", id="a-string"),
        pytest.param(None, id="nil"),
        pytest.param({"gpu": {1: "x"}}, id="integer-key-inside"),
        pytest.param({"gpu": {b"name": "x"}}, id="bytes-key-inside"),
        pytest.param({"blob": b"\x00"}, id="bytes-value"),
        pytest.param({"set": {1, 2}}, id="set-value"),
        pytest.param({"obj": object()}, id="object-value"),
        pytest.param({"ext": msgpack.ExtType(1, b"x")}, id="ext-value"),
        pytest.param({"at": msgpack.Timestamp(0)}, id="timestamp-value"),
        pytest.param({"list": list(range(MAX_LIST_ITEMS + 1))}, id="list-too-long"),
        pytest.param({f"k{i}": i for i in range(MAX_LIST_ITEMS + 1)}, id="map-too-wide"),
        pytest.param({"inner": {f"k{i}": i for i in range(MAX_LIST_ITEMS + 1)}}, id="inner-map-too-wide"),
    ],
)
def test_maps_must_hold_only_bounded_plain_values(key: str, value: object) -> None:
    rejected(with_field(key, value))


@pytest.mark.parametrize("key", PLAIN_MAPS)
def test_widths_up_to_the_limit_are_accepted(key: str) -> None:
    value = {f"k{i}": i for i in range(MAX_LIST_ITEMS - 1)} | {"list": list(range(MAX_LIST_ITEMS))}
    assert getattr(NodeMeta.from_wire(with_field(key, value)), key) == value


def test_metadata_too_big_to_gossip_keeps_its_first_hints_and_fits() -> None:
    hints = tuple(f"lora-{i:04d}-{'x' * 60}" for i in range(200))
    entry = ReplicaEntry(ReplicaState.READY, hints=hints, models=hints)
    big = NodeMeta(name="node-a", hints=hints, models=hints, replicas={"sd": entry})
    assert big.encoded_size() > 16 * 1024
    fitted = big.fit(16 * 1024)
    assert fitted.encoded_size() <= 16 * 1024
    assert fitted.hints and fitted.hints == hints[: len(fitted.hints)]  # the most recent stay
    assert fitted.replicas["sd"].hints == hints[: len(fitted.replicas["sd"].hints)]
    assert fitted.replicas["sd"].state == ReplicaState.READY
    small = NodeMeta(name="node-a", hints=("a",))
    assert small.fit(16 * 1024) is small


def test_replica_entries_in_an_unknown_state_or_malformed_are_left_out() -> None:
    """A newer node's state, or a peer's garbage, makes that replica invisible, never an error."""
    ready = {"state": "ready", "queue": 2, "slots": 1, "capacity": 4, "hints": [], "models": []}
    raw = with_field(
        "replicas", {"ok": ready, "future": {"state": "hibernating"}, "junk": "ready", "none": {}}
    )
    assert set(NodeMeta.from_wire(raw).replicas) == {"ok"}
    assert NodeMeta.from_wire(raw).replicas["ok"] == ReplicaEntry(ReplicaState.READY, queue=2, capacity=4)


def test_replica_entries_on_the_wire_are_the_maps_older_nodes_read() -> None:
    """The gossiped entry kept its keys when it became a type: old and new nodes read each other."""
    entry = ReplicaEntry(ReplicaState.STANDBY, pinned=True, error="e", queue=1, slots=2, capacity=3)
    assert full_meta().to_wire()["replicas"]["tiny-sd"]["state"] == "ready"
    assert entry.to_wire() == {
        "state": "standby",
        "pinned": True,
        "error": "e",
        "queue": 1,
        "slots": 2,
        "capacity": 3,
        "hints": [],
        "models": [],
    }


def test_metadata_read_again_is_the_same_object_and_validation_still_tells_values_apart() -> None:
    wire = NodeMeta(name="n1", http="127.0.0.1:1", tls=True, device={"cores": 2}).to_wire()
    first = NodeMeta.from_wire(msgpack.unpackb(msgpack.packb(wire)))
    assert NodeMeta.from_wire(msgpack.unpackb(msgpack.packb(wire))) is first  # a push-pull's unchanged row
    # Equal in Python, not on the wire: 1 is not a boolean, and 2.0 cores stay a float.
    with pytest.raises(MetaError):
        NodeMeta.from_wire({**wire, "tls": 1})
    floats = NodeMeta.from_wire({**wire, "device": {"cores": 2.0}})
    assert floats is not first and isinstance(floats.device["cores"], float)
    changed = NodeMeta.from_wire({**wire, "zone": "b"})
    assert changed.zone == "b" and first.zone == ""
    with pytest.raises(MetaError):
        NodeMeta.from_wire({**wire, "name": object()})  # not msgpack at all: still refused

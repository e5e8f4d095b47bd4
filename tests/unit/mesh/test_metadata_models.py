"""NodeMeta.store and NodeMeta.pulls: which models a node holds and pulls, checked as they arrive."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from meshnode.mesh.metadata import MAX_LIST_ITEMS, MAX_MODEL_BYTES, MetaError, NodeMeta

DIGEST = "0123456789abcdef"
STORE = {
    "tiny-sd": {"digest": DIGEST, "bytes": 8_000_000},
    "all-MiniLM-L6-v2": {"digest": "f" * 16, "bytes": 9},
}
PULLS = {"llama": {"digest": "a" * 16, "done": 10, "total": 100}}


def wire(**fields: Any) -> dict[str, Any]:
    return {"name": "node-a", **fields}


def test_store_and_pulls_survive_msgpack() -> None:
    meta = NodeMeta(name="node-a", store=STORE, pulls=PULLS)
    raw = msgpack.unpackb(msgpack.packb(meta.to_wire(), use_bin_type=True), raw=False)
    assert NodeMeta.from_wire(raw) == meta


def test_older_nodes_send_neither() -> None:
    meta = NodeMeta.from_wire(wire())
    assert meta.store == {}
    assert meta.pulls == {}


def test_unknown_keys_in_an_entry_are_dropped() -> None:
    raw = wire(store={"m": {"digest": DIGEST, "bytes": 1, "files": 3}})
    assert NodeMeta.from_wire(raw).store == {"m": {"digest": DIGEST, "bytes": 1}}


BAD_STORE_ENTRIES: list[tuple[object, object]] = [
    ("../etc", {"digest": DIGEST, "bytes": 1}),
    ("", {"digest": DIGEST, "bytes": 1}),
    ("x" * 65, {"digest": DIGEST, "bytes": 1}),
    ("m", "not a map"),
    ("m", {"bytes": 1}),
    ("m", {"digest": DIGEST.upper(), "bytes": 1}),
    ("m", {"digest": "0" * 64, "bytes": 1}),
    ("m", {"digest": DIGEST}),
    ("m", {"digest": DIGEST, "bytes": -1}),
    ("m", {"digest": DIGEST, "bytes": True}),
    ("m", {"digest": DIGEST, "bytes": 1.5}),
    ("m", {"digest": DIGEST, "bytes": MAX_MODEL_BYTES + 1}),
]


@pytest.mark.parametrize(("name", "entry"), BAD_STORE_ENTRIES)
def test_a_malformed_store_entry_is_left_out_and_the_rest_kept(name: str, entry: object) -> None:
    raw = wire(store={name: entry, "good": {"digest": DIGEST, "bytes": 1}})
    assert NodeMeta.from_wire(raw).store == {"good": {"digest": DIGEST, "bytes": 1}}


@pytest.mark.parametrize(
    "entry",
    [
        {"digest": DIGEST, "done": 11, "total": 10},
        {"digest": DIGEST, "done": -1, "total": 10},
        {"digest": DIGEST, "total": 10},
        {"digest": "nothex-nothex-00", "done": 1, "total": 10},
    ],
)
def test_a_malformed_pull_entry_is_left_out(entry: object) -> None:
    assert NodeMeta.from_wire(wire(pulls={"m": entry})).pulls == {}


@pytest.mark.parametrize("key", ["store", "pulls"])
@pytest.mark.parametrize("value", [[], "x", 3, {f"m{i}": {} for i in range(MAX_LIST_ITEMS + 1)}])
def test_a_store_or_pulls_that_is_not_a_small_map_is_refused(key: str, value: object) -> None:
    with pytest.raises(MetaError, match=key):
        NodeMeta.from_wire(wire(**{key: value}))


def test_fit_cuts_traffic_then_pulls_then_halves_the_store_by_name() -> None:
    store = {f"model-{i:03d}": {"digest": DIGEST, "bytes": i} for i in range(200)}
    pulls = {f"pull-{i:03d}": {"digest": DIGEST, "done": 0, "total": i} for i in range(50)}
    big = NodeMeta(name="node-a", store=store, pulls=pulls, traffic={"x": "y" * 100}, hints=("h",))
    limit = big.encoded_size() - 100
    fitted = big.fit(limit)
    assert fitted.traffic == {}
    assert fitted.pulls == pulls  # the traffic alone made room
    tight = NodeMeta(name="node-a", store=store, hints=("h",)).encoded_size() - 1
    smaller = big.fit(tight)
    assert smaller.pulls == {}
    assert smaller.store == {name: store[name] for name in sorted(store)[:100]}
    assert smaller.hints == ("h",)  # routing's hints go last
    assert smaller.encoded_size() <= tight

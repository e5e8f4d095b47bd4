"""Node metadata: what a node says about itself, versioned by its owner and gossiped with it.

Only the owner changes its metadata; every change bumps ``meta_version`` in the membership core, so
newer always wins and an old rumour never overwrites a fresh value. Keys this version does not know
(a newer node's) are ignored, so nodes of different versions read each other.

Validation happens once, when bytes arrive (``from_wire``): a node's view only ever holds metadata
that passed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from .deployment import NAME_PATTERN
from .model_manifest import is_short
from .replica_state import ReplicaEntry
from .validated import ValidatedMemo

MAX_LABEL_CHARS = 128
MAX_LIST_ITEMS = 256
MAX_DEPTH = 4
# A node keeps a few relays (``MembershipConfig.relay_count``); more than this is refused.
MAX_RELAYS = 8
# Byte counts of models (store sizes, pull progress): an int64, as every counter on the wire.
MAX_MODEL_BYTES = 2**63 - 1
# How peers reach a node (docs/edge.md): "" not known yet (or an older node), "direct" (peers dial
# its advertised addresses), "relayed" (nobody can: through its `relays`).
REACH_VALUES = ("", "direct", "relayed")


# Validated metadata kept by its msgpack bytes (``NodeMeta.from_wire``) while a member holds it: one
# for each member of a 4,096-node mesh.
PARSED_KEPT = 4096
_PARSED: ValidatedMemo[NodeMeta] = ValidatedMemo(PARSED_KEPT)


class MetaError(ValueError):
    """Metadata from the wire failed validation."""


@dataclass(frozen=True)
class NodeMeta:
    """One node's self-description, as ``GET /v1/mesh`` lists it (README.md, "HTTP")."""

    name: str
    http: str = ""
    mesh: str = ""
    # "host:port" of the data plane (requests forwarded between agents), separate from gossip.
    data: str = ""
    # The data plane's public X25519 key (Z85, 40 characters): peers connect only to a node whose key
    # they learned from authenticated gossip, and it admits only holders of the token. "" from old nodes.
    data_key: str = ""
    # Fingerprints of the mesh tokens this node holds, primary first (``trust/keyring.py``): how a
    # token rotation sees that every node has a new key before making it primary.
    key_ids: tuple[str, ...] = ()
    region: str = ""
    zone: str = ""
    # Whether `http` serves HTTPS (`meshnode join --tls-cert`); False (or absent, from older nodes)
    # is plain HTTP. Clients build https:// URLs from it.
    tls: bool = False
    # Device summary from meshnode.inference.devices (cpu, cores, memory, accelerators).
    device: dict[str, Any] = field(default_factory=dict)
    # Load summary from meshnode.load (cpu %, memory, requests in flight).
    load: dict[str, Any] = field(default_factory=dict)
    # Loaded model names and routing hints of every ready replica here (the union).
    models: tuple[str, ...] = ()
    hints: tuple[str, ...] = ()
    # Measured speed per deployment: {"service_ms": mean time per request, "rps": completions/s}.
    speeds: dict[str, Any] = field(default_factory=dict)
    # Serving state per deployment hosted here (``replica_state.py``): built by the node's replica
    # supervisor, read by routing, placement and the deployments API.
    replicas: dict[str, ReplicaEntry] = field(default_factory=dict)
    # Requests this node holds per deployment while waiting for a replica to cold-start: demand
    # the autoscalers count even though no replica has it yet.
    waiting: dict[str, Any] = field(default_factory=dict)
    # How peers reach this node (REACH_VALUES), and when "relayed", the node ids of the peers its
    # outbound links go to: what is for it is sent through them (``mesh/reachability.py``).
    reach: str = ""
    relays: tuple[str, ...] = ()
    # Requests this node took from clients in the last window, per deployment and per peer it sent
    # them to (``mesh/traffic.py``): the dashboard's rates, percentiles and links.
    traffic: dict[str, Any] = field(default_factory=dict)
    # Models in this node's store (``meshnode.models``): name -> {"digest": short digest, "bytes":
    # total size}. How pulls find holders and placement prefers them; older nodes send none.
    store: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Models this node is pulling: name -> {"digest": short digest, "done": bytes, "total": bytes}.
    pulls: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Gossip this node's membership core takes beyond the first protocol (``load_news.FEATURES``),
    # stamped by the core itself: peers send it load as a delta once every member takes one.
    features: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-ready dict."""
        return {
            "name": self.name,
            "http": self.http,
            "mesh": self.mesh,
            "data": self.data,
            "data_key": self.data_key,
            "key_ids": list(self.key_ids),
            "region": self.region,
            "zone": self.zone,
            "tls": self.tls,
            "device": self.device,
            "load": self.load,
            "models": list(self.models),
            "hints": list(self.hints),
            "speeds": self.speeds,
            "replicas": {name: entry.to_wire() for name, entry in self.replicas.items()},
            "waiting": self.waiting,
            "reach": self.reach,
            "relays": list(self.relays),
            "traffic": self.traffic,
            "store": self.store,
            "pulls": self.pulls,
            "features": list(self.features),
        }

    def encoded_size(self) -> int:
        """Bytes of this metadata as msgpack, as it travels in every ``alive`` and push-pull row."""
        return len(msgpack.packb(self.to_wire(), use_bin_type=True))

    def fit(self, max_bytes: int) -> NodeMeta:
        """This metadata, its longest lists (hints, loaded models) cut until it fits in `max_bytes`.

        Lists keep their first items, and apps list their most recent (most useful) hints first, so
        a node with too many hints to gossip keeps routing its hottest ones. Traffic goes first, then
        pull progress, then the store (halved, by name). Metadata larger than the limit would make
        every packet carrying it oversized, so peers would drop it whole.
        """
        meta = self
        if meta.traffic and meta.encoded_size() > max_bytes:
            meta = replace(meta, traffic={})  # what the dashboard shows goes before what routing needs
        if meta.pulls and meta.encoded_size() > max_bytes:
            meta = replace(meta, pulls={})  # progress is a view; the pull goes on without it
        while meta.store and meta.encoded_size() > max_bytes:
            # Holders stay findable for the models that fit (first by name), as hints do above.
            kept = sorted(meta.store)[: len(meta.store) // 2]
            meta = replace(meta, store={name: meta.store[name] for name in kept})
        while meta.encoded_size() > max_bytes:
            cut = _halve_longest_lists(meta)
            if cut == meta:
                return meta  # nothing left to cut: the caller's labels alone are too big
            meta = cut
        return meta

    @classmethod
    def from_wire(cls, raw: object) -> NodeMeta:
        """Validate a decoded dict strictly; raise MetaError on anything unexpected.

        Metadata arrives again and again unchanged (every push-pull lists every member's), so up to
        ``PARSED_KEPT`` results (the oldest dropped first) are kept by their msgpack bytes while
        something holds them (``validated.py``), which tell apart whatever validation tells apart
        (an int from a float or a bool): bytes equal to ones that passed give the same object,
        without validating every field again.
        """
        return _PARSED.of(raw, cls._validated)

    @classmethod
    def _validated(cls, raw: object) -> NodeMeta:
        if not isinstance(raw, dict):
            raise MetaError("metadata must be a map")
        # Unknown keys from newer versions are ignored, but they must still be strings.
        if not all(isinstance(key, str) for key in raw):
            raise MetaError("metadata keys must be strings")
        return cls(
            name=_label(raw, "name", required=True),
            http=_label(raw, "http"),
            mesh=_label(raw, "mesh"),
            data=_label(raw, "data"),
            data_key=_label(raw, "data_key"),
            key_ids=_labels(raw, "key_ids"),
            region=_label(raw, "region"),
            zone=_label(raw, "zone"),
            tls=_flag(raw, "tls"),
            device=_plain_map(raw, "device"),
            load=_plain_map(raw, "load"),
            models=_labels(raw, "models"),
            hints=_labels(raw, "hints"),
            speeds=_plain_map(raw, "speeds"),
            replicas=_replica_entries(raw),
            waiting=_plain_map(raw, "waiting"),
            reach=_reach(raw),
            relays=_relays(raw),
            traffic=_plain_map(raw, "traffic"),
            store=_model_entries(raw, "store", ("bytes",)),
            pulls=_model_entries(raw, "pulls", ("done", "total")),
            features=_labels(raw, "features"),
        )


def _replica_entries(raw: dict[Any, Any]) -> dict[str, ReplicaEntry]:
    """Bounded like any map; an entry that is malformed or in an unknown state is left out."""
    entries = {}
    for name, entry in _plain_map(raw, "replicas").items():
        decoded = ReplicaEntry.from_wire(entry)
        if decoded is not None:
            entries[name] = decoded
    return entries


def _model_entries(raw: dict[Any, Any], key: str, counts: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """{model name: {"digest": short digest, count: int, ...}}; a malformed entry is left out."""
    value = raw.get(key, {})
    if not isinstance(value, dict) or len(value) > MAX_LIST_ITEMS:
        raise MetaError(f"metadata field {key!r} must be a map of at most {MAX_LIST_ITEMS} models")
    entries = {}
    for name, entry in value.items():
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or not isinstance(entry, dict):
            continue
        numbers: list[Any] = [entry.get(count) for count in counts]
        if not is_short(entry.get("digest")) or not all(_count(number) for number in numbers):
            continue
        if key == "pulls" and numbers[0] > numbers[1]:
            continue  # more done than the whole: not progress this version can show
        entries[name] = {"digest": entry["digest"], **dict(zip(counts, numbers, strict=True))}
    return entries


def _count(value: object) -> bool:
    """A byte count: an int in 0..MAX_MODEL_BYTES (bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_MODEL_BYTES


def _reach(raw: dict[Any, Any]) -> str:
    """A known reach, or "" (not known) for a value a newer node may send."""
    value = _label(raw, "reach")
    return value if value in REACH_VALUES else ""


def _relays(raw: dict[Any, Any]) -> tuple[str, ...]:
    relays = _labels(raw, "relays")
    if len(relays) > MAX_RELAYS:
        raise MetaError(f"metadata field 'relays' must name at most {MAX_RELAYS} nodes")
    return relays


def _label(raw: dict[Any, Any], key: str, *, required: bool = False) -> str:
    value = raw.get(key, None if required else "")
    if not isinstance(value, str):
        raise MetaError(f"metadata field {key!r} must be a string")
    if len(value) > MAX_LABEL_CHARS:
        raise MetaError(f"metadata field {key!r} is longer than {MAX_LABEL_CHARS} characters")
    if required and not value:
        raise MetaError(f"metadata field {key!r} must not be empty")
    return value


def _flag(raw: dict[Any, Any], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise MetaError(f"metadata field {key!r} must be true or false")
    return value


def _labels(raw: dict[Any, Any], key: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list | tuple) or len(value) > MAX_LIST_ITEMS:
        raise MetaError(f"metadata field {key!r} must be a list of at most {MAX_LIST_ITEMS} strings")
    for item in value:
        if not isinstance(item, str) or len(item) > MAX_LABEL_CHARS:
            raise MetaError(f"metadata field {key!r} must hold strings of at most {MAX_LABEL_CHARS} chars")
    return tuple(value)


def _plain_map(raw: dict[Any, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise MetaError(f"metadata field {key!r} must be a map")
    _check_plain(value, key, depth=1)
    return value


def _check_plain(value: object, where: str, depth: int) -> None:
    """Allow only msgpack primitives, bounded in depth and width."""
    if depth > MAX_DEPTH:
        raise MetaError(f"metadata field {where!r} is nested too deeply")
    if value is None or isinstance(value, bool | int | float | str):
        return
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST_ITEMS:
            raise MetaError(f"metadata field {where!r} has too many items")
        for item in value:
            _check_plain(item, where, depth + 1)
        return
    if isinstance(value, dict):
        if len(value) > MAX_LIST_ITEMS:
            raise MetaError(f"metadata field {where!r} has too many keys")
        for key, item in value.items():
            if not isinstance(key, str):
                raise MetaError(f"metadata field {where!r} has a non-string key")
            _check_plain(item, where, depth + 1)
        return
    raise MetaError(f"metadata field {where!r} holds an unsupported type {type(value).__name__}")


def _halve_longest_lists(meta: NodeMeta) -> NodeMeta:
    """Halve the longest hint or model list, at node level or in one replica entry."""
    candidates: list[tuple[int, str, str]] = [
        (len(meta.hints), "", "hints"),
        (len(meta.models), "", "models"),
    ]
    for name, entry in meta.replicas.items():
        candidates.append((len(entry.hints), name, "hints"))
        candidates.append((len(entry.models), name, "models"))
    length, deployment, key = max(candidates)
    if length == 0:
        return meta
    if not deployment:
        return replace(meta, **{key: getattr(meta, key)[: length // 2]})
    entry = meta.replicas[deployment]
    cut = replace(entry, **{key: getattr(entry, key)[: length // 2]})
    return replace(meta, replicas={**meta.replicas, deployment: cut})

"""Load news: a node's load gossiped as a delta of its metadata, not the whole of it.

A busy node republishes its load once per ``meta_min_interval_s``. As a full ``alive`` that is all
of its metadata each time (~1-2 KB: device, labels, store, every replica's state and hints) for a
few changed numbers, so past a hundred or so busy nodes load news fills what gossip carries and
every view's load ages (``bench/busy_gossip.py``). ``Load`` carries only the fields that move with
load (``view_versions.LOAD_META_FIELDS``, and each replica's ``LOAD_ENTRY_FIELDS``), with the
metadata version it makes and ``base_version``: the version of the owner's last change beyond
load. A node that holds the owner at ``base_version`` or later holds every other field as the owner
has them, so it applies the delta to what it holds (``with_load``) and gossips it on; one that holds
an older version cannot and drops it (the change beyond load reaches it as a full ``alive``, or at
the next push-pull).

Nodes of earlier versions know no ``Load`` (they skip the kind; those before the skip dropped the
whole packet). So a node sends load news only while every member alive or suspect in its view
lists ``LOAD_NEWS`` in its metadata's ``features``, which the membership core stamps on its own
metadata; otherwise it sends the full ``alive`` as before, and drops the load news it had queued
when a member that does not take it appears.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .bounds import MAX_INCARNATION, MAX_META_VERSION
from .metadata import MetaError, NodeMeta
from .types import NodeId
from .view_versions import LOAD_META_FIELDS
from .wire_fields import counter, node_id

__all__ = ["FEATURES", "LOAD_NEWS", "Load", "load_from_list", "load_to_list", "stamped", "with_load"]

# The feature a node lists in ``NodeMeta.features`` when its core takes ``Load``.
LOAD_NEWS = "load-news"
# Every feature this version's membership core takes, in the order it lists them.
FEATURES = (LOAD_NEWS,)
# Its kind on the wire (``wire.Kind.LOAD``; kept here so this module needs nothing from wire.py).
LOAD_KIND = 12
# The load fields this version sends, in wire order; a field it does not know is refused.
_FIELDS = tuple(sorted(LOAD_META_FIELDS))


@dataclass(frozen=True)
class Load:
    """`node`'s metadata at `meta_version` is what it was at `base_version` or later, with this load.

    `fields`: ``LOAD_META_FIELDS`` as ``NodeMeta.to_wire`` writes them, and ``"replicas"``: each
    replica's ``[queue, progress]`` by deployment, for every replica the node has.
    """

    node: NodeId
    incarnation: int
    meta_version: int
    base_version: int
    fields: dict[str, Any]

    @classmethod
    def of(cls, node: NodeId, incarnation: int, meta_version: int, base_version: int, meta: NodeMeta) -> Load:
        """The load news of `meta`, this node's metadata at `meta_version`."""
        wire = meta.to_wire()
        fields: dict[str, Any] = {name: wire[name] for name in _FIELDS}
        fields["replicas"] = {name: [entry.queue, entry.progress] for name, entry in meta.replicas.items()}
        return cls(node, incarnation, meta_version, base_version, fields)


def with_load(meta: NodeMeta, fields: dict[str, Any]) -> NodeMeta | None:
    """`meta` with the load of `fields`, validated as any metadata from the wire; None when the
    delta does not fit it (another set of replicas) or breaks a bound."""
    loads = fields.get("replicas")
    if not isinstance(loads, dict) or loads.keys() != meta.replicas.keys():
        return None
    wire = meta.to_wire()
    for name in _FIELDS:
        wire[name] = fields.get(name, {})
    for name, load in loads.items():
        if not isinstance(load, list) or len(load) != 2:
            return None
        entry = wire["replicas"][name]
        entry["queue"] = load[0]
        if "progress" in entry:  # sent only while loading (ReplicaEntry.to_wire)
            entry["progress"] = load[1]
    try:
        return NodeMeta.from_wire(wire)
    except MetaError:
        return None


def stamped(meta: NodeMeta) -> NodeMeta:
    """`meta` listing the features of this version's core (the same object when it does)."""
    return meta if meta.features == FEATURES else replace(meta, features=FEATURES)


def load_to_list(message: Load) -> list[Any]:
    """The msgpack-ready form of a ``Load``."""
    news = message
    return [LOAD_KIND, news.node, news.incarnation, news.meta_version, news.base_version, news.fields]


def load_from_list(fields: list[Any]) -> Load:
    """A ``Load`` from its wire fields (after the kind); ValueError when malformed.

    Only the shape is checked here; the values are checked as metadata when applied (``with_load``).
    """
    match fields:
        case [node, incarnation, meta_version, base_version, dict() as load]:
            version = counter(meta_version, MAX_META_VERSION)
            if counter(base_version, MAX_META_VERSION) >= version:
                raise ValueError("load news must build on an earlier metadata version")
            if not all(isinstance(key, str) for key in load) or not set(load) <= {*_FIELDS, "replicas"}:
                raise ValueError(f"load news carries only {', '.join(_FIELDS)} and replicas")
            return Load(node_id(node), counter(incarnation, MAX_INCARNATION), version, base_version, load)
    raise ValueError("load news must be [node, incarnation, meta_version, base_version, fields]")

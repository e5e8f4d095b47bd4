"""Load news: a node's load gossiped as a delta of its metadata (``load_news.py``, ``load_gate.py``)."""

from __future__ import annotations

import random
from dataclasses import replace

from meshnode.mesh.load_news import FEATURES, LOAD_NEWS, Load, stamped, with_load
from meshnode.mesh.membership import Membership
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.replica_state import ReplicaEntry, ReplicaState
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.mesh.wire import Alive, MemberState, Message, Packet, PushPull, decode, encode

from .test_membership import CONFIG, ME, ME_ADDR, WALL_MS, packet_from, peer

SHAPE = NodeMeta(
    name="peer1",
    zone="z1",
    hints=("warm",),
    replicas={
        "echo": ReplicaEntry(ReplicaState.READY, queue=1, hints=("a",)),
        "sd": ReplicaEntry(ReplicaState.LOADING, progress=0.25),
    },
    features=FEATURES,
)


def busier(meta: NodeMeta, step: int) -> NodeMeta:
    """`meta` with its load moved: every load field, and each replica's queue and progress."""
    replicas = {
        "echo": replace(meta.replicas["echo"], queue=step),
        "sd": replace(meta.replicas["sd"], progress=min(1.0, 0.25 + step / 10)),
    }
    return replace(
        meta,
        load={"cpu": 10.0 * step, "in_flight": step},
        speeds={"echo": {"service_ms": 1.5 * step, "rps": 3.0}},
        traffic={"echo": {"requests": step}},
        pulls={"tiny": {"digest": "0" * 16, "done": step, "total": 100}},
        replicas=replicas,
    )


def core_in_mesh(peers: int, *, takes_load_news: bool = True, me: NodeId = ME) -> Membership:
    """A core that knows `peers` members, each listing the features of this version or none."""
    core = Membership(CONFIG, me, ME_ADDR, NodeMeta(name=me), rng=random.Random(3), now=0.0)
    features = FEATURES if takes_load_news else ()
    states = tuple(
        MemberState(*peer(i), 0, Status.ALIVE, 1, replace(SHAPE, name=f"peer{i}", features=features))
        for i in range(peers)
    )
    core.handle(packet_from(0, PushPull(False, False, states)), 0.0, WALL_MS)
    core.clear_broadcasts()
    return core


def queued(core: Membership) -> list[Message]:
    return list(core.gossip.queue.queued())


def shaped(core: Membership) -> Membership:
    """`core` hosting SHAPE's replicas (a change beyond load, gossiped whole), its queue emptied."""
    core.update_meta(replace(core.me.meta, replicas=dict(SHAPE.replicas)))
    core.clear_broadcasts()
    return core


def test_the_delta_of_a_load_applied_to_the_same_shape_gives_the_whole_metadata() -> None:
    for step in range(4):
        after = busier(SHAPE, step)
        news = Load.of(NodeId("peer1"), 0, 2, 1, after)
        assert with_load(busier(SHAPE, 7), news.fields) == after
        assert set(news.fields) == {"load", "pulls", "speeds", "traffic", "replicas"}


def test_a_delta_for_other_replicas_or_past_a_bound_does_not_apply() -> None:
    fields = Load.of(NodeId("peer1"), 0, 2, 1, SHAPE).fields
    assert with_load(replace(SHAPE, replicas={}), fields) is None
    assert with_load(SHAPE, {**fields, "replicas": {"echo": [1, 0.0]}}) is None
    assert with_load(SHAPE, {**fields, "replicas": {"echo": [1], "sd": [1, 0.5]}}) is None
    deep: object = 1
    for _ in range(20):
        deep = {"k": deep}
    assert with_load(SHAPE, {**fields, "load": deep}) is None
    # A replica's figures out of range are taken as ReplicaEntry takes them from any metadata.
    applied = with_load(SHAPE, {**fields, "replicas": {"echo": [-5, 0.0], "sd": [0, 7.0]}})
    assert (
        applied is not None and applied.replicas["echo"].queue == 0 and applied.replicas["sd"].progress == 0.0
    )


def test_the_core_lists_its_features_in_its_own_metadata() -> None:
    core = Membership(CONFIG, ME, ME_ADDR, NodeMeta(name=ME), rng=random.Random(3), now=0.0)
    assert core.me.meta.features == FEATURES == (LOAD_NEWS,)
    core.update_meta(NodeMeta(name=ME, zone="z2"))
    assert core.me.meta.features == FEATURES and core.me.meta.zone == "z2"
    assert stamped(core.me.meta) is core.me.meta


def test_load_alone_goes_out_as_load_news_once_every_member_takes_it() -> None:
    core = core_in_mesh(3)
    core.update_meta(replace(core.me.meta, replicas=dict(SHAPE.replicas)))  # beyond load: a full alive
    (alive,) = queued(core)
    assert isinstance(alive, Alive) and alive.meta_version == 1
    core.update_meta(busier(core.me.meta, 2))
    core.update_meta(busier(core.me.meta, 3))
    alive_again, news = queued(core)  # the change keeps its slot; the load has one of its own
    assert alive_again == alive
    assert isinstance(news, Load) and (news.meta_version, news.base_version) == (3, 1)
    assert with_load(alive.meta, news.fields) == core.me.meta
    core.update_meta(replace(core.me.meta, zone="z3"))  # beyond load again: the alive holds it all
    (last,) = queued(core)
    assert isinstance(last, Alive) and last.meta == core.me.meta


def test_with_a_member_that_takes_no_load_news_load_goes_out_whole() -> None:
    core = shaped(core_in_mesh(3, takes_load_news=False))
    core.update_meta(busier(core.me.meta, 1))
    (news,) = queued(core)
    assert isinstance(news, Alive) and news.meta.load == {"cpu": 10.0, "in_flight": 1}


def test_queued_load_news_is_dropped_when_a_member_that_takes_none_appears() -> None:
    core = shaped(core_in_mesh(3))
    core.update_meta(busier(core.me.meta, 1))
    assert [type(m) for m in queued(core)] == [Load]
    old, old_addr = NodeId("old-node"), Address("10.0.0.99:7946")
    core.handle(packet_from(1, Alive(old, 0, old_addr, 0, NodeMeta(name="old"))), 1.0, WALL_MS)
    assert not any(isinstance(m, Load) for m in queued(core))
    core.update_meta(busier(core.me.meta, 2))
    assert not any(isinstance(m, Load) for m in queued(core))


def test_a_member_applies_load_news_built_on_what_it_holds_and_passes_it_on() -> None:
    core = core_in_mesh(3)
    node, _ = peer(1)
    held = core.members[node]
    after = busier(held.meta, 4)
    news = Load.of(node, 0, 5, 1, after)
    core.handle(packet_from(2, news), 1.0, WALL_MS)
    assert (held.meta_version, held.meta) == (5, after)
    assert queued(core) == [news]
    # Older news, news of another incarnation, and news about this node itself change nothing.
    for stale in (Load.of(node, 0, 4, 1, SHAPE), Load.of(node, 1, 9, 1, SHAPE), Load.of(ME, 0, 9, 0, SHAPE)):
        core.handle(packet_from(2, stale), 1.1, WALL_MS)
    assert (held.meta_version, held.meta) == (5, after)
    assert core.me.meta.load == {}
    counted = {outcome: n for outcome, n in core.load_news.items() if n}
    assert counted == {"applied": 1, "stale": 2, "unbased": 1}  # the newer incarnation: a restart


def test_load_news_built_on_a_change_not_held_here_is_dropped() -> None:
    core = core_in_mesh(3)
    node, _ = peer(1)
    held = core.members[node]  # at version 1
    core.handle(packet_from(2, Load.of(node, 0, 6, 4, busier(SHAPE, 2))), 1.0, WALL_MS)
    assert held.meta_version == 1 and held.meta.load == {}
    assert queued(core) == [] and core.load_news["unbased"] == 1


def test_a_member_passes_load_news_on_whole_to_a_mesh_where_some_take_none() -> None:
    core = core_in_mesh(3)
    old, old_addr = NodeId("old-node"), Address("10.0.0.99:7946")
    core.handle(packet_from(1, Alive(old, 0, old_addr, 0, NodeMeta(name="old"))), 1.0, WALL_MS)
    core.clear_broadcasts()
    node, addr = peer(1)
    core.handle(packet_from(2, Load.of(node, 0, 2, 1, busier(SHAPE, 1))), 1.1, WALL_MS)
    (news,) = queued(core)
    assert news == Alive(node, 0, addr, 2, replace(busier(SHAPE, 1), name="peer1"))


def test_load_news_survives_the_wire_and_a_receiving_core() -> None:
    sender = shaped(core_in_mesh(2))
    receiver = core_in_mesh(2, me=NodeId("receiver"))
    # What the receiver holds of the sender: its change beyond load, version 1.
    receiver.handle(packet_from(0, Alive(ME, 0, ME_ADDR, 1, sender.me.meta)), 0.5, WALL_MS)
    sender.update_meta(busier(sender.me.meta, 1))
    (news,) = queued(sender)
    assert isinstance(news, Load)
    data = encode(Packet(ME, ME_ADDR, (news,)), "mesh")
    receiver.handle(decode(data, "mesh", max_bytes=65536, max_members=100), 1.0, WALL_MS)
    assert receiver.members[ME].meta == sender.me.meta and receiver.members[ME].meta_version == 2


def stripped(meta: NodeMeta) -> NodeMeta:
    """`meta` as a node of the release before ``features`` relays it: the field it does not know gone."""
    return replace(meta, features=())


def own_news(core: Membership) -> list[type]:
    """The kinds of news queued about `core`'s own node."""
    return [type(m) for m in queued(core) if getattr(m, "node", None) == core.node_id]


def test_a_copy_an_earlier_release_stripped_gives_way_to_the_whole_one_at_the_same_version() -> None:
    core = shaped(core_in_mesh(3))
    node, addr = peer(1)
    held = core.members[node]
    whole = Alive(node, 0, addr, 2, replace(SHAPE, name="peer1", zone="z9"))
    core.handle(packet_from(2, replace(whole, meta=stripped(whole.meta))), 1.0, WALL_MS)  # relayed first
    assert held.meta_version == 2 and held.meta.features == ()
    core.update_meta(busier(core.me.meta, 1))
    assert own_news(core) == [Alive]  # peer1 seems to take no load news: this node's load goes whole
    core.clear_broadcasts()
    core.handle(packet_from(1, whole), 1.1, WALL_MS)  # the owner's own, at the same version
    assert held.meta == whole.meta
    assert queued(core) == [whole]  # passed on, so the members that took the stripped copy mend too
    core.update_meta(busier(core.me.meta, 2))
    assert own_news(core) == [Load]
    core.clear_broadcasts()
    # The stripped copy arriving again, by gossip or in a push-pull row, changes nothing now.
    core.handle(packet_from(2, replace(whole, meta=stripped(whole.meta))), 1.2, WALL_MS)
    row = MemberState(node, addr, 0, Status.ALIVE, 2, stripped(whole.meta))
    core.handle(packet_from(2, PushPull(False, False, (row,))), 1.3, WALL_MS)
    assert held.meta == whole.meta and queued(core) == []


def test_a_whole_copy_in_a_push_pull_row_mends_a_stripped_one() -> None:
    core = core_in_mesh(3)
    node, addr = peer(1)
    held = core.members[node]
    whole = replace(SHAPE, name="peer1", zone="z9")
    core.handle(packet_from(2, Alive(node, 0, addr, 2, stripped(whole))), 1.0, WALL_MS)
    assert held.meta.features == ()
    row = MemberState(node, addr, 0, Status.ALIVE, 2, whole)
    core.handle(packet_from(1, PushPull(False, False, (row,))), 1.1, WALL_MS)
    assert held.meta == whole and held.meta_version == 2

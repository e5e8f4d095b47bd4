"""Bounds on incarnations, metadata versions and stamps, over every integer the wire can carry.

msgpack carries any integer from -2^63 to 2^64 - 1 (and booleans, which Python calls integers), so
every property here draws from that whole range, weighted towards each bound and its neighbours
(``mesh/bounds.py`` explains the numbers). Three promises are checked: the edge refuses exactly what
lies past a maximum and nothing crashes on the way; nothing a node accepts can make its own next
incarnation, metadata version or record stamp unencodable or unstorable; and a member can always
refute an accusation that any node took, whoever sent it and whatever it claimed.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meshnode.mesh.bounds import (
    CLAIM_STEP,
    FIRST_SIGHT_MAX,
    MAX_INCARNATION,
    MAX_META_VERSION,
    MAX_STAMP,
    in_range,
)
from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.deployment import DeploymentSpec
from meshnode.mesh.effects import Send
from meshnode.mesh.membership import Membership
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.records import COUNTER_BITS, Record
from meshnode.mesh.simulation import Simulation
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.mesh.wire import (
    MAX_COUNTER,
    Alive,
    Dead,
    Kind,
    MemberState,
    Message,
    Packet,
    PushPull,
    Suspect,
    WireError,
    decode,
    encode,
)
from meshnode.store import NodeStore

from .test_membership import CONFIG, ME, ME_ADDR, WALL_MS, core_with_peers, peer
from .test_wire import MESH, RECORD, alive_fields, decode_default, member_row, raw_packet

INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1
_BOUNDS = (0, CLAIM_STEP, FIRST_SIGHT_MAX, MAX_INCARNATION - CLAIM_STEP, MAX_INCARNATION, UINT64_MAX)
EDGES = sorted(
    {b + d for b in _BOUNDS for d in (-2, -1, 0, 1, 2) if b + d <= UINT64_MAX} | {INT64_MIN, INT64_MIN + 1}
)
# Every integer msgpack can carry, each bound and its neighbours, and the booleans.
WIRE_INTEGERS = (
    st.integers(min_value=INT64_MIN, max_value=UINT64_MAX)
    | st.sampled_from(EDGES)
    | st.integers(min_value=-3, max_value=CLAIM_STEP + 3)
    | st.booleans()
)
SPEC = DeploymentSpec("apps/echo.py:Echo", min_replicas=1, max_replicas=1)


def record_fields(stamp: object) -> list[Any]:
    return [Kind.RECORD, RECORD.name, stamp, RECORD.origin, RECORD.spec.to_wire() if RECORD.spec else None]


def _row(message: Message) -> MemberState:
    assert isinstance(message, PushPull)
    return message.states[0]


# Where each bounded counter sits in a raw message, its maximum, and how to read it back.
COUNTER_FIELDS: dict[str, tuple[Callable[[object], list[Any]], int, Callable[[Any], int]]] = {
    "alive.incarnation": (lambda v: alive_fields(incarnation=v), MAX_INCARNATION, lambda m: m.incarnation),
    "alive.meta_version": (
        lambda v: alive_fields(meta_version=v),
        MAX_META_VERSION,
        lambda m: m.meta_version,
    ),
    "suspect.incarnation": (
        lambda v: [Kind.SUSPECT, "n1", v, "n2"],
        MAX_INCARNATION,
        lambda m: m.incarnation,
    ),
    "dead.incarnation": (lambda v: [Kind.DEAD, "n1", v, "n2"], MAX_INCARNATION, lambda m: m.incarnation),
    "row.incarnation": (
        lambda v: [Kind.PUSH_PULL, False, False, [member_row(incarnation=v)]],
        MAX_INCARNATION,
        lambda m: _row(m).incarnation,
    ),
    "row.meta_version": (
        lambda v: [Kind.PUSH_PULL, False, False, [member_row(meta_version=v)]],
        MAX_META_VERSION,
        lambda m: _row(m).meta_version,
    ),
    "record.stamp": (record_fields, MAX_STAMP, lambda m: m.stamp),
    "ping.seq": (lambda v: [Kind.PING, v, "n1"], MAX_COUNTER, lambda m: m.seq),
}


@settings(max_examples=400, deadline=None, database=None)
@given(st.sampled_from(sorted(COUNTER_FIELDS)), WIRE_INTEGERS)
def test_a_counter_decodes_exactly_when_within_its_maximum(field: str, value: int) -> None:
    build, maximum, read = COUNTER_FIELDS[field]
    data = raw_packet([build(value)])
    if not in_range(value, maximum):
        with pytest.raises(WireError) as caught:
            decode_default(data)
        assert caught.value.reason == "malformed"
        return
    packet = decode_default(data)
    assert read(packet.messages[0]) == value and type(read(packet.messages[0])) is int
    # What decoded encodes again, to the same packet: every encoder accepts the whole range.
    assert decode_default(encode(packet, MESH)) == packet


def test_the_documented_maxima_are_int64() -> None:
    assert MAX_INCARNATION == MAX_META_VERSION == MAX_STAMP == MAX_COUNTER == 2**63 - 1
    assert MAX_STAMP >> COUNTER_BITS == 2**47 - 1  # wall clocks until the year 6429


# -- what a node accepts can never break its own next values ---------------------------------

STRANGER = NodeId("stranger")
SUBJECTS = st.sampled_from([ME, peer(1)[0], peer(2)[0], STRANGER])
CLAIM_KINDS = st.sampled_from(["alive", "suspect", "dead", "left", "record", *(f"row-{s}" for s in Status)])
CLAIMS = st.lists(st.tuples(CLAIM_KINDS, SUBJECTS, WIRE_INTEGERS, WIRE_INTEGERS), min_size=1, max_size=12)


def raw_claim(kind: str, subject: NodeId, value: object, meta_version: object) -> list[Any]:
    """A claim as a peer could write it: any value in any counter."""
    addr = peer(3)[1]
    match kind:
        case "alive":
            return [Kind.ALIVE, subject, value, addr, meta_version, {"name": subject}]
        case "suspect":
            return [Kind.SUSPECT, subject, value, peer(1)[0]]
        case "dead":
            return [Kind.DEAD, subject, value, peer(1)[0]]
        case "left":
            return [Kind.DEAD, subject, value, subject]
        case "record":
            return record_fields(value)
    status = kind.removeprefix("row-")  # a push-pull row in this status
    return [Kind.PUSH_PULL, False, False, [[subject, addr, value, status, meta_version, {"name": "x"}]]]


@pytest.fixture(scope="module")
def store() -> Iterator[NodeStore]:
    with tempfile.TemporaryDirectory() as folder:
        opened = NodeStore(Path(folder))
        opened.load_identity()
        yield opened
        opened.close()


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.sampled_from(EDGES) | st.integers(0, MAX_INCARNATION), CLAIMS)
def test_nothing_accepted_makes_this_nodes_next_values_unencodable_or_unstorable(
    store: NodeStore, own: int, claims: list[tuple[str, NodeId, object, object]]
) -> None:
    assume(in_range(own, MAX_INCARNATION))
    core = core_with_peers(3)
    core.me.incarnation = own
    for number, (kind, subject, value, meta_version) in enumerate(claims):
        data = raw_packet(
            [raw_claim(kind, subject, value, meta_version)], sender=peer(1)[0], sender_addr=peer(1)[1]
        )
        try:
            packet = decode(data, MESH, max_bytes=CONFIG.max_packet_bytes, max_members=CONFIG.max_members)
        except WireError:
            continue  # refused at the edge: never reaches the core
        core.handle(packet, 1.0 + number, WALL_MS)

    # Its next incarnation (one more refutation), metadata version and stamp...
    core.handle(Packet(*peer(2), (Suspect(ME, core.incarnation, peer(2)[0]),)), 20.0, WALL_MS)
    core.update_meta(NodeMeta(name="me", region="changed"))
    core.declare("next", SPEC, wall_ms=WALL_MS)
    record = core.deployments.get("next")
    assert record is not None
    # ...are within the maxima, so every peer decodes them and the store keeps them,
    assert in_range(core.incarnation, MAX_INCARNATION)
    assert in_range(core.me.meta_version, MAX_META_VERSION)
    assert in_range(record.stamp, MAX_STAMP)
    store.save_incarnation(core.incarnation)
    store.save_record(record)
    # and everything it would send, its whole state included, decodes on the other side.
    full_state = PushPull(
        True, False, tuple(m.state() for m in core.members.values()), tuple(core.deployments.all())
    )
    outgoing = Packet(ME, core.me.addr, (full_state, core._alive_of_self()))
    assert (
        decode(encode(outgoing, MESH), MESH, max_bytes=CONFIG.max_packet_bytes, max_members=100) == outgoing
    )


# -- a member can always refute --------------------------------------------------------------

# Views a node can hold of another: anything short of the last step below the maximum, which
# takes some 4.5 * 10^15 claims to reach (bounds.py, "Arithmetic").
VIEWS = st.integers(0, MAX_INCARNATION - CLAIM_STEP - 1) | st.sampled_from(
    [0, 1, FIRST_SIGHT_MAX, FIRST_SIGHT_MAX + CLAIM_STEP, MAX_INCARNATION - CLAIM_STEP - 1]
)
OWN = st.integers(0, MAX_INCARNATION) | st.sampled_from(
    [0, FIRST_SIGHT_MAX, MAX_INCARNATION - 1, MAX_INCARNATION]
)
ACCUSATIONS = st.sampled_from(["suspect", "dead", "left", "row-dead", "row-suspect", "alive"])


def accusation(kind: str, victim: NodeId, value: int, source: NodeId, addr: Address) -> Message:
    meta = NodeMeta(name="forged")
    match kind:
        case "suspect":
            return Suspect(victim, value, source)
        case "dead":
            return Dead(victim, value, source)
        case "left":
            return Dead(victim, value, victim)
        case "row-dead" | "row-suspect":
            status = Status.DEAD if kind == "row-dead" else Status.SUSPECT
            return PushPull(False, False, (MemberState(victim, addr, value, status, 0, meta),))
    # Lifting a view, not moving the member: a forged address is a matter for authentication.
    return Alive(victim, value, addr, value, meta)


@settings(max_examples=100, deadline=None, database=None)
@given(
    own=OWN,
    views=st.tuples(VIEWS, VIEWS, VIEWS),
    kind=ACCUSATIONS,
    # Anything the wire carries, the top of the range, or just past what the accused node holds.
    value=WIRE_INTEGERS
    | st.sampled_from([MAX_INCARNATION, MAX_INCARNATION - 1])
    | st.integers(-2, 3 * CLAIM_STEP),
    above_view=st.booleans(),
    to_victim=st.booleans(),
    forged_sender=st.sampled_from(["attacker", "victim", "observer"]),
    seed=st.integers(0, 2**16),
)
def test_an_accused_member_is_alive_again_in_every_view_whatever_was_claimed(
    own: int,
    views: tuple[int, int, int],
    kind: str,
    value: int,
    above_view: bool,
    to_victim: bool,
    forged_sender: str,
    seed: int,
) -> None:
    """Several cores over the real wire: one member claims anything about another, views as given."""
    sim = Simulation(CONFIG, seed=seed, encode=True)
    victim, x, y, attacker = sim.bootstrap(4)
    cores = {node: sim.nodes[node].core for node in (victim, x, y, attacker)}
    cores[victim].me.incarnation = own
    for observer, view in zip((x, y, attacker), views, strict=True):
        cores[observer].members[victim].incarnation = view
    sender = {"attacker": attacker, "victim": victim, "observer": y}[forged_sender]
    victim_addr = cores[victim].me.addr
    if above_view and type(value) is int and value < 3 * CLAIM_STEP:
        value += views[0]
    packet = Packet(sender, cores[sender].me.addr, (accusation(kind, victim, value, sender, victim_addr),))
    sim.inject(x, packet)
    if to_victim:
        sim.inject(victim, packet)
    sim.run_for(0.05)

    def alive_everywhere() -> bool:
        return all(sim.status_in_view(o, victim) == Status.ALIVE for o in (x, y, attacker))

    # Within a few probe rounds: the victim hears every accusation through gossip, its probes or
    # the suspect's probe, and answers (measured: under half a second of simulated time).
    assert sim.run_until(alive_everywhere, sim.now + 5.0), [sim.status_in_view(o, victim) for o in (x, y)]
    sim.run_for(5.0)  # no suspicion left behind to kill it later
    assert alive_everywhere()
    for core in cores.values():
        assert all(in_range(m.incarnation, MAX_INCARNATION) for m in core.members.values())


def test_a_forged_leave_above_the_members_own_incarnation_is_refuted_within_a_probe_round() -> None:
    """Only the accused view holds the high value, so only a word from that node lets it refute."""
    sim = Simulation(CONFIG, seed=3, encode=True)
    victim, x, y, attacker = sim.bootstrap(4)
    lifted = FIRST_SIGHT_MAX + 5 * CLAIM_STEP  # as forged alives could leave x's view, step by step
    sim.nodes[x].core.members[victim].incarnation = lifted
    forged = Packet(victim, sim.nodes[victim].core.me.addr, (Dead(victim, lifted + 1, victim),))
    sim.inject(x, forged)
    sim.run_for(0.01)
    assert sim.status_in_view(x, victim) == Status.LEFT
    assert sim.run_until(lambda: sim.status_in_view(x, victim) == Status.ALIVE, sim.now + 2.0)
    assert sim.nodes[victim].core.incarnation == lifted + 2
    sim.run_for(2.0)
    assert all(sim.status_in_view(o, victim) == Status.ALIVE for o in (x, y, attacker))


def test_a_dead_at_the_int64_maximum_no_longer_evicts_a_live_node() -> None:
    """The attack from issue 11, in one core: the victim's answer wins over the accusation."""
    core = core_with_peers(3)
    victim, victim_addr = peer(1)
    effects = core.handle(Packet(*peer(2), (Dead(victim, MAX_INCARNATION, peer(2)[0]),)), 1.0, WALL_MS)
    # Never suspected here, so the verdict goes to the victim alone, cut to the step (held 0).
    assert core.members[victim].status == Status.ALIVE
    assert Send(victim_addr, Packet(ME, ME_ADDR, (Suspect(victim, CLAIM_STEP, peer(2)[0]),))) in effects
    # The victim refutes what it heard, the maximum less one, with the maximum itself:
    refutation = Alive(victim, MAX_INCARNATION, victim_addr, 0, NodeMeta(name="peer1"))
    core.handle(Packet(victim, victim_addr, (refutation,)), 1.1, WALL_MS)
    assert core.members[victim].status == Status.ALIVE
    assert core.refused["incarnation"] == 2


def test_a_node_lifted_to_the_maximum_still_refutes_and_never_passes_it() -> None:
    core = core_with_peers(3)
    accuser, accuser_addr = peer(1)
    core.handle(Packet(accuser, accuser_addr, (Suspect(ME, MAX_INCARNATION, accuser),)), 1.0, WALL_MS)
    assert core.incarnation == MAX_INCARNATION
    # Accused again at every value up to the maximum: it answers, and stays at the maximum.
    for number, value in enumerate((MAX_INCARNATION - 1, MAX_INCARNATION, 0)):
        effects = core.handle(
            Packet(accuser, accuser_addr, (Dead(ME, value, accuser),)), 2.0 + number, WALL_MS
        )
        assert core.incarnation == MAX_INCARNATION
        answers = [
            m for e in effects if hasattr(e, "packet") for m in e.packet.messages if isinstance(m, Alive)
        ]
        assert answers and answers[0].incarnation == MAX_INCARNATION


def test_a_record_stamped_at_the_maximum_is_refused_and_later_writes_still_win() -> None:
    core = core_with_peers(2)
    core.declare("echo", SPEC, wall_ms=WALL_MS)
    future = Record("echo", MAX_STAMP, peer(1)[0], None)
    assert core.handle(Packet(*peer(1), (future,)), 1.0, WALL_MS) == []
    assert core.refused["stamp_ahead"] == 1
    held = core.deployments.get("echo")
    assert held is not None and held.spec == SPEC
    core.declare("echo", None, wall_ms=WALL_MS + 1)
    removed = core.deployments.get("echo")
    assert removed is not None and removed.removed and removed.stamp < MAX_STAMP


def test_a_record_exactly_at_the_clock_offset_is_taken_one_millisecond_more_is_not() -> None:
    offset_ms = int(CONFIG.max_clock_offset_s * 1000)
    core = core_with_peers(2)
    at_bound = Record("edge", (WALL_MS + offset_ms) << COUNTER_BITS | 0xFFFF, peer(1)[0], SPEC)
    beyond = Record("beyond", (WALL_MS + offset_ms + 1) << COUNTER_BITS, peer(1)[0], SPEC)
    core.handle(Packet(*peer(1), (at_bound, PushPull(False, False, (), (beyond,)))), 1.0, WALL_MS)
    assert core.deployments.get("edge") == at_bound
    assert core.deployments.get("beyond") is None
    assert dict(core.refused) == {"stamp_ahead": 1}
    # Not stored is not gossiped: only the taken record is queued for peers.
    gossip = [m for e in core.tick(5.0) if hasattr(e, "packet") for m in e.packet.messages]
    assert {m.name for m in gossip if isinstance(m, Record)} <= {"edge"}


def test_the_clock_offset_is_a_knob_with_a_default_of_minutes() -> None:
    assert MembershipConfig.lan().max_clock_offset_s == MembershipConfig.local().max_clock_offset_s == 300.0
    core = Membership(
        MembershipConfig(max_clock_offset_s=1.0), ME, Address("10.0.0.1:1"), NodeMeta(name="me"),
        rng=random.Random(1), now=0.0,
    )  # fmt: skip
    late = Record("late", (WALL_MS + 1_001) << COUNTER_BITS, peer(1)[0], SPEC)
    core.handle(Packet(*peer(1), (late,)), 0.0, WALL_MS)
    assert core.deployments.get("late") is None


def test_a_record_restored_from_disk_is_held_to_the_same_clock_offset() -> None:
    """A write made while this node's clock ran far ahead must not poison its clock after a fix."""
    core = core_with_peers(1)
    written_in_2099 = Record("echo", 4_070_908_800_000 << COUNTER_BITS, ME, SPEC)
    pinned = Record("pinned", 0, ME, SPEC)  # --deploy declares at stamp 0: always in the past
    assert core.merge_record(written_in_2099, WALL_MS) == []
    assert core.refused["stamp_ahead"] == 1
    assert core.merge_record(pinned, WALL_MS) != []
    core.declare("echo", SPEC, wall_ms=WALL_MS)
    held = core.deployments.get("echo")
    assert held is not None and held.wall_ms == WALL_MS  # stamped by the real clock, so peers take it

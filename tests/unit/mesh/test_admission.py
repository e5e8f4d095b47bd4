"""The step rule, one claim at a time: what a node takes of a claim, and what it counts."""

from __future__ import annotations

from meshnode.mesh.admission import Admission
from meshnode.mesh.bounds import CLAIM_STEP, FIRST_SIGHT_MAX, MAX_INCARNATION, MAX_STAMP, taken
from meshnode.mesh.member import Member
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.records import COUNTER_BITS, Record
from meshnode.mesh.types import Address, NodeId, Status
from meshnode.mesh.wire import Alive, Dead, MemberState, Suspect

ME = NodeId("me")
PEER = NodeId("peer")
ADDR = Address("10.0.0.2:7946")
META = NodeMeta(name="peer")
WALL_MS = 1_700_000_000_000


def held(incarnation: int, meta_version: int = 0) -> Member:
    return Member(PEER, ADDR, incarnation, Status.ALIVE, meta_version, META, 0.0)


def test_the_step_is_taken_whole_and_one_more_is_cut_to_it() -> None:
    assert taken(10 + CLAIM_STEP, 10) == 10 + CLAIM_STEP
    assert taken(11 + CLAIM_STEP, 10) == 10 + CLAIM_STEP
    assert taken(MAX_INCARNATION, 10) == 10 + CLAIM_STEP
    assert taken(3, 10) == 3  # lower claims are for the core to ignore, not for the bounds


def test_a_first_sighting_is_cut_to_its_own_cap() -> None:
    assert taken(FIRST_SIGHT_MAX, None) == FIRST_SIGHT_MAX
    assert taken(FIRST_SIGHT_MAX + 1, None) == FIRST_SIGHT_MAX
    assert taken(0, None) == 0


def test_claims_within_the_step_are_the_same_objects_and_count_nothing() -> None:
    admission = Admission(ME, 300.0)
    alive = Alive(PEER, 5 + CLAIM_STEP, ADDR, 3 + CLAIM_STEP, META)
    assert admission.gossip(alive, held(5, 3)) is alive
    row = MemberState(PEER, ADDR, 5, Status.DEAD, 3, META)
    assert admission.row(row, held(5, 3)) is row
    assert not admission.refused


def test_a_claim_past_the_step_keeps_everything_but_the_excess_and_is_counted() -> None:
    admission = Admission(ME, 300.0)
    alive = Alive(PEER, MAX_INCARNATION, ADDR, MAX_INCARNATION, META)
    assert admission.gossip(alive, held(7, 2)) == Alive(PEER, 7 + CLAIM_STEP, ADDR, 2 + CLAIM_STEP, META)
    assert admission.gossip(Dead(PEER, MAX_INCARNATION, ME), held(7)) == Dead(PEER, 7 + CLAIM_STEP, ME)
    assert admission.gossip(Suspect(PEER, 2**62, ME), None) == Suspect(PEER, FIRST_SIGHT_MAX, ME)
    row = MemberState(PEER, ADDR, 2**63 - 1, Status.LEFT, 9, META)
    assert admission.row(row, None) == MemberState(PEER, ADDR, FIRST_SIGHT_MAX, Status.LEFT, 9, META)
    assert admission.refused == {"incarnation": 3, "meta_version": 1}


def test_a_claim_about_this_node_leaves_room_for_its_refutation_only() -> None:
    admission = Admission(ME, 300.0)
    me = Member(ME, ADDR, 0, Status.ALIVE, 0, META, 0.0)
    # Not the step: this node must be able to outbid any view of it, however far ahead.
    far = Suspect(ME, 2**62 + 5 * CLAIM_STEP, PEER)
    assert admission.gossip(far, me) is far
    assert admission.gossip(Dead(ME, MAX_INCARNATION, PEER), me) == Dead(ME, MAX_INCARNATION - 1, PEER)
    # Its own metadata version is never taken from a claim, so it is never cut either.
    alive = Alive(ME, 3, ADDR, MAX_INCARNATION, META)
    assert admission.gossip(alive, me) is alive
    assert admission.refused == {"incarnation": 1}


def test_a_record_up_to_the_clock_offset_is_taken_past_it_refused_and_counted() -> None:
    admission = Admission(ME, 300.0)
    at_offset = Record("a", (WALL_MS + 300_000) << COUNTER_BITS | 0xFFFF, PEER, None)
    past = Record("b", (WALL_MS + 300_001) << COUNTER_BITS, PEER, None)
    at_maximum = Record("c", MAX_STAMP, PEER, None)
    old = Record("d", 0, PEER, None)
    assert admission.record(at_offset, WALL_MS) and admission.record(old, WALL_MS)
    assert not admission.record(past, WALL_MS)
    assert not admission.record(at_maximum, WALL_MS)
    assert admission.refused == {"stamp_ahead": 2}

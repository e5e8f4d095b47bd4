"""Reachability's decisions: whether peers can dial this node, its relays, which way to send."""

from __future__ import annotations

import collections

import msgpack
import pytest

from meshnode.mesh import wire
from meshnode.mesh.config import MembershipConfig
from meshnode.mesh.reachability import (
    Candidate,
    DialCheck,
    Direct,
    OverRoute,
    Reach,
    ThroughRelays,
    choose_relays,
    path_to,
)
from meshnode.mesh.relay_wire import Dialed, DialMe, LinkHello, Relayed
from meshnode.mesh.types import Address, NodeId

CONFIG = MembershipConfig.local()
ME = NodeId("me")
ADDR = Address("10.0.0.9:8471")
LIMIT = 1 << 20


# -- the dial check ------------------------------------------------------------------------


def test_an_answer_on_a_dialed_connection_makes_the_node_direct() -> None:
    check = DialCheck(CONFIG, now=0.0)
    assert check.reach == Reach.UNKNOWN and check.due(0.0)
    check.asked(nonce=7, peers=3, now=0.0)
    assert not check.due(0.1)  # one check at a time
    assert check.dialed(7, now=0.2)
    assert check.reach == Reach.DIRECT
    assert not check.dialed(7, now=0.3)  # no change the second time
    assert check.next_deadline() == pytest.approx(0.2 + CONFIG.dial_recheck_s)


def test_no_answer_in_time_makes_an_undecided_node_relayed() -> None:
    check = DialCheck(CONFIG, now=0.0)
    check.asked(nonce=7, peers=3, now=0.0)
    assert not check.tick(CONFIG.dial_check_timeout_s - 0.01)
    assert check.tick(CONFIG.dial_check_timeout_s)
    assert check.reach == Reach.RELAYED


def test_an_answer_to_a_nonce_never_asked_proves_nothing() -> None:
    check = DialCheck(CONFIG, now=0.0)
    check.asked(nonce=7, peers=1, now=0.0)
    assert not check.dialed(8, now=0.1)
    assert check.reach == Reach.UNKNOWN


def test_a_late_answer_to_a_recent_check_still_counts() -> None:
    check = DialCheck(CONFIG, now=0.0)
    check.asked(nonce=7, peers=1, now=0.0)
    assert check.tick(CONFIG.dial_check_timeout_s)
    assert check.reach == Reach.RELAYED
    assert check.dialed(7, now=CONFIG.dial_check_timeout_s + 0.5)  # a port forwarded meanwhile
    assert check.reach == Reach.DIRECT


def test_a_direct_node_turns_relayed_only_after_two_unanswered_checks_in_a_row() -> None:
    check = DialCheck(CONFIG, now=0.0)
    check.asked(nonce=1, peers=3, now=0.0)
    check.dialed(1, now=0.1)
    recheck_at = 0.1 + CONFIG.dial_recheck_s
    assert check.due(recheck_at)
    check.asked(nonce=2, peers=3, now=recheck_at)
    timeout = recheck_at + CONFIG.dial_check_timeout_s
    assert not check.tick(timeout)  # one miss: asked again at once, still direct
    assert check.reach == Reach.DIRECT and check.due(timeout)
    check.asked(nonce=3, peers=3, now=timeout)
    assert check.tick(timeout + CONFIG.dial_check_timeout_s)
    assert check.reach == Reach.RELAYED


def test_with_nobody_to_ask_the_check_waits_and_tries_again() -> None:
    check = DialCheck(CONFIG, now=0.0)
    check.asked(nonce=1, peers=0, now=0.0)
    assert not check.due(0.1)
    assert check.due(CONFIG.dial_check_timeout_s)
    assert not check.tick(10.0) and check.reach == Reach.UNKNOWN


# -- relays --------------------------------------------------------------------------------


def candidates(*names: str, rtt_s: float | None = None) -> list[Candidate]:
    return [Candidate(NodeId(name), rtt_s) for name in names]


def test_relays_are_count_eligible_peers_never_itself() -> None:
    chosen = choose_relays(ME, (), [*candidates("a", "b", "c", "d"), Candidate(ME, 0.001)], 2)
    assert len(chosen) == 2 and ME not in chosen
    assert set(chosen) <= {"a", "b", "c", "d"}


def test_current_relays_are_kept_while_eligible_so_links_are_not_churned() -> None:
    pool = candidates("a", "b", "c", "d")
    first = choose_relays(ME, (), pool, 2)
    newcomer = candidates("e", "f", "g", rtt_s=0.0001)  # nearer than any: still no reason to move
    assert choose_relays(ME, first, [*pool, *newcomer], 2) == first


def test_a_relay_no_longer_eligible_is_replaced_and_the_other_kept() -> None:
    pool = candidates("a", "b", "c", "d")
    first = choose_relays(ME, (), pool, 2)
    survivors = [c for c in pool if c.node != first[0]]
    second = choose_relays(ME, first, survivors, 2)
    assert first[1] in second and first[0] not in second and len(second) == 2


def test_fewer_candidates_than_wanted_gives_what_there_is() -> None:
    assert choose_relays(ME, (NodeId("gone"),), candidates("a"), 3) == ("a",)
    assert choose_relays(ME, (), [], 2) == ()


def test_relays_are_the_same_for_the_same_inputs_and_spread_over_nodes() -> None:
    pool = candidates(*(f"n{i}" for i in range(10)))
    assert choose_relays(ME, (), pool, 2) == choose_relays(ME, (), list(reversed(pool)), 2)
    firsts = collections.Counter(choose_relays(NodeId(f"edge{i}"), (), pool, 1)[0] for i in range(200))
    assert len(firsts) >= 8  # rendezvous spreads 200 relayed nodes over the 10 peers


def test_near_peers_are_preferred() -> None:
    near = candidates("near", rtt_s=0.001)
    far = candidates(*(f"far{i}" for i in range(5)), rtt_s=0.2)
    picks = collections.Counter(
        choose_relays(NodeId(f"edge{i}"), (), [*near, *far], 1)[0] for i in range(300)
    )
    # Weight 1/RTT: the near peer has 200x the weight of each far one.
    assert picks["near"] > 250


# -- which way -----------------------------------------------------------------------------


RELAYS = {NodeId("r1"): Address("10.0.0.1:8471"), NodeId("r2"): Address("10.0.0.2:8471")}


def test_a_direct_node_is_dialed_even_with_a_route() -> None:
    assert path_to(ADDR, NodeId("n"), "direct", b"route", RELAYS) == Direct(ADDR)


def test_a_live_node_that_opened_a_connection_to_us_is_answered_on_it_while_we_have_none() -> None:
    """One connection per pair: ours is dialed only when the node has none to us, or it is not known
    alive (a suspect's or a dead node's connection may hang), or we already have ours."""
    node = NodeId("n")
    for reach in ("direct", ""):
        assert path_to(ADDR, node, reach, None, {}, opened=b"its", alive=True) == OverRoute(b"its")
        assert path_to(ADDR, node, reach, b"ours", {}, opened=b"its", alive=True) == OverRoute(b"its")
        assert path_to(ADDR, node, reach, None, {}, opened=b"its", alive=True, dialing=True) == Direct(ADDR)
        assert path_to(ADDR, node, reach, None, {}, opened=b"its", alive=False) == Direct(ADDR)
        assert path_to(ADDR, node, reach, None, {}, opened=None, alive=True) == Direct(ADDR)
    # A relayed node's old connection may hang on an expired NAT mapping: its relays, as before.
    path = path_to(ADDR, node, "relayed", None, RELAYS, opened=b"its", alive=True)
    assert path == ThroughRelays(node, tuple(RELAYS.values()))


def test_a_relayed_node_with_a_recent_connection_of_its_own_is_sent_to_on_it() -> None:
    assert path_to(ADDR, NodeId("n"), "relayed", b"route", RELAYS) == OverRoute(b"route")


def test_a_relayed_node_without_one_is_reached_through_every_relay() -> None:
    path = path_to(ADDR, NodeId("n"), "relayed", None, RELAYS)
    assert path == ThroughRelays(NodeId("n"), tuple(RELAYS.values()))


def test_a_node_not_known_yet_is_answered_on_its_connection_else_dialed() -> None:
    # A laptop behind NAT joining: its seed answers on the connection the join came on.
    assert path_to(ADDR, None, "", b"route", {}) == OverRoute(b"route")
    assert path_to(ADDR, None, "", None, {}) == Direct(ADDR)
    assert path_to(ADDR, NodeId("n"), "relayed", None, {}) == Direct(ADDR)  # no relay alive: try


# -- the wire ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message", [LinkHello(), DialMe(7), Dialed(2**62), Relayed(NodeId("n1"), b"\x01" * 100)]
)
def test_link_messages_round_trip(message: wire.Message) -> None:
    packet = wire.Packet(ME, ADDR, (message,))
    assert wire.decode(wire.encode(packet, "m"), "m", max_bytes=LIMIT, max_members=10) == packet


@pytest.mark.parametrize(
    "item",
    [
        [20, 1],  # a hello carries nothing
        [21, -1],  # nonces are int64 in [0, max]
        [21, 2**63],
        [22, "7"],
        [23, "n1"],  # no data
        [23, "n1", b""],  # empty
        [23, "n1", "text"],  # not bytes
        [23, "bad id!", b"x"],
    ],
)
def test_malformed_link_messages_drop_the_packet(item: list[object]) -> None:
    data = msgpack.packb([wire.PROTOCOL_VERSION, "m", ME, ADDR, [item]])
    with pytest.raises(wire.WireError) as caught:
        wire.decode(data, "m", max_bytes=LIMIT, max_members=10)
    assert caught.value.reason == "malformed"


def test_relayed_data_is_bounded_by_the_packet_limit() -> None:
    packet = wire.Packet(ME, ADDR, (Relayed(NodeId("n1"), b"x" * 2000),))
    with pytest.raises(wire.WireError):
        wire.decode(wire.encode(packet, "m"), "m", max_bytes=1000, max_members=10)

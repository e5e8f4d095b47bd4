"""The relay's table: calls for an attached node go down its link and the answers come back up."""

from __future__ import annotations

import zmq

from meshnode.dataplane.relay import RelayTable
from meshnode.mesh.envelope import (
    Attach,
    Call,
    Cancel,
    Chunk,
    Envelope,
    Failure,
    RelayCall,
    Reply,
    decode_envelope,
)

EDGE = "edge-node"
LINK, CALLER, OTHER = b"\x00link", b"\x00caller", b"\x00other"


class Wire:
    """What the table sent, by connection; connections in `gone` refuse sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Envelope]] = []
        self.gone: set[bytes] = set()

    def send(self, peer: bytes, frame: bytes) -> zmq.ZMQError | None:
        if peer in self.gone:
            return zmq.ZMQError(zmq.EHOSTUNREACH)
        self.sent.append((peer, decode_envelope(frame, max_bytes=1 << 20)))
        return None

    def to(self, peer: bytes) -> list[Envelope]:
        return [message for where, message in self.sent if where == peer]


def call(rid: str = "req-1") -> RelayCall:
    return RelayCall(rid, EDGE, Call(rid, "echo", {"text": "hi"}, None, False, "", 5000))


def table(max_in_flight: int = 8) -> tuple[RelayTable, Wire]:
    wire = Wire()
    relays = RelayTable(wire.send, max_in_flight)
    relays.attach(LINK, Attach(EDGE))
    return relays, wire


def test_a_call_goes_down_the_link_and_its_answers_come_back_under_the_callers_id() -> None:
    relays, wire = table()
    relays.pass_on(CALLER, call())
    [down] = wire.to(LINK)
    assert isinstance(down, Call) and down.request_id == "req-1" and down.body == {"text": "hi"}
    assert relays.answer(LINK, Chunk("req-1", 0, "a"))
    assert relays.answer(LINK, Reply("req-1", "done", "application/json", queue=2))
    assert wire.to(CALLER) == [Chunk("req-1", 0, "a"), Reply("req-1", "done", "application/json", queue=2)]
    assert not relays.answer(LINK, Reply("req-1", "again", "application/json"))  # it has ended


def test_a_call_for_a_node_with_no_link_here_is_refused_retryably_at_once() -> None:
    relays, wire = table()
    relays.pass_on(CALLER, RelayCall("x", "elsewhere", Call("x", "echo", {}, None, False, "", 5000)))
    [refusal] = wire.to(CALLER)
    assert isinstance(refusal, Failure) and refusal.retryable and refusal.kind == "peer_unreachable"


def test_only_the_link_that_got_a_call_may_answer_it() -> None:
    relays, wire = table()
    relays.pass_on(CALLER, call())
    assert not relays.answer(OTHER, Reply("req-1", "forged", "application/json"))
    assert wire.to(CALLER) == []


def test_two_callers_with_the_same_id_get_two_calls_down_the_link() -> None:
    relays, wire = table()
    relays.pass_on(CALLER, call("same"))
    relays.pass_on(OTHER, call("same"))
    first, second = wire.to(LINK)
    assert first.request_id == "same" and second.request_id not in ("same", "")
    relays.answer(LINK, Reply(second.request_id, "b", "text/plain"))
    relays.answer(LINK, Reply("same", "a", "text/plain"))
    assert wire.to(OTHER) == [Reply("same", "b", "text/plain")]
    assert wire.to(CALLER) == [Reply("same", "a", "text/plain")]


def test_a_callers_cancel_follows_the_call_down() -> None:
    relays, wire = table()
    relays.pass_on(CALLER, call())
    assert relays.cancel(CALLER, "req-1")
    assert wire.to(LINK)[-1] == Cancel("req-1")
    assert not relays.cancel(CALLER, "req-1")


def test_a_lost_link_fails_what_is_outstanding_retryably_and_new_calls_are_refused() -> None:
    relays, wire = table()
    relays.pass_on(CALLER, call())
    wire.gone.add(LINK)
    relays.pass_on(CALLER, call("req-2"))  # the send fails: the link is gone
    failures = wire.to(CALLER)
    assert [(f.request_id, f.kind, f.retryable) for f in failures] == [  # type: ignore[union-attr]
        ("req-1", "peer_lost", True),
        ("req-2", "peer_unreachable", True),
    ]
    assert relays.attached() == []


def test_attaching_again_on_a_new_connection_ends_the_calls_of_the_old_one() -> None:
    relays, wire = table()
    relays.pass_on(CALLER, call())
    relays.attach(b"\x00new-link", Attach(EDGE))
    [lost] = wire.to(CALLER)
    assert isinstance(lost, Failure) and lost.kind == "peer_lost"
    relays.pass_on(CALLER, call("req-2"))
    assert wire.to(b"\x00new-link")[0].request_id == "req-2"


def test_a_caller_may_have_at_most_max_in_flight_calls_through_the_relay() -> None:
    relays, wire = table(max_in_flight=2)
    for i in range(3):
        relays.pass_on(CALLER, call(f"r{i}"))
    assert len(wire.to(LINK)) == 2
    [refusal] = wire.to(CALLER)
    assert isinstance(refusal, Failure) and refusal.kind == "overloaded" and refusal.retryable

"""``Submitted``: a call that wants only its last answer gets exactly one, or none once cancelled,
and the replica's bookkeeping runs once, before the answer is handed over."""

from __future__ import annotations

from meshnode.mesh.envelope import Call, Chunk, Encoded, Envelope, Failure, Progress, Reply, encode_envelope
from meshnode.serving.submitted import CANCELLED, Submitted


def make_call(rid: str = "r-1") -> Call:
    return Call(rid, "echo", {"text": "hi"}, None, False, "application/json", 2500)


class Recorder:
    """Records the order of the replica's bookkeeping (`finish`) and the answers handed over."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Envelope | None]] = []

    def finish(self, answer: Envelope | None) -> None:
        self.events.append(("finish", answer))

    def answer(self, answer: Envelope) -> None:
        self.events.append(("answer", answer))


def submitted(rid: str = "r-1") -> tuple[Submitted, Recorder]:
    recorder = Recorder()
    return Submitted(make_call(rid), recorder.answer, recorder.finish), recorder


def test_the_reply_ends_it_after_the_bookkeeping_and_later_answers_go_nowhere() -> None:
    call, recorder = submitted()
    reply = Reply("r-1", {"echo": "hi"}, "application/json")

    call.put_nowait(Progress("r-1", 1, 4))  # nobody asked for it
    call.put_nowait(Chunk("r-1", 0, "piece"))  # nor for pieces of a stream
    call.put_nowait(reply)
    call.put_nowait(Failure("r-1", "replica_crashed", "the worker exited", True))  # too late
    call.put_nowait(None)  # the deadline's timer, had it not been cancelled
    call.cancel()

    assert recorder.events == [("finish", reply), ("answer", reply)]
    assert call.ended == reply


def test_a_failure_is_handed_over_as_it_came() -> None:
    call, recorder = submitted()
    failure = Failure("r-1", "predictor", "bad input", False)

    call.put_nowait(failure)

    assert recorder.events == [("finish", failure), ("answer", failure)]


def test_the_deadline_ends_it_with_the_failure_a_stream_would_raise_and_stops_the_worker() -> None:
    call, recorder = submitted("d-1")

    call.put_nowait(None)
    call.put_nowait(Reply("d-1", "late", "application/json"))

    # finish(None): the replica tells its worker to stop the request.
    assert recorder.events == [
        ("finish", None),
        ("answer", Failure("d-1", "deadline_exceeded", "echo did not answer within 2.5 s", False)),
    ]


def test_a_cancelled_call_is_never_answered_and_stops_the_worker_once() -> None:
    call, recorder = submitted()

    call.cancel()
    call.cancel()
    call.put_nowait(Reply("r-1", "after the cancel", "application/json"))
    call.put_nowait(None)

    assert recorder.events == [("finish", None)]
    assert call.ended is CANCELLED


def test_a_reply_as_the_worker_encoded_it_ends_it_as_a_reply_does() -> None:
    call, recorder = submitted()
    encoded = Encoded("r-1", encode_envelope(Reply("r-1", {"echo": "hi"}, "application/json")))
    call.put_nowait(encoded)
    call.put_nowait(Reply("r-1", {"late": True}, "application/json"))
    assert recorder.events == [("finish", encoded), ("answer", encoded)]

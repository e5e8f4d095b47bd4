"""``InFlight``: the calls a replica's worker has now, where each one's answers go, and their deadlines.

``Replica`` (``replica.py``) adds a call when it sends it to the worker and forgets it when the call
ended; the worker's answers are handed to the call's sink (a stream's ``Answers``, or a
``Submitted`` call) as they are read. What this table keeps, by request id:

- the sink, until the call ended (its stream closed, or its submitted answer given): the replica's
  queue depth is how many there are;
- the deadline, on the replica's one timer (``dataplane/deadline_timer.py``): past it the sink
  gets None, which its reader answers with a 504;
- the deadline again, until the worker answered (``overdue``): a worker still busy with a call long
  after its deadline hangs, and the replica restarts it.

A submitted call is a peer's (``dataplane/server.py``), and its ``Reply`` goes back to that peer:
it is handed on as the worker wrote it (``Encoded``), not decoded here to be encoded again there
(``mesh/envelope_frames.py``).
"""

from __future__ import annotations

from ..dataplane.answers import Sink, time_out
from ..dataplane.deadline_timer import DeadlineTimer
from ..mesh.deadlines import Deadline
from ..mesh.envelope import Encoded, Envelope, Failure, Reply
from ..mesh.envelope_frames import reply_request_id
from .submitted import Submitted

__all__ = ["InFlight"]


class InFlight:
    """One replica's calls in flight at its worker (see the module docstring)."""

    __slots__ = ("_deadlines", "_overdue", "_sinks")

    def __init__(self) -> None:
        self._sinks: dict[str, Sink] = {}
        self._overdue: dict[str, float] = {}  # request id -> deadline, until the worker answers
        self._deadlines: DeadlineTimer[Sink] = DeadlineTimer(time_out)

    def __len__(self) -> int:
        """Calls the worker has and that have not ended."""
        return len(self._sinks)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._sinks

    def add(self, request_id: str, sink: Sink, deadline: float) -> Deadline[Sink]:
        """A call sent to the worker, its answers to go to `sink`; its deadline, cancelled when it ends."""
        self._sinks[request_id] = sink
        self._overdue[request_id] = deadline
        return self._deadlines.at(deadline, sink)

    def forget(self, request_id: str) -> None:
        """The call ended: it counts no more (a late answer of the worker's goes nowhere)."""
        self._sinks.pop(request_id, None)

    def take_reply(self, frame: bytes | bytearray) -> bool:
        """Hand a submitted call its Reply as the worker wrote it; False when `frame` is not one."""
        if type(frame) is not bytes:  # a large frame read into a buffer of its own: decoded instead
            return False
        rid = reply_request_id(frame)
        if rid is None:
            return False
        sink = self._sinks.get(rid)
        if not isinstance(sink, Submitted):
            return False
        self._overdue.pop(rid, None)
        sink.put_nowait(Encoded(rid, frame))
        return True

    def answer(self, message: Envelope) -> None:
        """A decoded answer of the worker's, to its call's sink (if the call has not ended)."""
        if isinstance(message, Reply | Failure):
            self._overdue.pop(message.request_id, None)
        sink = self._sinks.get(message.request_id)
        if sink is not None:
            sink.put_nowait(message)

    def fail_all(self, reason: str) -> None:
        """The worker is gone: every call fails as retryable (it may run again elsewhere)."""
        self._overdue.clear()
        for rid, sink in list(self._sinks.items()):
            sink.put_nowait(Failure(rid, "replica_crashed", reason, True))

    def hung(self, now: float, grace_s: float) -> list[str]:
        """The calls the worker still has `grace_s` past their deadlines at `now`."""
        return [rid for rid, deadline in self._overdue.items() if now > deadline + grace_s]

    def forgive(self) -> None:
        """The worker is being restarted: nothing it had counts as hung any more."""
        self._overdue.clear()

    def close(self) -> None:
        """The replica stopped: no deadline fires any more."""
        self._deadlines.close()

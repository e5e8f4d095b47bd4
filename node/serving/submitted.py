"""``Submitted``: a call to a replica that wants only its last answer, answered by callback.

Most calls neither stream nor report progress: a peer's request on the data-plane server
(``dataplane/server.py``) wants the replica's ``Reply`` or ``Failure`` and nothing before it. For
those, ``Replica.submit(call, on_answer)`` replaces ``Replica.call``'s stream of one: the worker's
answer goes to ``on_answer`` from the callback that read it, with no task to wake and no generator
to step (a task and a stream cost the serving node about 5 µs per request, in-process).

The replica's answers arrive through ``put_nowait``, as into a stream's ``Answers``:

- a ``Reply`` or ``Failure`` ends the call: the replica's bookkeeping runs (``finish``), then
  ``on_answer`` gets it; so does an ``Encoded`` one, which the replica gives for a Reply it hands
  on as the worker wrote it (``in_flight.py``);
- ``None`` is the deadline's timer: the call ends with the ``DeadlineExceeded`` failure a stream
  would have raised, and the worker is told to stop;
- anything else (a ``Progress`` or ``Chunk`` nobody asked for) is dropped, as the stream's reader
  would have dropped it;
- after the end, nothing: a late answer, or one after ``cancel``, goes nowhere.

``cancel()`` ends it without an answer (the peer cancelled, or its link is gone): the worker is
told to stop and ``on_answer`` is never called.
"""

from __future__ import annotations

from collections.abc import Callable

from ..dataplane.answers import past_deadline
from ..errors import DeadlineExceeded
from ..mesh.envelope import Call, Encoded, Envelope, Failure, Reply

__all__ = ["Submitted"]


class Submitted:
    """One call submitted to a replica: where its answers go, and how it is cancelled."""

    __slots__ = ("_call", "_finish", "_on_answer", "ended")

    def __init__(
        self,
        call: Call,
        on_answer: Callable[[Envelope], None],
        finish: Callable[[Envelope | None], None],
    ) -> None:
        self._call = call
        self._on_answer = on_answer
        # The replica's bookkeeping at the end: the answer, or None when cancelled.
        self._finish = finish
        # How it ended: its answer, the deadline's error, or a cancellation; None while it runs.
        self.ended: Envelope | DeadlineExceeded | Cancelled | None = None

    def put_nowait(self, item: Envelope | None) -> None:
        """An answer from the replica's worker, or None from the deadline's timer (see the module)."""
        if self.ended is not None:
            return
        if item is None:
            error = self.ended = past_deadline(self._call)
            self._finish(None)
            self._on_answer(Failure(self._call.request_id, error.kind, error.message, error.retryable))
        elif isinstance(item, Reply | Failure | Encoded):
            self.ended = item
            self._finish(item)
            self._on_answer(item)

    def cancel(self) -> None:
        """Stop it without an answer (the worker is told); nothing once it ended."""
        if self.ended is None:
            self.ended = CANCELLED
            self._finish(None)


class Cancelled:
    """How a submitted call that was cancelled ended."""


CANCELLED = Cancelled()

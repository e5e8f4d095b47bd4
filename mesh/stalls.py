"""Noticing that this node stalled, so that its own stall counts against none of its peers.

A process that was paused (SIGSTOP, a virtual machine's pause, a long garbage collection, a core
starved by other work) resumes with timers long due and its peers' packets unread in its sockets,
and an event loop runs due timers before it reads: the probe whose ack is waiting would fail, and a
suspect whose refutation is waiting would be declared dead. Lifeguard (Dadgar et al., 2018) makes a
slow node doubt itself rather than its peers; this is the same rule for a node that stopped.

A stall shows as a tick run later than the core's earliest probe or suspicion timer by more than a
probe timeout. Only a tick fires timers, so only a tick looks; a packet read first after the stall
fails nothing. ``StallWatch`` remembers the last tick; the stall is taken as the time since then (the
shell ticks at every deadline, so that is the pause and at most one timer's wait before it), and the
core moves its probe and suspicion timers by it (``Membership._resume_after_stall``): each keeps
the time it had left, or a little more. Timers run on time never move, so the simulator's rounds
and every formula stay as they were.

A core is made before its shell starts ticking (the agent builds its other parts in between), and
its timers run from the moment it was made: the first tick would take that gap for a stall. The
shell says when it begins (``begin``); lateness counts from then at the earliest.
"""

from __future__ import annotations

__all__ = ["StallWatch"]


class StallWatch:
    """When the core last ticked, and how many stalls it has seen."""

    def __init__(self, threshold_s: float, now: float) -> None:
        self._threshold_s = threshold_s  # lateness past a timer that counts as a stall
        self._last_now = now
        self._ticking_since = now  # no timer is late before the shell ticks
        self.count = 0

    def begin(self, now: float) -> None:
        """The shell ticks from `now` on: timers due before it waited for the start, not a stall."""
        self._last_now = self._ticking_since = now

    def stalled_s(self, now: float, earliest_due: float) -> float:
        """How long this node stalled before `now`, given its earliest timer was due at
        `earliest_due`; 0 when it ran in time. Remembers `now` as the last tick."""
        last, self._last_now = self._last_now, now
        if now - max(earliest_due, self._ticking_since) <= self._threshold_s:
            return 0.0
        self.count += 1
        return now - last

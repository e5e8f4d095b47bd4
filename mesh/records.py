"""The deployment table every node holds: last writer wins by a hybrid logical clock, with tombstones.

Every change to a deployment (declare, change, remove) is a ``Record`` stamped by the writer's hybrid
logical clock (Kulkarni et al., "Logical Physical Clocks", 2014) and its node id. Records travel by
gossip and push-pull like membership news (``membership.py``); each node keeps, per name, the record
with the highest ``(stamp, origin)``. Invariants:

- Merging is commutative, associative and idempotent, so every node that has seen the same records
  holds the same table whatever order they came in: the property leaderless placement rests on.
- A clock never runs backwards and moves past every stamp it has seen, so a write made after seeing
  a record always wins over it, even on a node whose wall clock is behind.
- A removal is a record with no spec (a tombstone). It wins over the spec it removes and is kept for
  ``tombstone_ttl_s`` so a node that missed the removal cannot bring the deployment back; past
  that it is dropped. A node offline longer than the TTL may resurrect it (as in Cassandra).
- Stamp 0 is below every clock reading: ``--deploy`` declares its name at stamp 0, so any deliberate
  declaration anywhere in the mesh wins over it.

A stamp is one integer: wall milliseconds shifted left 16 bits, plus a counter for events within the
same millisecond. It never exceeds ``bounds.MAX_STAMP`` (an int64): the clock refuses to go past it,
and the membership core refuses records stamped further ahead of its wall clock than
``max_clock_offset_s`` (``bounds.py`` has the arithmetic), so only a wall clock reading past the
year 6429 could bring a clock near the maximum.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgpack

from .bounds import MAX_STAMP
from .deployment import DeploymentSpec
from .types import NodeId

__all__ = ["COUNTER_BITS", "DeploymentTable", "HybridClock", "Record"]

COUNTER_BITS = 16


@dataclass(frozen=True)
class Record:
    """The latest word on one deployment: its spec, or None once removed."""

    name: str
    stamp: int
    origin: NodeId
    spec: DeploymentSpec | None

    @property
    def removed(self) -> bool:
        """A tombstone."""
        return self.spec is None

    @property
    def wall_ms(self) -> int:
        """The writer's wall clock (milliseconds since the epoch) when it wrote the record."""
        return self.stamp >> COUNTER_BITS

    def newer_than(self, other: Record) -> bool:
        """Whether this record wins over `other` (same name)."""
        if (self.stamp, self.origin) != (other.stamp, other.origin):
            return (self.stamp, self.origin) > (other.stamp, other.origin)
        # Equal stamps from one origin only happen at stamp 0 (a node restarted with another
        # --deploy): the content decides then, a removal first, so every node still agrees.
        return self._content() > other._content()

    def _content(self) -> tuple[bool, bytes]:
        return (self.spec is None, b"" if self.spec is None else msgpack.packb(self.spec.wire))


class HybridClock:
    """Stamps for local writes: never backwards, always after everything observed."""

    def __init__(self) -> None:
        self.last = 0

    def stamp(self, wall_ms: int) -> int:
        """A stamp for a write now, greater than every stamp issued or observed."""
        # Otherwise the counter's + 1: after 65536 writes in one millisecond it carries into the next.
        stamp = wall_ms << COUNTER_BITS if wall_ms > self.last >> COUNTER_BITS else self.last + 1
        if stamp > MAX_STAMP:
            # Never a stamp no peer could decode: the write fails here instead.
            raise OverflowError(f"the hybrid clock cannot stamp past {MAX_STAMP} (wall clock {wall_ms} ms)")
        self.last = stamp
        return stamp

    def observe(self, stamp: int) -> None:
        """Move past a stamp seen in a remote record."""
        self.last = max(self.last, stamp)


class DeploymentTable:
    """Deployment name -> its winning record (tombstones included until they expire)."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.clock = HybridClock()
        # Raised on every change, so views derived from the table are cached against it.
        self.version = 0

    def merge(self, record: Record) -> bool:
        """Keep `record` if it wins over what we hold; True when the table changed."""
        self.clock.observe(record.stamp)
        held = self.records.get(record.name)
        if held is not None and not record.newer_than(held):
            return False
        self.records[record.name] = record
        self.version += 1
        return True

    def write(self, name: str, spec: DeploymentSpec | None, origin: NodeId, wall_ms: int) -> Record:
        """A local declaration (or removal, spec None), stamped now and merged."""
        record = Record(name, self.clock.stamp(wall_ms), origin, spec)
        self.merge(record)
        return record

    def live(self) -> list[Record]:
        """Declared deployments (no tombstones), by name."""
        return sorted((r for r in self.records.values() if not r.removed), key=lambda r: r.name)

    def get(self, name: str) -> Record | None:
        """The record of `name`, tombstone or not."""
        return self.records.get(name)

    def all(self) -> Iterable[Record]:
        """Every record, tombstones included (what push-pull sends)."""
        return self.records.values()

    def expire(self, wall_ms: int, tombstone_ttl_s: float) -> list[str]:
        """Drop tombstones older than the TTL; return their names."""
        horizon = wall_ms - int(tombstone_ttl_s * 1000)
        old = [name for name, r in self.records.items() if r.removed and 0 < r.wall_ms < horizon]
        for name in old:
            del self.records[name]
        if old:
            self.version += 1
        return old

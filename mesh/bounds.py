"""The largest numbers the mesh accepts, and the rules that keep every node far below them.

Three counters cross the wire and are kept on disk: a node's incarnation, its metadata version and
the stamps of deployment records (``records.py``). msgpack carries any integer from -2^63 to
2^64 - 1 and sqlite an int64, so each has one documented maximum, that of an int64:

    MAX_INCARNATION = MAX_META_VERSION = MAX_STAMP = 2^63 - 1

``wire.decode`` refuses any other value as malformed, ``NodeStore`` refuses to write one (it raises
before any write), so every encoder, decoder and the sqlite ``INTEGER`` column accept every value
in range, and nothing else is ever stored.

A maximum alone does not protect a member: SWIM refutes an accusation at incarnation ``i`` with
``i + 1``, so an accusation at the maximum could never be refuted, and whoever sent it would evict
the node for the dead-retention hour. The rules below keep every view far from the maximum:

- **The step** (``taken``). A node takes a claim about another node (``alive``, ``suspect``,
  ``dead``, a push-pull row) at no more than ``CLAIM_STEP`` (2^10) above the incarnation it holds
  of that node, and a first sighting at no more than ``FIRST_SIGHT_MAX`` (2^62); the same for
  metadata versions. The claim is cut, not refused: cut, it is a weaker form of the same claim,
  so anything that beats the claim beats the cut one too, and a true refutation still wins.
- **Claims about this node itself** are cut to ``MAX_INCARNATION - 1`` only, not by the step: a
  node must outbid whatever a peer holds of it, and the cut leaves room for its ``+ 1``. A packet
  can therefore lift a node's own incarnation to the maximum at once, which is harmless: an
  accusation held below it is answered with the node's ``alive``, which each peer takes at its
  own view plus the step, above the accusation. Only a *view* at the maximum is unrefutable. (So
  that every accusation reaches its subject, a node tells a member it holds suspect, dead or left
  when that member probes it: ``Membership.handle``.)
- **Stamps** (``stamp_ahead``). A record whose stamp reads more than ``max_clock_offset_s``
  (``config.py``) ahead of the receiver's wall clock, whether from a peer or from the node's own
  database, is refused: not merged, not stored, not passed on, as CockroachDB refuses timestamps
  past its maximum clock offset. A hybrid clock therefore only ever sees stamps near some node's
  real clock, and its own ``+ 1`` always has room: ``MAX_STAMP`` holds wall clocks until the year
  6429.

Why cut rather than refuse, and why the rule ignores the packet's sender: every member holds the
mesh's key, so a buggy or compromised one can write any sender id. A rule that trusted "the
subject's own claim" could be talked into lifting a view to the maximum with one packet. Refusing
big steps instead of cutting them would strand honest news: once a member's own incarnation was
lifted, peers holding it lower would refuse its ``alive`` and then could not hear its refutations.
An honest incarnation rises by one per refutation or restart, so honest news is never cut; if it
were, the view would catch up by ``CLAIM_STEP`` with every claim.

Arithmetic. A view rises by at most ``CLAIM_STEP`` per claim taken, after a first sighting at
``FIRST_SIGHT_MAX`` at most. For a view to reach the maximum, one node must take
``(2^63 - 1 - 2^62) / 2^10``, about 4.5 * 10^15, claims about that one node: at a million claims a
second, far more than the core can process, that takes 143 years. A node's own metadata version
rises only by its own updates, one each: 2^63 of them at a thousand a second take 292 million years.
A record clock runs ahead of its node's wall clock by at most ``max_clock_offset_s``, plus one
millisecond per 65,536 writes within one millisecond.

Cut claims and refused records are counted by reason (``REFUSAL_REASONS``) in
``admission.Admission.refused`` and exported as ``meshnode_gossip_refused_total`` (docs/membership.md,
"Bounds"). This module is the numbers and the pure checks; ``admission.py`` applies them to messages.
"""

from __future__ import annotations

from typing import Literal, TypeGuard

__all__ = [
    "CLAIM_STEP",
    "FIRST_SIGHT_MAX",
    "INT64_MAX",
    "MAX_INCARNATION",
    "MAX_META_VERSION",
    "MAX_STAMP",
    "REFUSAL_REASONS",
    "RefusalReason",
    "in_range",
    "stamp_ahead",
    "taken",
]

# The wire's (msgpack int64) and sqlite's integer type.
INT64_MAX = 2**63 - 1
MAX_INCARNATION = INT64_MAX
MAX_META_VERSION = INT64_MAX
MAX_STAMP = INT64_MAX
# How far above the held value a claim is taken. Honest values rise by one per refutation, restart
# or metadata change, so 1024 is never reached in practice; smaller makes the maximum harder to reach.
CLAIM_STEP = 2**10
# A node seen for the first time: far below the maximum, so the step has 2^62 of room above it.
FIRST_SIGHT_MAX = 2**62

RefusalReason = Literal["incarnation", "meta_version", "stamp_ahead", "keys_full"]
REFUSAL_REASONS: tuple[RefusalReason, ...] = ("incarnation", "meta_version", "stamp_ahead")


def in_range(value: object, maximum: int) -> TypeGuard[int]:
    """Whether `value` is an integer, not a bool, in ``[0, maximum]``."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum


def taken(claimed: int, held: int | None) -> int:
    """How much of a claimed incarnation or metadata version to take about another node."""
    limit = FIRST_SIGHT_MAX if held is None else held + CLAIM_STEP
    return claimed if claimed <= limit else limit


def stamp_ahead(stamp_wall_ms: int, wall_ms: int, max_offset_ms: int) -> bool:
    """Whether a stamp's wall clock reads more than `max_offset_ms` ahead of the clock `wall_ms`."""
    return stamp_wall_ms > wall_ms + max_offset_ms

"""A node's full state (push-pull) in parts that each fit one packet.

memberlist sends its full state over a TCP stream of any length; here every packet is one ZeroMQ
frame, which a receiver drops above ``max_packet_bytes`` (4 MiB). Two thousand members describing
themselves in ~2 KB each (a dozen deployments) are more than that, and then every push-pull is
lost: a joiner never gets its seed's view and sees nobody, and anti-entropy stops repairing.

So a full state larger than ``part_bytes`` goes as several ``PushPull`` messages, each in a packet of
its own, each under the bound. Merging a push-pull is per member and per record (a row it does not
list says nothing), so each part is merged as it comes, in any order, and a lost part costs only
what it listed, until the next exchange. The first part carries the sender's flags and its keyring;
only the first asks for a reply, so the receiver answers once, with its own state in parts.

Invariants: every member row, record and key of the state is in exactly one part, in their order;
no part's encoded size exceeds ``part_bytes`` unless it holds one row that alone does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from .access import ApiKey
from .records import Record
from .wire import MemberState, PushPull, encoded_size

__all__ = ["push_pull_parts"]

_EMPTY = PushPull(False, False, ())
_EMPTY_BYTES = encoded_size(_EMPTY)
# A part's three arrays grow their msgpack headers from 1 byte up to 5 as they fill.
_HEADER_GROWTH_BYTES = 3 * 4

Row = TypeVar("Row")


def push_pull_parts(whole: PushPull, part_bytes: int) -> list[PushPull]:
    """`whole` as it is when it fits `part_bytes` encoded, else cut into parts that each do."""
    if encoded_size(whole) <= part_bytes:
        return [whole]
    room = part_bytes - encoded_size(replace(_EMPTY, keyring=whole.keyring)) - _HEADER_GROWTH_BYTES
    parts = [replace(_EMPTY, states=rows) for rows in _cut(whole.states, room, _state_bytes)]
    parts += [replace(_EMPTY, records=rows) for rows in _cut(whole.records, room, _record_bytes)]
    parts += [replace(_EMPTY, keys=rows) for rows in _cut(whole.keys, room, _key_bytes)]
    first = parts[0] if parts else _EMPTY
    parts[:1] = [replace(first, reply_wanted=whole.reply_wanted, join=whole.join, keyring=whole.keyring)]
    return parts


def _cut(rows: Sequence[Row], room: int, size_of: Callable[[Row], int]) -> list[tuple[Row, ...]]:
    """`rows` in order, in runs whose sizes add up to at most `room` (a larger row alone)."""
    runs: list[tuple[Row, ...]] = []
    run: list[Row] = []
    used = 0
    for row in rows:
        size = size_of(row)
        if run and used + size > room:
            runs.append(tuple(run))
            run, used = [], 0
        run.append(row)
        used += size
    if run:
        runs.append(tuple(run))
    return runs


def _state_bytes(row: MemberState) -> int:
    return _added(replace(_EMPTY, states=(row,)))


def _record_bytes(row: Record) -> int:
    return _added(replace(_EMPTY, records=(row,)))


def _key_bytes(row: ApiKey) -> int:
    return _added(replace(_EMPTY, keys=(row,)))


def _added(single: PushPull) -> int:
    """What the one row of `single` adds to an empty push-pull (a key also its array's header)."""
    return encoded_size(single) - _EMPTY_BYTES

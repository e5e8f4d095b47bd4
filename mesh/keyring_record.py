"""The mesh's tokens as one gossiped record: how a token rotation reaches every node.

A ``KeyringRecord`` lists the tokens every node should hold, the primary (the one that seals) first.
Like a deployment record it is stamped by the writer's hybrid logical clock and the newest
``(stamp, origin)`` wins (``records.py``), so a rotation's three steps (install a new token, make
it primary, remove the old one) reach every node in order, each step a new record. It travels
only inside sealed gossip, so only holders of a current token ever read one. Nodes never gossip a
record until a rotation writes one: before that, each node's ring is the token it started with.

Bounds: 1 to ``MAX_RING_TOKENS`` tokens, each ``MIN_TOKEN_CHARS`` to ``MAX_TOKEN_CHARS`` printable
characters with no surrounding spaces (``node/trust/token.py`` takes the same), no duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass

from .bounds import MAX_STAMP, in_range
from .types import NodeId

__all__ = ["MAX_RING_TOKENS", "MAX_TOKEN_CHARS", "MIN_TOKEN_CHARS", "KeyringRecord", "check_ring"]

MIN_TOKEN_CHARS = 32
MAX_TOKEN_CHARS = 1024
# The current token, a rotation's new one, and room for an operator's mistakes.
MAX_RING_TOKENS = 8


def check_ring(tokens: object) -> tuple[str, ...]:
    """`tokens` as a valid ring; ValueError naming what is wrong (never echoing a token)."""
    if not isinstance(tokens, list | tuple) or not 1 <= len(tokens) <= MAX_RING_TOKENS:
        raise ValueError(f"a keyring holds 1 to {MAX_RING_TOKENS} tokens")
    for token in tokens:
        if not isinstance(token, str) or not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
            raise ValueError(f"a token has {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters")
        if not token.isprintable() or token != token.strip():
            raise ValueError("a token is printable characters with no surrounding spaces")
    if len(set(tokens)) != len(tokens):
        raise ValueError("a keyring holds each token once")
    return tuple(tokens)


@dataclass(frozen=True)
class KeyringRecord:
    """The tokens every node should hold, primary first, as of one write."""

    tokens: tuple[str, ...]
    stamp: int
    origin: NodeId

    def __repr__(self) -> str:  # never print a token by accident
        return f"KeyringRecord({len(self.tokens)} tokens, stamp={self.stamp}, origin={self.origin})"

    def newer_than(self, other: KeyringRecord | None) -> bool:
        """Whether this record wins over `other`."""
        return other is None or (self.stamp, self.origin, self.tokens) > (
            other.stamp,
            other.origin,
            other.tokens,
        )

    def to_wire(self) -> list[object]:
        """The msgpack row: [stamp, origin, tokens]."""
        return [self.stamp, self.origin, list(self.tokens)]

    @classmethod
    def from_wire(cls, row: object) -> KeyringRecord:
        """Validate a decoded row strictly; ValueError on anything unexpected."""
        if not isinstance(row, list) or len(row) != 3:
            raise ValueError("a keyring record must be a 3-item array")
        stamp, origin, tokens = row
        if not in_range(stamp, MAX_STAMP):
            raise ValueError(f"a keyring stamp is an integer in [0, {MAX_STAMP}]")
        if not isinstance(origin, str) or not 1 <= len(origin) <= 64:
            raise ValueError("a keyring record's origin is a node id")
        return cls(check_ring(tokens), stamp, NodeId(origin))

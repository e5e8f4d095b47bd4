"""Prefix affinity: the requests of one conversation prefer one replica, chosen alike by every node.

A chat model's replica keeps the attention state (the KV cache) of the prompts it has seen, so a
conversation's next turn, which resends the whole history, runs much faster where its previous turn
ran (vLLM's automatic prefix caching; Ray Serve's prefix-aware router exists for this). Two parts:

- ``conversation_key(user, messages)``: the key the chat layer derives from an OpenAI request. The
  client's ``user`` when it sends one; otherwise a hash of the *leading* messages (the system
  messages before the first user message, and that message). Every later turn of a conversation
  resends those same leading messages followed by the newer ones, so all its turns get one key
  without any state kept between them, and the replica that served turn one holds the KV cache of
  exactly that prefix. Two conversations that open alike share a key, and a cached prefix too.
- ``preferred(key, candidates)``: the replica that key prefers, by weighted rendezvous hashing
  (highest random weight, ``placement.score``) of (key, node id), weighted by the replica's slots.
  It needs no shared state and no coordination: every entry node computes the same answer from the
  same candidates. When a replica leaves, only the conversations that preferred it move (each to
  its next in rank); when one joins it takes only the keys it now outranks, about 1/N of them. A
  replica with more slots draws proportionally more conversations.

The routing policy (``routing.rank``) puts the preferred replica first while it has a free slot,
and otherwise falls back to power-of-two-choices: affinity is a preference for a cache, never a
reason to queue behind a busy replica while others are idle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from .placement import score
from .types import NodeId

__all__ = ["MAX_KEY_CHARS", "Replica", "conversation_key", "preferred"]

# The forwarder's contract with the chat layer: a key is at most this long (it is hashed per replica
# per request, and a client's ``user`` is theirs to make as long as they like).
MAX_KEY_CHARS = 128
# 16 bytes: collisions between distinct conversations only cost a shared replica, never a wrong answer.
_DIGEST_BYTES = 16


class Replica(Protocol):
    """What rendezvous needs of a replica (``routing.Candidate`` has it)."""

    @property
    def node(self) -> NodeId:
        """The id of the node it runs on: one replica per deployment per node."""
        ...

    @property
    def slots(self) -> int:
        """Requests it runs at once: its weight."""
        ...


R = TypeVar("R", bound=Replica)


def conversation_key(user: str | None, messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The affinity key of a chat request: its ``user``, else a hash of its leading messages.

    None when there is nothing to key on (no user and no messages): such requests route by load.
    """
    if isinstance(user, str) and user:
        if len(user) + len("user:") <= MAX_KEY_CHARS:
            return f"user:{user}"
        return f"user#{_digest(user)}"
    leading: list[object] = []
    for message in messages:
        if not isinstance(message, Mapping):
            break
        leading.append([message.get("role"), message.get("content")])
        if message.get("role") == "user":
            break
    if not leading:
        return None
    # Canonical JSON: the same messages give the same key on every node and in every Python.
    text = json.dumps(leading, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return f"prefix:{_digest(text)}"


def preferred(key: str, candidates: Iterable[R]) -> R | None:
    """The replica `key` prefers among `candidates` (highest weighted rendezvous score), if any."""
    best: R | None = None
    best_rank: tuple[float, str] = (float("-inf"), "")
    for candidate in candidates:
        # Ties (astronomically rare) break by node id, so every node still picks the same one.
        ranked = (score(key, candidate.node, max(candidate.slots, 1)), candidate.node)
        if best is None or ranked > best_rank:
            best, best_rank = candidate, ranked
    return best


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=_DIGEST_BYTES).hexdigest()

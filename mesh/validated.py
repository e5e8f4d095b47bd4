"""Validated wire records kept by their msgpack bytes: one that arrives unchanged is not checked again.

Every push-pull lists every member's metadata and every deployment record, almost all of them as
they were last time. ``ValidatedMemo.of(raw, validate)`` packs `raw` back to msgpack bytes, which
tell apart whatever validation tells apart (an int from a float or a bool, key order aside), and
returns the object validated from equal bytes when it has one. Results must be immutable: one
object serves every caller. At most ``kept`` results are kept, the oldest dropped first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import msgpack

__all__ = ["ValidatedMemo"]

T = TypeVar("T")


class ValidatedMemo(Generic[T]):
    """Up to `kept` validated results by the msgpack bytes of what they were validated from."""

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self._results: dict[bytes, T] = {}

    def of(self, raw: object, validate: Callable[[object], T]) -> T:
        """`validate(raw)`, or what it returned for equal bytes before (its errors are never kept)."""
        try:
            packed = msgpack.packb(raw, use_bin_type=True)
        except (TypeError, ValueError, OverflowError):
            return validate(raw)  # not msgpack-shaped at all: validation says why
        result = self._results.get(packed)
        if result is None:
            result = self._results[packed] = validate(raw)
            if len(self._results) > self.kept:
                del self._results[next(iter(self._results))]  # the oldest
        return result

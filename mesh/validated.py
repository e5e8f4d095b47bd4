"""Validated wire records kept by their msgpack bytes: one that arrives unchanged is not checked again.

Every push-pull lists every member's metadata and every deployment record, almost all of them as
they were last time. ``ValidatedMemo.of(raw, validate)`` packs `raw` back to msgpack bytes, which
tell apart whatever validation tells apart (an int from a float or a bool, key order aside), and
returns the object validated from equal bytes when it has one. Results must be immutable: one
object serves every caller.

A result is kept only while something else holds it (a member's metadata, a deployment record):
that is what push-pull brings again unchanged. A version nobody holds any more (a busy member's
load sample from ten samples ago) is dropped with its key, where a plain table kept thousands of
stale metadata copies of a busy 1,000-node mesh. At most ``kept`` results are kept, the oldest
dropped first.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

import msgpack

__all__ = ["ValidatedMemo"]

T = TypeVar("T")


class _Held(weakref.ref):
    """A weak reference to a result that knows its key, so one callback forgets any of them."""

    __slots__ = ("key",)
    key: bytes

    def __new__(cls, result: object, callback: Callable[[_Held], None], key: bytes) -> _Held:
        held = super().__new__(cls, result, callback)
        held.key = key
        return held

    def __init__(self, result: object, callback: Callable[[_Held], None], key: bytes) -> None:
        super().__init__(result, callback)  # type: ignore[call-arg]  # typeshed omits ref.__init__


class ValidatedMemo(Generic[T]):
    """Up to `kept` validated results still held elsewhere, by the msgpack bytes they came from."""

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self._results: dict[bytes, _Held] = {}

    def __len__(self) -> int:
        return len(self._results)

    def of(self, raw: object, validate: Callable[[object], T]) -> T:
        """`validate(raw)`, or what it returned for equal bytes before (its errors are never kept)."""
        try:
            packed = msgpack.packb(raw, use_bin_type=True)
        except (TypeError, ValueError, OverflowError):
            return validate(raw)  # not msgpack-shaped at all: validation says why
        held = self._results.get(packed)
        result: T | None = held() if held is not None else None
        if result is None:
            result = validate(raw)
            self._results[packed] = _Held(result, self._forget, packed)
            if len(self._results) > self.kept:
                del self._results[next(iter(self._results))]  # the oldest
        return result

    def _forget(self, held: _Held) -> None:
        """A result is gone: forget its key, unless a newer result took its place."""
        if self._results.get(held.key) is held:
            self._results.pop(held.key, None)

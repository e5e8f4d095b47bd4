"""An LRU cache of loaded models, for apps that serve many models from one replica (fal's AnyModelRunner).

``get(name)`` returns the loaded model, loading it on a miss. A budget (a count of models, a number of
bytes, or both) bounds what stays loaded; past it the least recently used models are unloaded.

Invariants:

- The model just requested is never evicted by its own request, even when it alone is over the byte
  budget: a cache that cannot hold the model it was asked for would load it on every call.
- Loading runs outside the lock, so a slow load of one model never blocks hits on others. Concurrent
  ``get``s of the same name share one load; a failed load raises in all of them and caches nothing.
- With a count budget, room is made before a load (loaded plus in-flight never exceeds ``max_models``
  when loads are serial), so peak memory is ``max_models`` models, not one more. Sizes are only known
  after a load, so the byte budget is enforced afterwards.
- ``unload`` runs outside the lock, after the model has left the cache; its errors are logged, not
  raised, because the request that triggered the eviction did nothing wrong.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

__all__ = ["ModelCache"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ModelCache(Generic[T]):
    """Loaded models by name, least recently used evicted past a count or byte budget; thread-safe."""

    def __init__(
        self,
        load: Callable[[str], T],
        *,
        max_models: int | None = None,
        max_bytes: int | None = None,
        size_of: Callable[[T], int] | None = None,
        unload: Callable[[str, T], None] | None = None,
    ) -> None:
        if max_models is not None and max_models < 1:
            raise ValueError(f"max_models must be at least 1, not {max_models}")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, not {max_bytes}")
        if max_bytes is not None and size_of is None:
            raise ValueError("max_bytes needs size_of to measure each model")
        self._load = load
        self._max_models = max_models
        self._max_bytes = max_bytes
        self._size_of = size_of
        self._unload = unload
        self._lock = threading.Lock()
        # Least recently used first, most recently used last.
        self._models: OrderedDict[str, T] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._loading: dict[str, Future[T]] = {}

    def get(self, name: str) -> T:
        """The model called ``name``, loaded now if it is not cached; marks it most recently used."""
        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name]
            pending = self._loading.get(name)
            if pending is None:
                pending = self._loading[name] = Future()
                evicted = self._evict_for_load()
                owner = True
            else:
                owner = False
        if not owner:
            return pending.result()
        self._unload_all(evicted)
        try:
            model = self._load(name)
            size = self._size_of(model) if self._size_of is not None else 0
        except BaseException as exc:
            with self._lock:
                del self._loading[name]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._loading[name]
            self._models[name] = model
            self._sizes[name] = size
            evicted = self._evict_over_budget()
        pending.set_result(model)
        self._unload_all(evicted)
        return model

    def loaded(self) -> list[str]:
        """Names of the loaded models, most recently used first."""
        with self._lock:
            return list(reversed(self._models))

    def total_bytes(self) -> int:
        """Sum of ``size_of`` over the loaded models (0 without ``size_of``)."""
        with self._lock:
            return sum(self._sizes.values())

    def clear(self) -> None:
        """Unload every model (loads in flight finish and are cached)."""
        with self._lock:
            evicted = list(self._models.items())
            self._models.clear()
            self._sizes.clear()
        self._unload_all(evicted)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._models

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def _evict_for_load(self) -> list[tuple[str, T]]:
        # Called with the lock held, after this load was added to _loading.
        evicted: list[tuple[str, T]] = []
        if self._max_models is None:
            return evicted
        while self._models and len(self._models) + len(self._loading) > self._max_models:
            evicted.append(self._pop_oldest())
        return evicted

    def _evict_over_budget(self) -> list[tuple[str, T]]:
        # Called with the lock held, right after inserting the requested model: it is the newest
        # entry, so popping the oldest while more than one is loaded never reaches it.
        evicted: list[tuple[str, T]] = []
        while len(self._models) > 1 and self._over_budget():
            evicted.append(self._pop_oldest())
        return evicted

    def _over_budget(self) -> bool:
        if self._max_models is not None and len(self._models) > self._max_models:
            return True
        return self._max_bytes is not None and sum(self._sizes.values()) > self._max_bytes

    def _pop_oldest(self) -> tuple[str, T]:
        name, model = self._models.popitem(last=False)
        del self._sizes[name]
        return name, model

    def _unload_all(self, evicted: list[tuple[str, T]]) -> None:
        if self._unload is None:
            return
        for name, model in evicted:
            try:
                self._unload(name, model)
            except Exception:
                logger.exception("unloading model %r failed", name)

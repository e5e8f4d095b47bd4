"""ModelCache: LRU order, count and byte budgets, unload callbacks, shared concurrent loads."""

from __future__ import annotations

import threading

import pytest

from meshnode.inference.model_cache import ModelCache


class Loader:
    """Loads a model as the string ``model:NAME`` and records every call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, name: str) -> str:
        self.calls.append(name)
        return f"model:{name}"


def test_miss_loads_and_hit_reuses() -> None:
    load = Loader()
    cache: ModelCache[str] = ModelCache(load)
    assert cache.get("a") == "model:a"
    assert cache.get("a") == "model:a"
    assert load.calls == ["a"]
    assert "a" in cache
    assert "b" not in cache


def test_loaded_lists_most_recent_first() -> None:
    cache: ModelCache[str] = ModelCache(Loader())
    for name in ["a", "b", "c", "a"]:
        cache.get(name)
    assert cache.loaded() == ["a", "c", "b"]


def test_count_budget_evicts_least_recently_used() -> None:
    load = Loader()
    unloaded: list[tuple[str, str]] = []
    cache: ModelCache[str] = ModelCache(load, max_models=3, unload=lambda n, m: unloaded.append((n, m)))
    for name in ["a", "b", "c", "a", "d"]:
        cache.get(name)
    assert cache.loaded() == ["d", "a", "c"]
    assert unloaded == [("b", "model:b")]
    assert len(cache) == 3
    # An evicted model loads again on its next request.
    cache.get("b")
    assert load.calls == ["a", "b", "c", "d", "b"]
    assert cache.loaded() == ["b", "d", "a"]


def test_max_models_one_keeps_only_the_latest() -> None:
    cache: ModelCache[str] = ModelCache(Loader(), max_models=1)
    cache.get("a")
    cache.get("b")
    assert cache.loaded() == ["b"]


def test_byte_budget_evicts_until_under() -> None:
    sizes = {"a": 40, "b": 40, "c": 50}
    cache: ModelCache[str] = ModelCache(
        Loader(), max_bytes=100, size_of=lambda model: sizes[model.removeprefix("model:")]
    )
    cache.get("a")
    cache.get("b")
    assert cache.total_bytes() == 80
    cache.get("c")
    assert cache.loaded() == ["c", "b"]
    assert cache.total_bytes() == 90


def test_model_over_the_byte_budget_alone_stays_loaded() -> None:
    cache: ModelCache[str] = ModelCache(Loader(), max_bytes=10, size_of=lambda model: 1000)
    cache.get("a")
    assert cache.get("b") == "model:b"
    assert cache.loaded() == ["b"]


def test_both_budgets_apply() -> None:
    cache: ModelCache[str] = ModelCache(Loader(), max_models=3, max_bytes=25, size_of=lambda model: 10)
    for name in ["a", "b", "c"]:
        cache.get(name)
    assert cache.loaded() == ["c", "b"]


def test_failed_load_caches_nothing_and_raises() -> None:
    def load(name: str) -> str:
        raise RuntimeError(f"cannot load {name}")

    cache: ModelCache[str] = ModelCache(load, max_models=2)
    with pytest.raises(RuntimeError, match="cannot load a"):
        cache.get("a")
    assert cache.loaded() == []
    # Nothing is left in flight: the next request tries again.
    with pytest.raises(RuntimeError, match="cannot load a"):
        cache.get("a")


def test_unload_error_does_not_fail_the_request(caplog: pytest.LogCaptureFixture) -> None:
    def unload(name: str, model: str) -> None:
        raise OSError("device busy")

    cache: ModelCache[str] = ModelCache(Loader(), max_models=1, unload=unload)
    cache.get("a")
    assert cache.get("b") == "model:b"
    assert "unloading model 'a' failed" in caplog.text


def test_clear_unloads_everything() -> None:
    unloaded: list[str] = []
    cache: ModelCache[str] = ModelCache(Loader(), unload=lambda name, model: unloaded.append(name))
    cache.get("a")
    cache.get("b")
    cache.clear()
    assert cache.loaded() == []
    assert unloaded == ["a", "b"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_models": 0}, "max_models"),
        ({"max_bytes": -1, "size_of": len}, "max_bytes"),
        ({"max_bytes": 10}, "size_of"),
    ],
)
def test_rejects_bad_budgets(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelCache(Loader(), **options)  # type: ignore[arg-type]


def test_concurrent_gets_of_one_name_share_one_load() -> None:
    started = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    def load(name: str) -> object:
        calls.append(name)
        if name == "a":
            started.set()
            assert release.wait(10), "test never released the load"
        return object()

    cache: ModelCache[object] = ModelCache(load)
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("a"))) for _ in range(4)]
    threads[0].start()
    assert started.wait(10)
    for thread in threads[1:]:
        thread.start()
    # Another name loads while "a" is still loading: the lock is not held during loads.
    cache.get("b")
    release.set()
    for thread in threads:
        thread.join(10)
    assert calls == ["a", "b"]
    assert len(results) == 4
    assert all(result is results[0] for result in results)


def test_waiters_see_the_loaders_failure() -> None:
    started = threading.Event()
    release = threading.Event()

    def load(name: str) -> str:
        started.set()
        assert release.wait(10)
        raise RuntimeError("broken weights")

    cache: ModelCache[str] = ModelCache(load)
    errors: list[BaseException] = []

    def get() -> None:
        try:
            cache.get("a")
        except RuntimeError as exc:
            errors.append(exc)

    first = threading.Thread(target=get)
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=get)
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert [str(error) for error in errors] == ["broken weights", "broken weights"]
    assert cache.loaded() == []


def test_count_budget_makes_room_before_loading() -> None:
    cache: ModelCache[str]
    seen_during_load: list[list[str]] = []

    def load(name: str) -> str:
        seen_during_load.append(cache.loaded())
        return name

    cache = ModelCache(load, max_models=2)
    for name in ["a", "b", "c"]:
        cache.get(name)
    # While "c" loaded, "a" was already gone: never more than two models in memory.
    assert seen_during_load == [[], ["a"], ["b"]]

"""The replica lifecycle and its gossiped entry: every state read one way, bad entries invisible."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.mesh.replica_state import (
    KINDS,
    MAX_ERROR_CHARS,
    Kind,
    ReplicaEntry,
    ReplicaState,
    known_kinds,
)


def test_each_state_says_whether_it_serves_holds_requests_is_coming_or_counts_as_running() -> None:
    table = {
        # state: (serving, holds requests, coming, counts as running)
        ReplicaState.LOADING: (False, False, True, True),
        ReplicaState.STARTING: (False, False, True, True),
        ReplicaState.READY: (True, True, True, True),
        ReplicaState.STANDBY: (False, False, True, False),
        ReplicaState.DRAINING: (False, True, False, False),
        ReplicaState.FAILED: (False, False, False, False),
        ReplicaState.STOPPED: (False, False, False, False),
    }
    assert set(table) == set(ReplicaState)
    for state, expected in table.items():
        assert (state.serving, state.holds_requests, state.coming, state.counts_as_running) == expected


def test_a_loading_entry_carries_its_progress_and_others_do_not() -> None:
    loading = ReplicaEntry(ReplicaState.LOADING, progress=0.375)
    assert loading.to_wire()["progress"] == 0.375
    assert ReplicaEntry.from_wire(loading.to_wire()) == loading
    assert "progress" not in ReplicaEntry(ReplicaState.READY).to_wire()


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "half", True, None])
def test_a_progress_out_of_range_reads_as_none_yet(bad: object) -> None:
    wire = {**ReplicaEntry(ReplicaState.LOADING).to_wire(), "progress": bad}
    decoded = ReplicaEntry.from_wire(wire)
    assert decoded is not None and decoded.progress == 0.0


def test_a_pull_that_failed_makes_a_loading_replica_failing() -> None:
    assert ReplicaEntry(ReplicaState.LOADING, setup_failures=1).failing
    assert not ReplicaEntry(ReplicaState.LOADING).failing


def test_an_entry_survives_the_wire() -> None:
    entry = ReplicaEntry(ReplicaState.READY, True, "", 3, 2, 10, ("h",), ("m1", "m2"))
    assert ReplicaEntry.from_wire(entry.to_wire()) == entry


def test_failed_setups_travel_only_when_there_are_some_and_a_bad_count_means_none() -> None:
    retrying = ReplicaEntry(ReplicaState.STARTING, error="setup failed: boom", setup_failures=2)
    assert ReplicaEntry.from_wire(retrying.to_wire()) == retrying
    assert "setup_failures" not in ReplicaEntry(ReplicaState.STARTING).to_wire()  # as older nodes sent it
    for bad in (-1, "2", True, 2**40):
        raw = {**retrying.to_wire(), "setup_failures": bad}
        decoded = ReplicaEntry.from_wire(raw)
        assert decoded is not None and decoded.setup_failures == 0 and not decoded.failing


@pytest.mark.parametrize(
    "raw",
    [None, "ready", [], {}, {"state": None}, {"state": "hibernating"}, {"state": ["ready"]}, {"state": 1}],
)
def test_a_malformed_entry_or_an_unknown_state_is_invisible(raw: object) -> None:
    assert ReplicaEntry.from_wire(raw) is None


def test_bad_fields_fall_back_to_their_defaults_and_the_error_is_cut() -> None:
    raw = {
        "state": "ready",
        "pinned": "yes",
        "queue": "many",
        "slots": 0,
        "capacity": 2**40,
        "hints": "h",
        "models": ["ok", 3, "x" * 500],
        "error": "e" * 1000,
    }
    entry = ReplicaEntry.from_wire(raw)
    assert entry is not None
    assert (entry.pinned, entry.queue, entry.slots, entry.capacity) == (False, 0, 1, 1)
    assert (entry.hints, entry.models) == ((), ("ok",))
    assert len(entry.error) == MAX_ERROR_CHARS
    assert ReplicaEntry.failed("x" * 1000) == ReplicaEntry(ReplicaState.FAILED, error="x" * MAX_ERROR_CHARS)


@given(
    st.dictionaries(
        st.sampled_from(
            ["state", "queue", "slots", "capacity", "hints", "pinned", "setup_failures", "serves"]
        ),
        st.from_type(object),
    )
)
def test_any_map_from_a_peer_decodes_or_is_invisible_never_raises(raw: dict[str, object]) -> None:
    entry = ReplicaEntry.from_wire(raw)
    assert entry is None or (
        entry.slots >= 1 and entry.queue >= 0 and entry.capacity >= 0 and entry.setup_failures >= 0
    )
    assert entry is None or set(entry.serves) <= set(KINDS)


def test_the_kinds_an_app_serves_travel_and_only_when_there_are_some() -> None:
    chat = ReplicaEntry(ReplicaState.READY, serves=("chat", "completions"))
    assert chat.to_wire()["serves"] == ["chat", "completions"]
    assert ReplicaEntry.from_wire(chat.to_wire()) == chat
    assert "serves" not in ReplicaEntry(ReplicaState.READY).to_wire()  # as older nodes sent it
    assert KINDS == ("embeddings", "images", "chat", "completions") == tuple(Kind)


def test_an_app_that_must_not_rerun_says_so_and_only_then() -> None:
    once = ReplicaEntry(ReplicaState.READY, rerun_safe=False)
    assert once.to_wire()["rerun_safe"] is False
    assert ReplicaEntry.from_wire(once.to_wire()) == once
    assert "rerun_safe" not in ReplicaEntry(ReplicaState.READY).to_wire()
    parsed = ReplicaEntry.from_wire({**once.to_wire(), "rerun_safe": "no"})
    assert parsed is not None and parsed.rerun_safe  # only a real False says it


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (["chat", "speech"], ("chat",)),  # a newer node's kind is dropped, the rest kept
        (["images", "images", 3, None], ("images",)),
        ("chat", ()),  # a bare string is not a list of kinds
        ({"chat": 1}, ()),
        (["chat"] * 1000, ()),  # more than any entry may hold: none believed
        (None, ()),
    ],
)
def test_served_kinds_from_a_peer_are_read_leniently(raw: object, expected: tuple[str, ...]) -> None:
    decoded = ReplicaEntry.from_wire({**ReplicaEntry(ReplicaState.READY).to_wire(), "serves": raw})
    assert decoded is not None and decoded.serves == expected
    assert known_kinds(raw) == expected

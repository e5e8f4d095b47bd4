"""The memo of validated wire records: kept while held, dropped once nobody holds the result."""

from __future__ import annotations

import gc

import pytest

from meshnode.mesh import metadata
from meshnode.mesh.metadata import NodeMeta
from meshnode.mesh.validated import ValidatedMemo


class Box:
    """A validated result (weakly referable, as NodeMeta and DeploymentSpec are)."""

    def __init__(self, raw: object) -> None:
        self.raw = raw


class Counting:
    """A validator that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, raw: object) -> Box:
        self.calls += 1
        if raw == "bad":
            raise ValueError("bad")
        return Box(raw)


def test_equal_bytes_give_the_held_result_without_validating_again() -> None:
    memo: ValidatedMemo[Box] = ValidatedMemo(16)
    validate = Counting()
    first = memo.of({"load": 1}, validate)
    assert memo.of({"load": 1}, validate) is first
    assert validate.calls == 1
    # What validation tells apart stays apart: an int, a float and a bool are three results.
    assert memo.of({"load": 1.0}, validate) is not first
    assert memo.of({"load": True}, validate) is not first
    assert validate.calls == 3


def test_a_result_nobody_holds_is_dropped_with_its_key() -> None:
    memo: ValidatedMemo[Box] = ValidatedMemo(16)
    validate = Counting()
    held = memo.of({"load": 1}, validate)
    for sample in range(10):  # a busy member's load samples, each replaced by the next
        memo.of({"load": sample + 2}, validate)
    gc.collect()
    assert len(memo) == 1  # only what something still holds
    assert memo.of({"load": 1}, validate) is held
    calls = validate.calls
    memo.of({"load": 5}, validate)  # dropped: validated again
    assert validate.calls == calls + 1


def test_at_most_kept_results_the_oldest_dropped_first() -> None:
    memo: ValidatedMemo[Box] = ValidatedMemo(3)
    validate = Counting()
    held = [memo.of({"n": n}, validate) for n in range(5)]
    assert len(memo) == 3
    assert memo.of({"n": 4}, validate) is held[4]
    assert memo.of({"n": 0}, validate) is not held[0]  # evicted although held
    assert validate.calls == 6


def test_errors_are_never_kept() -> None:
    memo: ValidatedMemo[Box] = ValidatedMemo(4)
    validate = Counting()
    for _ in range(2):
        with pytest.raises(ValueError):
            memo.of("bad", validate)
    assert validate.calls == 2
    assert len(memo) == 0


def test_a_replaced_key_is_not_dropped_by_the_old_results_death() -> None:
    memo: ValidatedMemo[Box] = ValidatedMemo(2)
    validate = Counting()
    old = memo.of({"n": 1}, validate)
    others = [memo.of({"n": 2}, validate), memo.of({"n": 3}, validate)]  # evicts {"n": 1}; `old` lives
    new = memo.of({"n": 1}, validate)
    assert new is not old
    del old
    gc.collect()
    assert memo.of({"n": 1}, validate) is new
    assert len(memo) == 2 and others


def test_node_metadata_from_the_wire_is_dropped_once_no_member_holds_it() -> None:
    raw = {"name": "n1", "load": {"cpu": 0.123456789}}
    meta = NodeMeta.from_wire(raw)
    assert NodeMeta.from_wire(dict(raw)) is meta
    kept = metadata._PARSED  # the module's memo
    before = len(kept)
    del meta
    gc.collect()
    assert len(kept) == before - 1

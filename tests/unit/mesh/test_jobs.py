"""Job records: the wire form round-trips, bad input is refused by name, copies merge alike everywhere."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.mesh.jobs import (
    MAX_JOB_VERSION,
    Delivery,
    JobError,
    JobRecord,
    JobResult,
    JobStatus,
    JobWireError,
    Progress,
    merged,
)
from meshnode.mesh.types import NodeId

A, B = NodeId("a" * 32), NodeId("b" * 32)


def job(**changes: object) -> JobRecord:
    base = JobRecord(
        id="J" * 22,
        deployment="echo",
        body={"x": 1},
        accept="",
        hint=None,
        created_ms=1_700_000_000_000,
        max_attempts=3,
        timeout_ms=60_000,
    )
    return base.written(A, **changes) if changes else base


def test_a_full_record_survives_msgpack_both_ways() -> None:
    record = job(
        status=JobStatus.COMPLETED,
        attempts=2,
        runner=B,
        started_ms=5,
        finished_ms=6,
        expires_ms=7,
        progress=Progress(3, 4),
        error=JobError("predictor_error", "boom", 500),
        result=JobResult("image/png", b"\x89PNG"),
        cancel_requested=True,
        delivery=Delivery(1, 9, "delivered", "200"),
        idempotency_key="k",
        webhook="http://127.0.0.1:9/hook",
    )
    wire = msgpack.unpackb(msgpack.packb(record.to_wire()), raw=False)
    assert JobRecord.from_wire(wire) == record


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("id", "short", "job id"),
        ("status", "lost", "unknown job status"),
        ("version", MAX_JOB_VERSION + 1, "version"),
        ("attempts", -1, "attempts"),
        ("attempts", True, "attempts"),
        ("body", ["not", "a", "map"], "body"),
        ("webhook", "h" * 5000, "webhook"),
        ("progress", [1], "progress"),
        ("error", ["t", "m", 200], "status"),
        ("result", ["text/plain", "not bytes"], "bytes"),
        ("delivery", [0, 0, "lost", ""], "delivery state"),
        ("cancel_requested", "yes", "cancel_requested"),
    ],
)
def test_malformed_fields_are_refused_by_name(field: str, value: object, words: str) -> None:
    wire = job().to_wire()
    wire[field] = value
    with pytest.raises(JobWireError, match=words):
        JobRecord.from_wire(wire)


def test_not_a_map_is_refused() -> None:
    with pytest.raises(JobWireError):
        JobRecord.from_wire([1, 2])


def test_the_later_version_wins_and_a_terminal_status_beats_any_version() -> None:
    running = job().written(A, status=JobStatus.RUNNING)
    progressed = running.written(A, progress=Progress(1, 2))
    assert merged(running, progressed) is progressed
    done = running.written(B, status=JobStatus.COMPLETED)
    late = progressed.written(A, progress=Progress(2, 2))  # a version above done's, not terminal
    assert late.version > done.version
    assert merged(late, done) is done and merged(done, late) is done


def test_a_cancel_request_is_never_lost_to_a_concurrent_write() -> None:
    base = job().written(A, status=JobStatus.RUNNING)
    cancel = base.written(B, cancel_requested=True)
    progress = base.written(A, progress=Progress(1, 9))  # same version, another writer
    for kept in (merged(cancel, progress), merged(progress, cancel)):
        assert kept.cancel_requested
        assert kept.version == cancel.version


def test_a_record_at_its_last_version_cannot_be_written() -> None:
    with pytest.raises(OverflowError):
        JobRecord.from_wire({**job().to_wire(), "version": MAX_JOB_VERSION}).written(A)


statuses = st.sampled_from(list(JobStatus))
copies = st.builds(
    lambda status, version, writer, cancel: dataclasses.replace(
        job(), writer=NodeId(writer), status=status, version=version, cancel_requested=cancel
    ),
    statuses,
    st.integers(0, 50),
    st.sampled_from(["a", "b", "c"]),
    st.booleans(),
)


# One writer never writes two different copies at one version: unique by (version, writer).
@given(st.lists(copies, min_size=1, max_size=6, unique_by=lambda r: (r.version, r.writer)), st.randoms())
def test_every_order_of_arrival_keeps_the_same_copy(records: list[JobRecord], rng: object) -> None:
    def fold(order: list[JobRecord]) -> JobRecord:
        kept: JobRecord | None = None
        for record in order:
            kept = merged(kept, record)
        assert kept is not None
        return kept

    shuffled = list(records)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    assert fold(records) == fold(shuffled)


def test_a_stored_result_names_its_file_and_nodes_and_is_checked() -> None:
    from meshnode.mesh.jobs import StoredFile

    stored = JobResult("image/png", b"", StoredFile("ab" * 32, 123, (A, B)))
    record = job(status=JobStatus.COMPLETED, result=stored)
    assert JobRecord.from_wire(msgpack.unpackb(msgpack.packb(record.to_wire()), raw=False)) == record
    for bad in (["image/png", b"", "../../etc/passwd", 1, [A]], ["image/png", b"", "ab" * 32, 1, []]):
        with pytest.raises(JobWireError):
            JobRecord.from_wire({**record.to_wire(), "result": bad})

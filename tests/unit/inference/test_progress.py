"""Progress reports at their source: throttled, bounded, sent only when asked, and a cancellation point."""

from __future__ import annotations

import logging
import threading

import pytest

from meshnode.inference.predictor import Predictor
from meshnode.inference.progress import (
    ProgressReporter,
    ProgressThrottle,
    RequestCancelled,
    report_progress,
    run_reporting,
)
from meshnode.mesh.envelope import JPEG_MAGIC, MAX_PREVIEW_BYTES, MAX_PROGRESS_STEPS, Progress

JPEG = JPEG_MAGIC + b"\xe0 a jpeg"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reporter(
    *, wanted: bool = True, interval_s: float = 0.05
) -> tuple[ProgressReporter, list[Progress], Clock]:
    sent: list[Progress] = []
    clock = Clock()
    made = ProgressReporter("r1", wanted=wanted, emit=sent.append, min_interval_s=interval_s, clock=clock)
    return made, sent, clock


def test_the_throttle_sends_the_first_then_one_per_interval_and_always_the_last() -> None:
    throttle = ProgressThrottle(0.05)
    decisions = [
        throttle.admit(1, 10, 0.0),  # first: always
        throttle.admit(2, 10, 0.01),  # too soon
        throttle.admit(3, 10, 0.049),  # still too soon
        throttle.admit(4, 10, 0.05),  # one interval after the last sent
        throttle.admit(5, 10, 0.06),
        throttle.admit(10, 10, 0.07),  # the last step: always
    ]
    assert decisions == [True, False, False, True, False, True]


def test_reports_go_out_throttled_with_their_preview() -> None:
    progress, sent, clock = reporter()
    for step in range(1, 11):
        progress.report(step, 10, JPEG)
        clock.now += 0.02
    # 0.02 s apart against a 0.05 s interval: every third step, and the last.
    assert [p.step for p in sent] == [1, 4, 7, 10]
    assert all(p == Progress("r1", p.step, 10, JPEG) for p in sent)


def test_nothing_is_sent_when_the_request_did_not_ask_and_no_preview_is_made() -> None:
    progress, sent, _ = reporter(wanted=False)
    made: list[int] = []

    def preview() -> bytes:
        made.append(1)
        return JPEG

    for step in range(1, 4):
        progress.report(step, 3, preview)
    assert sent == [] and made == []


def test_a_preview_function_runs_only_for_a_report_that_is_sent() -> None:
    progress, sent, _ = reporter()
    made: list[int] = []

    def preview() -> bytes:
        made.append(1)
        return JPEG

    for step in range(1, 6):  # the clock stands still: only the first and the last go
        progress.report(step, 5, preview)
    assert [p.step for p in sent] == [1, 5] and len(made) == 2
    assert sent[0].preview == JPEG


@pytest.mark.parametrize(
    ("step", "total"),
    [(-1, 10), (11, 10), (1, 0), (1, MAX_PROGRESS_STEPS + 1), (True, 10), (1.5, 10), ("1", 10)],
)
def test_out_of_bounds_numbers_are_dropped_with_a_warning_never_raised(
    step: object, total: object, caplog: pytest.LogCaptureFixture
) -> None:
    progress, sent, _ = reporter()
    with caplog.at_level(logging.WARNING, "meshnode.worker"):
        progress.report(step, total)  # type: ignore[arg-type]
        progress.report(step, total)  # type: ignore[arg-type]
    assert sent == []
    assert len(caplog.records) == 1 and "progress of r1 dropped" in caplog.text  # once per request


@pytest.mark.parametrize(
    "preview",
    [
        pytest.param(b"\x89PNG\r\n\x1a\n", id="not-a-jpeg"),
        pytest.param(JPEG + bytes(MAX_PREVIEW_BYTES), id="too-large"),
        pytest.param(lambda: "text", id="function-returning-text"),
        pytest.param(lambda: 1 / 0, id="function-that-raises"),
    ],
)
def test_a_bad_preview_is_dropped_and_the_report_still_goes(
    preview: object, caplog: pytest.LogCaptureFixture
) -> None:
    progress, sent, _ = reporter()
    with caplog.at_level(logging.WARNING, "meshnode.worker"):
        progress.report(1, 2, preview)  # type: ignore[arg-type]
    assert sent == [Progress("r1", 1, 2, None)]
    assert "dropped" in caplog.text


def test_bytearray_and_memoryview_previews_are_sent_as_bytes() -> None:
    progress, sent, clock = reporter()
    progress.report(1, 3, bytearray(JPEG))
    clock.now += 1
    progress.report(2, 3, memoryview(JPEG))
    assert [p.preview for p in sent] == [JPEG, JPEG]


@pytest.mark.parametrize("wanted", [True, False])
def test_a_cancelled_request_stops_at_its_next_report_whether_it_asked_or_not(wanted: bool) -> None:
    progress, _, _ = reporter(wanted=wanted)
    progress.report(1, 3)
    progress.cancel()
    assert progress.cancelled
    with pytest.raises(RequestCancelled):
        progress.report(2, 3)


def test_request_cancelled_is_not_an_exception_a_predictor_would_swallow() -> None:
    assert not issubclass(RequestCancelled, Exception)


def test_report_progress_outside_a_request_does_nothing() -> None:
    report_progress(1, 2, JPEG)
    report_progress(-1, 0)  # not even checked: there is no request to report on


class Steps(Predictor):
    def predict(self, request: dict[str, object], header: str | None = None) -> str:
        for step in range(1, 4):
            self.report_progress(step, 3)
        return "done"


def test_a_predictor_reports_through_the_reporter_its_thread_runs_with() -> None:
    progress, sent, _ = reporter(interval_s=0.0)
    assert run_reporting(progress, Steps().predict, {}) == "done"
    assert [p.step for p in sent] == [1, 2, 3]
    sent.clear()
    Steps().predict({})  # the reporter was this call's only: none afterwards
    assert sent == []


def test_each_thread_reports_to_its_own_request() -> None:
    first, first_sent, _ = reporter(interval_s=0.0)
    second, second_sent, _ = reporter(interval_s=0.0)
    threads = [
        threading.Thread(target=run_reporting, args=(one, Steps().predict, {})) for one in (first, second)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert [p.step for p in first_sent] == [p.step for p in second_sent] == [1, 2, 3]

"""After a worker exits: a failed start or a crash, the one-line error, the wait, and the hold."""

from __future__ import annotations

import pytest

from meshnode.mesh.restarts import NextStart, WorkerExit, next_start, short_error

LOAD_ERROR = (
    "meshnode.inference.app_ref.AppLoadError: app reference 'meshnode.apps.echo:Ecko': "
    "meshnode.apps.echo has no 'Ecko' (classes there: Echo)"
)


def after(exited: WorkerExit, failures: int = 0, attempts: int = 3) -> NextStart:
    return next_start(exited, setup_failures=failures, backoff_s=0.5, attempts=attempts, hold_s=300.0)


def test_a_crash_after_serving_restarts_with_backoff_and_is_no_failed_start() -> None:
    step = after(WorkerExit(-9, ready=True), failures=5)
    assert step == NextStart(False, "worker exited with code -9; restarting", held=False, delay_s=0.5)


@pytest.mark.parametrize(
    ("exited", "error"),
    [
        (
            WorkerExit(3, False, setup_error=LOAD_ERROR),
            f"setup failed: AppLoadError: {LOAD_ERROR.split(': ', 1)[1]}",
        ),
        (WorkerExit(-9, False, overran_s=1.5), "setup did not finish within 1.5 s"),
        (WorkerExit(-11, False), "the worker exited with code -11 before it was ready"),
    ],
)
def test_a_worker_that_exits_before_it_is_ready_failed_to_start_and_says_why_in_one_line(
    exited: WorkerExit, error: str
) -> None:
    step = after(exited)
    assert step == NextStart(True, error, held=False, delay_s=0.5)


def test_failed_starts_stop_hammering_after_the_attempts_and_wait_the_hold() -> None:
    exited = WorkerExit(3, False, setup_error="ValueError: no weights")
    assert [after(exited, failures).held for failures in range(4)] == [False, False, True, True]
    assert after(exited, failures=2).delay_s == 300.0
    # 0 attempts never holds; a crash after serving never holds either.
    assert not after(exited, failures=50, attempts=0).held
    assert not after(WorkerExit(1, True), failures=50).held


def test_a_hold_shorter_than_the_backoff_keeps_the_backoff() -> None:
    exited = WorkerExit(3, False, setup_error="ValueError: x")
    assert next_start(exited, setup_failures=9, backoff_s=30.0, attempts=1, hold_s=5.0).delay_s == 30.0


@pytest.mark.parametrize(
    ("line", "short"),
    [
        (LOAD_ERROR, LOAD_ERROR.removeprefix("meshnode.inference.app_ref.")),
        ("torch.OutOfMemoryError: CUDA out of memory", "OutOfMemoryError: CUDA out of memory"),
        ("ValueError: a.b.C: d", "ValueError: a.b.C: d"),
        ("  something the app printed  ", "something the app printed"),
        ("os.path: not an exception", "os.path: not an exception"),
    ],
)
def test_an_exception_line_loses_only_its_module_path(line: str, short: str) -> None:
    assert short_error(line) == short

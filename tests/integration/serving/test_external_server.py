"""ExternalServer with real processes: the shipped example app, restarts, failed starts and cleanup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshnode.inference import external, process_group
from meshnode.inference.external import ExternalServer, ExternalServerError
from meshnode.inference.process_group import group_alive
from tests.integration.agents import wait_for

EXAMPLE = Path(__file__).resolve().parents[3] / "apps" / "external_server"
# Python start-up on two busy cores; the example server is ready a few tenths of a second after.
READY_TIMEOUT_S = 30.0


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., ExternalServer]]:
    """``servers(folder=EXAMPLE)``: an ExternalServer closed after the test, its groups checked gone."""
    started: list[ExternalServer] = []
    pids: set[int] = set()

    def make(folder: Path = EXAMPLE) -> ExternalServer:
        server = ExternalServer(folder, tmp_path / "data")
        started.append(server)
        return server

    def remember(server: ExternalServer) -> None:
        if server.pid is not None:
            pids.add(server.pid)

    try:
        yield make
    finally:
        for server in started:
            remember(server)
            server.close()
        leftovers = [pid for pid in pids if group_alive(pid)]
        for pid in leftovers:  # only what this test started, by its group id
            os.killpg(pid, signal.SIGKILL)
        assert not leftovers, f"process groups left running after close(): {leftovers}"


def app_folder(tmp_path: Path, config: str) -> Path:
    """A copy of the example's server.py with another config.yaml."""
    folder = tmp_path / "custom_app"
    folder.mkdir()
    shutil.copy(EXAMPLE / "server.py", folder / "server.py")
    (folder / "config.yaml").write_text(config)
    return folder


def test_setup_then_predict_round_trips(servers: Callable[..., ExternalServer]) -> None:
    server = servers()
    server.setup()
    assert server.pid is not None and group_alive(server.pid)
    assert server.predict({"text": "hi", "n": [1, 2]}) == {"external": {"text": "hi", "n": [1, 2]}}
    assert server.predict({"x": 1}, "application/json") == {"external": {"x": 1}}


def test_non_json_answer_becomes_a_file(servers: Callable[..., ExternalServer], tmp_path: Path) -> None:
    server = servers()
    server.setup()
    path = server.predict({"raw": "not json at all"})
    assert isinstance(path, Path)
    assert path.suffix == ".bin"
    assert path.is_relative_to(tmp_path / "data")
    assert path.read_bytes() == b"not json at all"


async def test_async_predict_streams_server_sent_events(servers: Callable[..., ExternalServer]) -> None:
    server = servers()
    server.setup()
    body = {"text": "hi", "stream": True}
    pieces = [json.loads(piece) async for piece in server.async_predict(body)]
    assert pieces == [{"external": body, "seq": seq} for seq in range(3)]


def test_predict_restarts_a_killed_job(
    servers: Callable[..., ExternalServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The watchdog waits a minute before restarting, so the restart seen here is predict's own.
    monkeypatch.setattr(external, "RESTART_BACKOFF_MIN_S", 60.0)
    server = servers()
    server.setup()
    old_pid = server.pid
    assert old_pid is not None
    job = server._job
    assert job is not None
    os.killpg(old_pid, signal.SIGKILL)
    wait_for(lambda: job.poll() is not None, 10)
    assert server.predict({"again": True}) == {"external": {"again": True}}
    assert server.pid not in (None, old_pid)


async def test_async_predict_restarts_a_killed_job(
    servers: Callable[..., ExternalServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(external, "RESTART_BACKOFF_MIN_S", 60.0)
    server = servers()
    server.setup()
    old_pid = server.pid
    assert old_pid is not None
    job = server._job
    assert job is not None
    os.killpg(old_pid, signal.SIGKILL)
    wait_for(lambda: job.poll() is not None, 10)
    pieces = [piece async for piece in server.async_predict({"stream": True})]
    assert len(pieces) == 3
    assert server.pid != old_pid


def test_watchdog_restarts_a_job_that_exits(servers: Callable[..., ExternalServer]) -> None:
    server = servers()
    server.setup()
    old_pid = server.pid
    assert old_pid is not None
    os.killpg(old_pid, signal.SIGTERM)

    wait_for(lambda: server.pid != old_pid, READY_TIMEOUT_S, message="the watchdog did not restart the job")
    # predict waits for a restart in progress to finish, then uses the new job.
    assert server.predict({"after": "restart"}) == {"external": {"after": "restart"}}


def test_bootstrap_failure_fails_setup_with_its_output(
    servers: Callable[..., ExternalServer], tmp_path: Path
) -> None:
    folder = app_folder(
        tmp_path, 'bootstrap: "echo fetching weights; echo disk full >&2; exit 3"\njob: sleep 60\n'
    )
    server = servers(folder)
    with pytest.raises(ExternalServerError, match="bootstrap exited with code 3") as caught:
        server.setup()
    assert "last output: fetching weights | disk full" in str(caught.value)
    assert server.pid is None  # the job never started


def test_a_bootstrap_past_its_timeout_fails_setup_saying_so_in_one_line(
    servers: Callable[..., ExternalServer], tmp_path: Path
) -> None:
    folder = app_folder(
        tmp_path, 'bootstrap: "echo fetching weights; sleep 600"\nbootstrap_timeout_s: 1\njob: sleep 60\n'
    )
    server = servers(folder)
    started = time.monotonic()
    with pytest.raises(ExternalServerError, match="bootstrap timed out after 1 s") as caught:
        server.setup()
    assert time.monotonic() - started < 1 + process_group.STOP_GRACE_S
    # One line: the worker's last log line is what the agent reports.
    assert str(caught.value).endswith("; last output: fetching weights") and "\n" not in str(caught.value)
    assert server.pid is None


def test_a_job_that_never_gets_ready_fails_within_the_timeout(
    servers: Callable[..., ExternalServer], tmp_path: Path
) -> None:
    config = (
        'job: exec "$PYTHON" -c "import time; print(\'loading forever\', flush=True); time.sleep(600)"\n'
        "startup_timeout_s: 1\n"
    )
    server = servers(app_folder(tmp_path, config))
    started = time.monotonic()
    with pytest.raises(ExternalServerError, match=r"not ready at /ready or /health after 1 s") as caught:
        server.setup()
    assert time.monotonic() - started < 1 + process_group.STOP_GRACE_S
    assert "loading forever" in str(caught.value)
    assert server.pid is not None and not group_alive(server.pid)


def test_a_job_that_exits_at_once_fails_setup(servers: Callable[..., ExternalServer], tmp_path: Path) -> None:
    server = servers(app_folder(tmp_path, 'job: "echo no GPU here; exit 2"\n'))
    with pytest.raises(ExternalServerError, match="job exited with code 2 before it was ready") as caught:
        server.setup()
    assert str(caught.value).endswith("; last output: no GPU here") and "\n" not in str(caught.value)


def test_a_long_output_keeps_its_last_lines_and_their_end() -> None:
    tail = "\n".join(f"line {i} " + "x" * 80 for i in range(10)) + "\nValueError: the cause"
    short = external._last_output(tail)
    assert short.startswith("...") and short.endswith("line 9 " + "x" * 80 + " | ValueError: the cause")
    assert len(short) == external.LAST_OUTPUT_CHARS
    assert external._last_output("one\n\n  two  \n") == "one | two"


def test_error_status_is_reported_with_its_code(
    servers: Callable[..., ExternalServer], tmp_path: Path
) -> None:
    config = 'job: exec "$PYTHON" server.py\nreadiness_path: /ready\npredict_path: /missing\n'
    server = servers(app_folder(tmp_path, config))
    server.setup()
    with pytest.raises(ExternalServerError, match="answered 404") as caught:
        server.predict({"x": 1})
    assert caught.value.status_code == 404


def test_close_stops_the_whole_group(servers: Callable[..., ExternalServer], tmp_path: Path) -> None:
    # The shell starts a background child and stays as the server's parent: close() must reach both.
    config = 'job: |\n  sleep 300 &\n  "$PYTHON" server.py\n'
    server = servers(app_folder(tmp_path, config))
    server.setup()
    pid = server.pid
    assert pid is not None
    server.close()
    assert not group_alive(pid)
    server.close()  # twice is fine


def test_close_kills_a_job_that_ignores_sigterm(
    servers: Callable[..., ExternalServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process_group, "STOP_GRACE_S", 0.5)
    config = "job: |\n  trap '' TERM\n  exec \"$PYTHON\" server.py\n"
    server = servers(app_folder(tmp_path, config))
    server.setup()
    pid = server.pid
    assert pid is not None
    started = time.monotonic()
    server.close()
    assert not group_alive(pid)
    assert time.monotonic() - started < 5.0

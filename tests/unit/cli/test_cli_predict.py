"""``meshnode predict`` without a mesh: bad arguments are usage errors; 503 and 429 are waited out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

import meshnode.cli.predict
from meshnode.cli import main
from meshnode.cli.predict import retry_pause
from meshnode.cli.waiting import Waiting
from meshnode.client.answers import Result
from meshnode.client.errors import DeploymentNotFound, Unavailable


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["predict", *args], input=stdin)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["echo", "[1, 2]"], "must be a JSON object"),
        (["echo", "{nope"], "not valid JSON"),
        (["echo", "--stream", "--output", "out.png"], "--stream and --output"),
        (["echo", "--discover", "--node", "http://127.0.0.1:1"], "--discover and --node"),
        (["echo", "--node", "ftp://127.0.0.1:1"], "--node"),
        (["echo", "--timeout", "0"], "--timeout"),
        (["echo", "--discover", "--interface", "not-an-ip"], "--interface"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], complaint: str) -> None:
    code, output = run(*args)
    assert code == 2, output
    assert complaint in output


def test_a_body_from_standard_input_is_checked_too() -> None:
    code, output = run("echo", "-", stdin="[]")
    assert code == 2 and "must be a JSON object" in output


# -- waiting out 503 and 429 -----------------------------------------------------------------------


def unavailable(status: int = 503, retry_after_s: float | None = 2.0) -> Unavailable:
    return Unavailable(status, "not_ready", "echo is loading", retry_after_s=retry_after_s)


def test_only_503_and_429_are_waited_out_and_only_within_the_deadline() -> None:
    assert retry_pause(unavailable(503, 2.0), now=10.0, deadline=20.0) == 2.0
    assert retry_pause(unavailable(429, None), now=10.0, deadline=20.0) == 1.0  # the node's default
    assert retry_pause(unavailable(503, 30.0), now=10.0, deadline=20.0) is None  # would end past it
    assert retry_pause(DeploymentNotFound(404, "not_found", "no echo"), now=10.0, deadline=20.0) is None


class FakeClient:
    """The MeshClient predict uses: answers from a list (an exception is raised), calls recorded."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.timeouts: list[float] = []

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def call(self, deployment: str, body: Any, *, accept: str, timeout: float) -> Result:
        self.timeouts.append(timeout)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return Result(answer, "application/json", ("n0", "n1"), "r1", "http://127.0.0.1:8470")


@pytest.fixture
def naps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """time.sleep in predict, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(meshnode.cli.predict.time, "sleep", slept.append)
    return slept


def with_client(monkeypatch: pytest.MonkeyPatch, client: FakeClient) -> None:
    monkeypatch.setattr(meshnode.cli.node_http.MeshEntry, "client", lambda self, **options: client)


def test_a_loading_deployment_is_waited_for_and_each_retry_said_on_stderr(
    monkeypatch: pytest.MonkeyPatch, naps: list[float]
) -> None:
    client = FakeClient([unavailable(503, 2.0), unavailable(429, None), {"ok": True}])
    with_client(monkeypatch, client)
    result = CliRunner().invoke(main, ["predict", "echo", "--json"])
    assert result.exit_code == 0, result.output
    assert naps == [2.0, 1.0]
    assert result.stderr.splitlines()[:2] == [
        "echo: 503: echo is loading; trying again in 2 s",
        "echo: 429: echo is loading; trying again in 1 s",
    ]
    assert "served by n0,n1 (request r1)" in result.stderr
    assert json.loads(result.stdout) == {
        "data": {"ok": True},
        "content_type": "application/json",
        "route": ["n0", "n1"],
        "request_id": "r1",
        "node": "http://127.0.0.1:8470",
    }
    assert client.timeouts[0] <= 60.0 and client.timeouts == sorted(client.timeouts, reverse=True)


def test_no_retry_fails_at_the_first_503(monkeypatch: pytest.MonkeyPatch, naps: list[float]) -> None:
    with_client(monkeypatch, FakeClient([unavailable(503, 2.0)]))
    result = CliRunner().invoke(main, ["predict", "echo", "--no-retry"])
    assert result.exit_code == 1 and naps == []
    assert "Error: 503: echo is loading" in result.output


def test_a_retry_after_past_the_timeout_is_not_waited(
    monkeypatch: pytest.MonkeyPatch, naps: list[float]
) -> None:
    with_client(monkeypatch, FakeClient([unavailable(503, 30.0)]))
    result = CliRunner().invoke(main, ["predict", "echo", "--timeout", "5"])
    assert result.exit_code == 1 and naps == []
    assert "Error: 503: echo is loading" in result.output


def test_the_spinner_draws_on_stderr_only_and_notes_stay(capsys: pytest.CaptureFixture[str]) -> None:
    with Waiting("echo: waiting", enabled=False) as quiet:
        quiet.note("echo: 503: loading; trying again in 1 s")
    assert capsys.readouterr() == ("", "echo: 503: loading; trying again in 1 s\n")
    with Waiting("echo: waiting", enabled=True, delay_s=0) as drawn:
        drawn.update("echo: still waiting")
        drawn.note("a line that stays")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "a line that stays" in captured.err

"""``meshnode jobs`` without a mesh: usage errors, the jobs table, and what the progress bar shows."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from meshnode.cli import main
from meshnode.cli.job_progress import JobProgress, Shown, shown
from meshnode.cli.jobs import format_jobs_table
from meshnode.client.job_view import job_from_view

JOB_ID = "J" * 22
NOWHERE = "http://127.0.0.1:1"  # nothing listens: a command that got past its checks fails here


def job(status: str = "queued", **extra: Any) -> Any:
    base = f"http://n0:8470/v1/jobs/{JOB_ID}"
    view = {
        "id": JOB_ID,
        "deployment": "t2i",
        "status": status,
        "attempts": 1,
        "max_attempts": 3,
        "node": "n1",
        "created_at": 0.0,
        "status_url": base,
        "result_url": f"{base}/result",
        "cancel_url": base,
        "events_url": f"{base}/events",
        **extra,
    }
    return job_from_view(view, "http://n0:8470")


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["jobs", *args], input=stdin)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_the_group_lists_its_commands() -> None:
    code, output = run("--help")
    assert code == 0
    assert all(name in output for name in ("submit", "status", "result", "cancel", "ls"))


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["submit", "t2i", "[1]"], "must be a JSON object"),
        (["submit", "t2i", "{nope"], "not valid JSON"),
        (["submit", "t2i", "--timeout", "0"], "--timeout"),
        (["submit", "t2i", "--discover", "--node", NOWHERE], "--discover and --node"),
        (["submit", "t2i", "--idempotency-key", "", "--node", NOWHERE], "idempotency_key"),
        (["status", JOB_ID, "--node", "8470"], "--node"),
        (["ls", "--status", "lost"], "--status"),
        (["ls", "--limit", "0"], "--limit"),
        (["result"], "ID"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], complaint: str) -> None:
    code, output = run(*args)
    assert code == 2, output
    assert complaint in output


def test_an_unreachable_node_is_one_error_line() -> None:
    code, output = run("status", JOB_ID, "--node", NOWHERE)
    assert code == 1 and output.startswith("Error: no node took GET /v1/jobs/"), output


@pytest.mark.parametrize("command", ["status", "result", "cancel"])
def test_an_id_that_starts_with_a_dash_is_an_id_not_an_option(command: str) -> None:
    dashed = "-56NzP1w2O5_k7E-1Rme_g"  # job ids are base64url: one in 64 starts so
    code, output = run(command, dashed, "--node", NOWHERE)
    assert code == 1 and output.startswith("Error: no node took "), output
    assert run(command, "--node", NOWHERE, "--", dashed)[0] == 1


def test_the_table_says_where_each_job_is() -> None:
    rows = [
        job("queued", position=0, node=None),
        job("running", progress={"step": 3, "total": 8}),
        job("failed", error={"type": "predictor", "message": "no"}),
    ]
    lines = format_jobs_table(rows).splitlines()
    assert lines[0].split() == ["ID", "DEPLOYMENT", "STATUS", "NODE", "ATTEMPTS", "CREATED", "(UTC)"]
    assert "queued (next)" in lines[1] and " - " in lines[1]
    assert "running (step 3 of 8)" in lines[2] and "1/3" in lines[2]
    assert "failed (predictor)" in lines[3] and "1970-01-01 00:00:00" in lines[3]


def test_the_bar_shows_the_queue_then_steps_else_it_pulses() -> None:
    assert shown(job("queued", position=2)) == Shown(f"job {JOB_ID[:8]} queued (2 ahead)")
    assert shown(job("running")) == Shown(f"job {JOB_ID[:8]} running")  # no total: a pulse
    assert shown(job("running", progress={"step": 9, "total": 4})) == Shown(
        f"job {JOB_ID[:8]} running (step 9 of 4)", 4, 4
    )
    assert shown(job("completed")).total == 1


def test_the_bar_draws_only_where_asked(capsys: pytest.CaptureFixture[str]) -> None:
    with JobProgress(enabled=False) as quiet:
        quiet.update(job("running", progress={"step": 1, "total": 2}))
    assert capsys.readouterr().err == ""
    with JobProgress(enabled=True) as drawn:
        drawn.update(job("running", progress={"step": 1, "total": 2}))
        drawn.update(job("completed"))
    assert capsys.readouterr().out == ""  # standard output stays the answer's

"""``meshnode deploy --wait``: when the wait ends, what it shows, and the loop on a fake clock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest

from meshnode.cli.deploy import build_spec
from meshnode.cli.deploy_wait import (
    ReplicaLine,
    WaitDisplay,
    WaitProgress,
    WaitTimedOut,
    changes,
    progress_of,
    render,
    target,
    wait_ready,
)
from meshnode.cli.text_table import plain


def view(name: str = "echo", *replicas: tuple[str, str], **fields: Any) -> dict[str, Any]:
    listed = [{"node": node, "status": status, "pinned": False} for node, status in replicas]
    return {
        "name": name,
        "min_replicas": 1,
        "max_replicas": 1,
        "desired": 1,
        "ready": sum(1 for _, status in replicas if status == "ready"),
        "replicas": listed,
        "unschedulable": None,
        "missing": None,
        "placement": {"hosts": [node for node, _ in replicas], "backups": []},
        **fields,
    }


@pytest.mark.parametrize(
    ("min_replicas", "desired", "wanted"),
    [
        (1, 1, 1),
        (2, 2, 2),
        (2, 5, 2),  # the autoscaler wants more under load: not the deployment coming up
        (3, 2, 2),  # pinned or placement-limited: what the mesh wants
        (0, 0, 0),  # scaled to zero: ready at once, the first request starts a replica
        (0, 1, 1),  # scaled to zero, but demand is there: one
    ],
)
def test_the_wait_ends_at_min_of_desired_and_the_declared_minimum(
    min_replicas: int, desired: int, wanted: int
) -> None:
    assert target({"min_replicas": min_replicas, "desired": desired}) == wanted


def test_odd_numbers_count_as_none() -> None:
    assert target({"min_replicas": "2", "desired": True}) == 0
    assert progress_of({"ready": -1, "replicas": "x", "placement": None}).ready == 0


def test_progress_lists_replicas_and_the_hosts_not_yet_started() -> None:
    body = view("echo", ("n1", "ready"), desired=3, min_replicas=3)
    body["replicas"].append({"node": "n0", "status": "failed", "pinned": True, "error": "ImportError: x"})
    body["placement"]["hosts"] += ["n2"]
    body["missing"] = "1 of 3 ready; 1 starting (n0: ImportError: x)"
    progress = progress_of(body)
    assert progress.replicas == (
        ReplicaLine("n0", "failed", True, "ImportError: x"),
        ReplicaLine("n1", "ready"),
        ReplicaLine("n2", "placed"),
    )
    assert (progress.ready, progress.target, progress.done) == (1, 3, False)
    assert progress.summary() == "echo: 1 of 3 ready"  # the node's count is not said twice
    assert progress_of({**body, "missing": "runs only where it is pinned"}).reason is not None
    assert progress.replicas[0].words() == "n0 failed (pinned): ImportError: x"


def test_changes_name_each_step_once_and_a_new_reason() -> None:
    first = progress_of(view("echo", ("n0", "starting")))
    assert changes(None, first) == ["echo: n0 starting"]
    assert changes(first, first) == []
    ready = progress_of(view("echo", ("n0", "ready")))
    assert changes(first, ready) == ["echo: n0 ready"]
    stuck = progress_of(view("gpu", unschedulable="no node has cuda"))
    assert changes(None, stuck) == ["gpu: no node has cuda"]
    assert changes(stuck, stuck) == []
    moved = progress_of(view("echo", ("n1", "starting")))
    assert changes(first, moved) == ["echo: n1 starting", "echo: n0 gone"]


def test_the_panel_shows_each_replica_and_the_error() -> None:
    progress = progress_of(view("echo", ("n0", "ready"), ("n1", "starting"), desired=2, min_replicas=2))
    text = plain(render(progress, "cannot reach a meshnode at http://x", 3.2))
    lines = text.splitlines()
    assert lines[0] == "echo: 1 of 2 ready  3 s"
    assert lines[1].split() == ["✓", "n0", "ready"]
    assert lines[2].split() == ["…", "n1", "starting"]
    assert lines[3] == "cannot reach a meshnode at http://x"
    assert plain(render(None, None, 0)) == "waiting for the deployment's view  0 s"


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_loop_waits_through_errors_until_ready() -> None:
    time = FakeTime()
    answers: list[Any] = [
        click.ClickException("cannot reach a meshnode at http://x"),
        view("echo", ("n0", "starting")),
        view("echo", ("n0", "ready")),
    ]
    shown: list[tuple[WaitProgress | None, str | None]] = []

    def poll() -> dict[str, Any]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    done = wait_ready(
        poll,
        timeout_s=10,
        poll_s=0.5,
        clock=time.clock,
        sleep=time.sleep,
        show=lambda p, e: shown.append((p, e)),
    )
    assert done.done and done.ready == 1
    assert time.now == 101.0  # two sleeps of 0.5 s, none after the answer that was ready
    assert [error for _, error in shown] == ["cannot reach a meshnode at http://x", None, None]


def test_the_loop_gives_up_at_the_timeout_saying_what_is_missing() -> None:
    time = FakeTime()
    with pytest.raises(WaitTimedOut) as caught:
        wait_ready(
            lambda: view("echo", ("n0", "starting"), ("n1", "ready"), desired=2, min_replicas=2),
            timeout_s=2,
            poll_s=0.5,
            clock=time.clock,
            sleep=time.sleep,
            show=lambda p, e: None,
        )
    assert str(caught.value) == "not ready after 2 s: echo: 1 of 2 ready (n0 starting)"
    assert caught.value.progress is not None and caught.value.progress.ready == 1
    assert time.now <= 102.0


def test_off_a_terminal_the_display_prints_changes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    time = FakeTime()
    with WaitDisplay(time.clock, terminal=False) as display:
        display(progress_of(view("echo", ("n0", "starting"))), None)
        display(progress_of(view("echo", ("n0", "starting"))), None)
        display(None, "cannot reach a meshnode at http://x")
        display(progress_of(view("echo", ("n0", "ready"))), None)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "echo: n0 starting",
        "cannot reach a meshnode at http://x",
        "echo: n0 ready",
    ]


def test_on_a_terminal_the_display_draws_on_stderr_only(capsys: pytest.CaptureFixture[str]) -> None:
    time = FakeTime()
    with WaitDisplay(time.clock, terminal=True) as display:
        display(progress_of(view("echo", ("n0", "ready"))), None)
    assert capsys.readouterr().out == ""


def fake_node(monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """httpx.request answering the PUT with 201 and each GET with the next answer (the last repeats)."""
    import httpx

    import meshnode.cli.deploy

    monkeypatch.setattr(meshnode.cli.deploy, "WAIT_POLL_S", 0.0)
    calls: list[tuple[str, str]] = []

    def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
        calls.append((method, url))
        body = answers[0] if method == "PUT" else answers.pop(0) if len(answers) > 1 else answers[0]
        response = httpx.Response(201 if method == "PUT" else 200, json=body)
        response.request = httpx.Request(method, url)
        return response

    monkeypatch.setattr(httpx, "request", request)
    return calls


def test_deploy_wait_exits_0_once_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from meshnode.cli import main

    calls = fake_node(
        monkeypatch,
        [view("echo", ("n0", "starting")), view("echo", ("n0", "starting")), view("echo", ("n0", "ready"))],
    )
    result = CliRunner().invoke(main, ["deploy", "echo", "meshnode.apps.echo:Echo", "--wait"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "declared echo: 1..1 replicas of meshnode.apps.echo:Echo"
    assert "echo: n0 starting" in lines and "echo: n0 ready" in lines  # stderr, mixed in by the runner
    assert lines[-1].startswith("echo ready: 1 of 1 replicas (n0) in ")
    assert calls[0] == ("PUT", "http://127.0.0.1:8470/v1/deployments/echo")
    assert {call for call in calls[1:]} == {("GET", "http://127.0.0.1:8470/v1/deployments/echo")}


def test_deploy_wait_json_prints_the_last_view_and_a_timeout_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from click.testing import CliRunner

    from meshnode.cli import main

    fake_node(monkeypatch, [view("echo", ("n0", "ready"))])
    done = CliRunner().invoke(main, ["deploy", "echo", "x:Y", "--wait", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["ready"] == 1
    fake_node(monkeypatch, [view("gpu", unschedulable="no node has cuda")])
    stuck = CliRunner().invoke(main, ["deploy", "gpu", "x:Y", "--wait", "--timeout", "0.05"])
    assert stuck.exit_code == 1
    assert "Error: not ready after 0.05 s: gpu: 0 of 1 ready; no node has cuda" in stuck.output


def test_deploy_model_names_a_model_of_the_mesh_stores_in_the_spec() -> None:
    spec = build_spec("meshnode.apps.text_to_image:TextToImage", {"model": "tiny-sd", "min_replicas": 2})
    assert spec["model"] == "tiny-sd" and spec["min_replicas"] == 2
    assert "model" not in build_spec("meshnode.apps.echo:Echo", {"model": None})


def test_deploy_reads_a_moderation_section_from_yaml_or_json(tmp_path: Path) -> None:
    section = {"blocklist": [{"category": "weapons", "terms": ["napalm"]}]}
    as_yaml = tmp_path / "moderation.yaml"
    as_yaml.write_text("blocklist:\n  - category: weapons\n    terms: [napalm]\n")
    as_json = tmp_path / "moderation.json"
    as_json.write_text(json.dumps(section))
    for path in (as_yaml, as_json):
        assert build_spec("meshnode.apps.echo:Echo", {"moderation": path})["moderation"] == section
    broken = tmp_path / "broken.yaml"
    broken.write_text("blocklist: [unclosed\n")
    with pytest.raises(click.BadParameter, match=r"broken\.yaml"):
        build_spec("meshnode.apps.echo:Echo", {"moderation": broken})


def test_deploy_prewarm_goes_in_the_autoscaling_section() -> None:
    assert build_spec("meshnode.apps.echo:Echo", {"prewarm": True})["autoscaling"] == {"prewarm": True}
    assert "autoscaling" not in build_spec("meshnode.apps.echo:Echo", {"prewarm": None})


def test_a_loading_replica_shows_how_far_without_a_line_per_step() -> None:
    def view(share: float) -> dict[str, Any]:
        replica = {"node": "n2", "status": "loading", "progress": share}
        return {"name": "t2i", "ready": 0, "desired": 1, "min_replicas": 1, "replicas": [replica]}

    first, later = progress_of(view(0.1)), progress_of(view(0.6))
    assert later.replicas[0].words() == "n2 loading 60%"
    assert changes(first, later) == []  # progress alone is no new step
    assert changes(None, first) == ["t2i: n2 loading 10%"]
    assert progress_of(view(7.0)).replicas[0].words() == "n2 loading"  # out of range: not shown

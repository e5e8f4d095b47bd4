"""A broken app fails fast, with its cause, on every node: real agents, real workers that cannot start.

A deployment whose replicas cannot start (a missing class, a ``setup()`` that raises, a
``config.yaml`` app whose YAML, bootstrap or job is wrong) must not hold requests until their
deadline: once its replica failed to start, every node answers at once with 503, ``Retry-After``
and the error, because the failure travels in the replica's gossiped entry. The node that runs it
logs the cause once, stops restarting it after a few tries, and keeps serving its other apps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.agents import AgentProcess, Mesh, wait_for

APPS = Path(__file__).parents[1] / "serving_apps.py"
MISSING_CLASS = "has no 'Ecko' (classes there: Echo)"
# Far longer than any answer below: a request that waits for its deadline fails the timing checks.
DEADLINE_S = 60.0
# "At once": a request to a deployment known to be broken, on two busy cores.
FAST_S = 5.0


def post(agent: AgentProcess, name: str, body: object | None = None) -> tuple[httpx.Response, float]:
    """POST a request with a long deadline; the answer and how long it took."""
    started = time.monotonic()
    response = httpx.post(
        f"{agent.url}/v1/predict/{name}",
        json=body or {"x": 1},
        headers={"X-Request-Timeout": str(DEADLINE_S)},
        timeout=DEADLINE_S + 10,
    )
    return response, time.monotonic() - started


def replicas(agent: AgentProcess, name: str) -> list[dict[str, Any]]:
    response = agent.get(f"/v1/deployments/{name}")
    return list(response.json().get("replicas", [])) if response.status_code == 200 else []


def assert_fails_fast(agent: AgentProcess, name: str, *causes: str) -> None:
    """A request for `name` at `agent` gets 503 at once, with Retry-After and every one of `causes`."""
    response, took = post(agent, name)
    assert response.status_code == 503, response.text
    assert took < FAST_S, f"{agent.name} answered after {took:.1f} s: {response.text}"
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["type"] == "not_ready" and "Traceback" not in response.text
    for cause in causes:
        assert cause in error["message"], error["message"]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """n0 pins a good app and a broken one (a class its module lacks); n1 pins nothing."""
    pins = ["--deploy", "echo=meshnode.apps.echo:Echo", "--deploy", "broken=meshnode.apps.echo:Ecko"]
    extra = {0: [*pins, "--app-dir", str(APPS.parent)], 1: ["--app-dir", str(APPS.parent)]}
    with Mesh(tmp_path_factory.mktemp("broken"), 2, extra_args=extra) as started:
        started.wait_formed(timeout=60)
        yield started


def test_a_pinned_app_that_cannot_load_answers_503_at_once_with_its_cause_on_every_node(mesh: Mesh) -> None:
    owner, other = mesh.agents
    # The first request on each node may arrive before the failure: it is released by it, not by
    # its deadline. Every later one is answered at once.
    for agent in (owner, other):
        response, took = post(agent, "broken")
        assert response.status_code == 503 and took < DEADLINE_S / 2, (took, response.text)
        assert MISSING_CLASS in response.json()["error"]["message"]
        assert_fails_fast(agent, "broken", "broken failed to start", "AppLoadError", MISSING_CLASS)
    # The node keeps serving its other apps, from both nodes.
    for agent in (owner, other):
        response, _ = post(agent, "echo", {"hi": 1})
        assert response.status_code == 200, response.text


def test_its_restarts_stop_and_the_state_says_failed_with_the_cause_logged_once(mesh: Mesh) -> None:
    owner, other = mesh.agents

    def failed_everywhere() -> bool:
        views = [replicas(agent, "broken") for agent in (owner, other)]
        return all(
            [(r["node"], r["status"]) for r in view] == [("n0", "failed")]
            and MISSING_CLASS in view[0]["error"]
            for view in views
        )

    wait_for(failed_everywhere, 60, interval=0.2, message=lambda: f"{replicas(other, 'broken')}")
    log = owner.log_path.read_text(errors="replace")
    errors = [line for line in log.splitlines() if " ERROR " in line and "broken" in line]
    assert len(errors) == 1 and MISSING_CLASS in errors[0], errors
    assert "exited (3); restart" not in log  # the old warning on every restart
    assert "3 failed starts in a row; next try in 300 s" in log
    assert_fails_fast(other, "broken", MISSING_CLASS)


def test_a_declared_app_whose_setup_raises_fails_fast_everywhere(mesh: Mesh) -> None:
    entry, other = mesh.agents
    # A module that cannot be resolved is still refused before anything runs.
    refused = httpx.put(
        f"{entry.url}/v1/deployments/nope", json={"app": "meshnode.apps.no_such:Nope"}, timeout=10
    )
    assert refused.status_code == 422, refused.text
    declared = httpx.put(
        f"{entry.url}/v1/deployments/weightless", json={"app": f"{APPS}:BrokenSetup"}, timeout=10
    )
    assert declared.status_code == 201, declared.text
    try:
        cause = "setup failed: RuntimeError: no weights at /models/missing.safetensors"
        # Held while the first replica starts for the first time, then released by its failure.
        response, took = post(other, "weightless")
        assert response.status_code == 503 and took < DEADLINE_S / 2, (took, response.text)
        assert cause in response.json()["error"]["message"], response.text
        for agent in (entry, other):
            assert_fails_fast(agent, "weightless", "weightless failed to start", cause)
    finally:
        httpx.delete(f"{entry.url}/v1/deployments/weightless", timeout=10)


def external_app(root: Path, name: str, config: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(config)
    return folder


def test_config_yaml_apps_that_cannot_start_say_why(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    broken = {
        "yaml": external_app(apps, "bad_yaml", "job: [unclosed\nbootstrap: echo\n"),
        "boot": external_app(
            apps,
            "slow_boot",
            'bootstrap: "echo fetching weights; sleep 60"\nbootstrap_timeout_s: 1\njob: sleep 60\n',
        ),
        "job": external_app(apps, "dying_job", 'job: "echo no GPU here; exit 2"\n'),
    }
    pins = [arg for name, folder in broken.items() for arg in ("--deploy", f"{name}={folder}")]
    agent = AgentProcess("ext", tmp_path, mesh_id="broken-external", extra_args=pins)
    agent.start()
    try:
        agent.wait_ready()
        expected = {
            "yaml": ("not valid YAML: line 2, column 10: expected ',' or ']', but got ':'",),
            "boot": ("bootstrap timed out after 1 s", "last output: fetching weights"),
            "job": ("job exited with code 2 before it was ready", "last output: no GPU here"),
        }
        for name, causes in expected.items():
            response, took = post(agent, name)
            assert response.status_code == 503 and took < DEADLINE_S / 2, (name, took, response.text)
            assert_fails_fast(agent, name, f"{name} failed to start: setup failed: ", *causes)
            errors = {r["node"]: r["error"] for r in replicas(agent, name)}
            assert all(cause in errors["ext"] for cause in causes), errors
    finally:
        agent.stop_all()

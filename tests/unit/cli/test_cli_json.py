"""``--json`` on every command that prints data, and what it prints, without a mesh."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner

from meshnode.cli import main
from meshnode.trust.keyring import key_id

# Commands that print no data, each with the reason: a person reads what they say.
WITHOUT_JSON = {
    "join": "runs the agent; its output is a log",
    "demo": "a show on this machine, not data",
    "jobs result": "prints the job's answer itself: JSON already, or a file",
}


def leaves(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        # A group that runs by itself (``meshnode token``) is a command too.
        if not isinstance(command, click.Group) or command.invoke_without_command:
            yield path, command
        if isinstance(command, click.Group):
            yield from leaves(command, f"{path} ")


def test_every_command_that_prints_data_takes_json() -> None:
    missing = [
        path
        for path, command in leaves(main)
        if path not in WITHOUT_JSON and not any("--json" in p.opts for p in command.params)
    ]
    assert missing == []
    assert set(WITHOUT_JSON) <= {path for path, _ in leaves(main)}  # no stale exemption


def test_token_json_says_where_the_token_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHNODE_TOKEN", raising=False)
    monkeypatch.setenv("MESHNODE_HOME", str(tmp_path))
    made = CliRunner().invoke(main, ["token", "--json"])
    assert made.exit_code == 0, made.output
    body = json.loads(made.stdout)
    assert (body["source"], body["path"]) == ("created", str(tmp_path / "token"))
    assert body["key_id"] == key_id(body["token"]).hex()
    again = json.loads(CliRunner().invoke(main, ["token", "--json"]).stdout)
    assert (again["token"], again["source"]) == (body["token"], "data_dir")  # the home is the data dir
    fresh = json.loads(CliRunner().invoke(main, ["token", "--new", "--json"]).stdout)
    assert fresh["source"] == "new" and fresh["path"] is None and fresh["token"] != body["token"]


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], Any]:
    """httpx.request answering (method, path) from this map."""
    answers: dict[tuple[str, str], Any] = {}

    def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
        path = "/" + url.split("/", 3)[3]
        response = httpx.Response(200, json=answers[method, path])
        response.request = httpx.Request(method, url)
        return response

    monkeypatch.setattr(httpx, "request", request)
    return answers


def test_keys_json(node: dict[tuple[str, str], Any]) -> None:
    made = {"id": "k1", "name": "app", "scope": "invoke", "created_ms": 0, "revoked": False, "key": "mk_x"}
    node["POST", "/v1/keys"] = made
    node["GET", "/v1/keys"] = {"keys": [{k: v for k, v in made.items() if k != "key"}]}
    node["DELETE", "/v1/keys/k1"] = {"id": "k1", "revoked": True}
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "create", "--scope", "invoke", "--name", "app", "--json"])
    assert json.loads(created.stdout) == made
    assert json.loads(runner.invoke(main, ["keys", "revoke", "k1", "--json"]).stdout)["revoked"] is True
    listed = runner.invoke(main, ["keys", "list"])
    assert listed.stdout.splitlines() == [
        "ID  NAME  SCOPE   CREATED (UTC)     STATE",
        "k1  app   invoke  1970-01-01 00:00  active",
    ]


def test_deploy_and_undeploy_json(node: dict[tuple[str, str], Any]) -> None:
    view = {"name": "echo", "app": "x:Y", "min_replicas": 1, "max_replicas": 1}
    node["PUT", "/v1/deployments/echo"] = view
    node["DELETE", "/v1/deployments/echo"] = {"name": "echo", "removed": True}
    runner = CliRunner()
    assert json.loads(runner.invoke(main, ["deploy", "echo", "x:Y", "--json"]).stdout) == view
    assert json.loads(runner.invoke(main, ["undeploy", "echo", "--json"]).stdout)["removed"] is True
    assert runner.invoke(main, ["undeploy", "echo"]).stdout == "removed echo\n"


def test_deployments_json_and_table(node: dict[tuple[str, str], Any]) -> None:
    body = {"deployments": []}
    node["GET", "/v1/deployments"] = body
    runner = CliRunner()
    assert json.loads(runner.invoke(main, ["deployments", "--json"]).stdout) == body
    assert runner.invoke(main, ["deployments"]).stdout == "no deployments\n"

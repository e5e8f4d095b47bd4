"""The command line without processes: flag validation, the --deploy guard, peers errors, the table."""

from __future__ import annotations

import json
import re
import socket
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

import meshnode.agent
from meshnode.cli import main
from meshnode.cli.peers import format_peers_table
from meshnode.config import AgentConfig

SELF_ID = "0123456789abcdef" * 2
PEER_ID = "fedcba9876543210" * 2

SAMPLE_VIEW: dict[str, Any] = {
    "self": SELF_ID,
    "members": [
        {
            "id": PEER_ID,
            "name": "gpu-box",
            "status": "suspect",
            "http": "10.0.0.2:8470",
            "mesh": "10.0.0.2:8471",
            "region": "",
            "zone": "",
            "device": {
                "cpu": "EPYC",
                "cores": 64,
                "memory": 512 << 30,
                "accelerators": [{"kind": "cuda", "index": 0, "name": "NVIDIA A100", "memory": 80 << 30}],
                "kind": "cuda",
            },
            "load": {"cpu": 87.4, "in_flight": 5},
            "models": ["tiny-sd", "minilm"],
            "hints": [],
            "incarnation": 2,
            "reach": "direct",
            "relays": [],
        },
        {
            "id": SELF_ID,
            "name": "laptop",
            "status": "alive",
            "http": "127.0.0.1:8470",
            "mesh": "127.0.0.1:8471",
            "region": "",
            "zone": "",
            "device": {
                "cpu": "i7",
                "cores": 2,
                "memory": int(23.4 * (1 << 30)),
                "accelerators": [],
                "kind": "cpu",
            },
            "load": {"cpu": 3.0, "in_flight": 0},
            "models": [],
            "hints": [],
            "incarnation": 1,
            "reach": "relayed",  # a laptop behind NAT, reached through gpu-box (docs/edge.md)
            "relays": [PEER_ID],
        },
    ],
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def assert_usage_error(result: Result, flag: str) -> None:
    assert result.exit_code == 2, result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result.output
    assert flag in error_lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--http", "127.0.0.1:99999"], "--http"),
        (["--http", "8470"], "--http"),
        (["--http", "127.0.0.1:http"], "--http"),
        (["--mesh", "bad host:8471"], "--mesh"),
        (["--mesh", "127.0.0.1:-1"], "--mesh"),
        (["--seed", "10.0.0.1"], "--seed"),
        (["--seed", ":8471"], "--seed"),
        (["--seed", "0.0.0.0:8471"], "--seed"),
        (["--seed", "10.0.0.1:0"], "--seed"),
        (["--interface", "eth0"], "--interface"),
        (["--interface", "10.0.0.300"], "--interface"),
        (["--profile", "wan"], "--profile"),
        (["--deploy", "no-equals-sign"], "--deploy"),
        (["--deploy", "bad name=apps/x.py:X"], "--deploy"),
        (["--name", ""], "--name"),
        (["--set", "no_such_knob=1"], "--set"),
        (["--set", "job_copies"], "--set"),
        (["--set", "job_copies=three"], "--set"),
        (["--set", "job_copies=-1"], "--set"),
        (["--set", "job_tick_s=nan"], "--set"),
        (["--set", "uvloop=maybe"], "--set"),
        (["--set", "name=other"], "--set"),  # text knobs have their own flags
    ],
)
def test_bad_join_values_exit_2_naming_the_flag(
    runner: CliRunner, started: list[AgentConfig], args: list[str], flag: str
) -> None:
    assert_usage_error(runner.invoke(main, ["join", *args]), flag)
    assert started == []


def test_set_reaches_the_agent_config_typed(runner: CliRunner, started: list[AgentConfig]) -> None:
    args = [
        "join",
        "--set",
        "job_copies=2",
        "--set",
        "job_webhook_first_delay_s=0.5",
        "--set",
        "uvloop=false",
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    [config] = started
    assert (config.job_copies, config.job_webhook_first_delay_s, config.uvloop) == (2, 0.5, False)


def test_set_reaches_the_membership_profile_too(runner: CliRunner, started: list[AgentConfig]) -> None:
    # A NAT that forgets idle connections after 20 s needs hellos more often (docs/edge.md).
    result = runner.invoke(main, ["join", "--set", "relay_keepalive_s=5", "--set", "relay_count=3"])
    assert result.exit_code == 0, result.output
    [config] = started
    membership = config.membership()
    assert (membership.relay_keepalive_s, membership.relay_count) == (5.0, 3)
    assert membership.probe_interval_s == 1.0  # the rest is the profile's


def test_set_membership_values_the_profile_refuses_exit_2(
    runner: CliRunner, started: list[AgentConfig]
) -> None:
    result = runner.invoke(main, ["join", "--set", "relay_keepalive_s=100"])
    assert result.exit_code == 2 and "relay_keepalive_s" in result.output
    result = runner.invoke(main, ["join", "--set", "relay_count=0"])
    assert result.exit_code == 2 and "relay_count" in result.output
    assert started == []


def test_set_values_the_config_refuses_exit_2(runner: CliRunner, started: list[AgentConfig]) -> None:
    result = runner.invoke(main, ["join", "--set", "job_copies=0"])
    assert result.exit_code == 2 and "job_copies" in result.output
    assert started == []


def test_deploy_reaches_the_agent_config(runner: CliRunner, started: list[AgentConfig]) -> None:
    result = runner.invoke(
        main, ["join", "--deploy", "echo=apps/echo.py:Echo", "--deploy", "s=apps.stream:Stream"]
    )
    assert result.exit_code == 0, result.output
    [config] = started
    assert config.deploy == ("echo=apps/echo.py:Echo", "s=apps.stream:Stream")


def test_join_defaults_come_from_agent_config(runner: CliRunner, started: list[AgentConfig]) -> None:
    result = runner.invoke(main, ["join", "--name", "n1"])
    assert result.exit_code == 0, result.output
    [config] = started
    expected = AgentConfig(name="n1")
    for field in fields(AgentConfig):
        assert getattr(config, field.name) == getattr(expected, field.name), field.name


def test_join_builds_the_config_from_flags(
    runner: CliRunner, started: list[AgentConfig], tmp_path: Path
) -> None:
    args = ["join", "--name", "edge", "--http", "127.0.0.1:18470", "--mesh", ":18471"]
    args += ["--seed", "10.0.0.1:8471", "--seed", "[::1]:9000", "--seed", "seed.example:8471"]
    args += ["--no-mdns", "--interface", "127.0.0.1", "--region", "eu", "--zone", "eu-1"]
    args += ["--profile", "local", "--data-dir", str(tmp_path), "--mesh-id", "lab"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    [config] = started
    assert (config.name, config.http_host, config.http_port) == ("edge", "127.0.0.1", 18470)
    assert (config.mesh_host, config.mesh_port) == ("0.0.0.0", 18471)
    assert config.seeds == ("10.0.0.1:8471", "[::1]:9000", "seed.example:8471")
    assert (config.mdns, config.interfaces) == (False, ("127.0.0.1",))
    assert (config.region, config.zone, config.profile, config.mesh_id) == ("eu", "eu-1", "local", "lab")
    assert config.data_dir == tmp_path


def test_join_passes_on_the_agents_exit_code(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(meshnode.agent, "run_agent", lambda config: 3)
    assert runner.invoke(main, ["join", "--name", "n1"]).exit_code == 3


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert meshnode.__version__ in result.output


def test_peers_against_an_unreachable_node_exits_1(runner: CliRunner) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = runner.invoke(main, ["peers", "--node", url])
    assert result.exit_code == 1
    assert url in result.output
    assert "Traceback" not in result.output


def test_peers_discover_needs_an_interface(runner: CliRunner) -> None:
    assert_usage_error(runner.invoke(main, ["peers", "--discover"]), "--interface")


def fake_get(monkeypatch: pytest.MonkeyPatch, response: httpx.Response) -> list[str]:
    urls: list[str] = []

    def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
        assert method == "GET"
        urls.append(url)
        response.request = httpx.Request("GET", url)
        return response

    monkeypatch.setattr(httpx, "request", request)
    return urls


def test_peers_prints_the_table(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    urls = fake_get(monkeypatch, httpx.Response(200, json=SAMPLE_VIEW))
    result = runner.invoke(main, ["peers", "--node", "10.0.0.9:8470/"])
    assert result.exit_code == 0, result.output
    assert urls == ["http://10.0.0.9:8470/v1/mesh"]
    assert result.output == format_peers_table(SAMPLE_VIEW) + "\n"


def test_peers_json_prints_the_body(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    urls = fake_get(monkeypatch, httpx.Response(200, json=SAMPLE_VIEW))
    result = runner.invoke(main, ["peers", "--json"])
    assert result.exit_code == 0, result.output
    assert urls == ["http://127.0.0.1:8470/v1/mesh"]
    assert json.loads(result.output) == SAMPLE_VIEW


def test_peers_reports_an_error_answer(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"error": {"type": "not_ready", "message": "still joining", "request_id": "r1"}}
    fake_get(monkeypatch, httpx.Response(503, json=body))
    result = runner.invoke(main, ["peers"])
    assert result.exit_code == 1
    assert "503" in result.output
    assert "still joining" in result.output


def cells(line: str) -> list[str]:
    return [cell for cell in re.split(r" {2,}", line) if cell]


def test_table_lists_self_first_and_marks_it() -> None:
    lines = format_peers_table(SAMPLE_VIEW).splitlines()
    assert lines[0].split() == ["NAME", "ID", "STATUS", "REACH", "HTTP", "DEVICE", "LOAD", "MODELS"]
    assert cells(lines[1]) == [
        "*",
        "laptop",
        SELF_ID[:8],
        "alive",
        "via gpu-box",
        "127.0.0.1:8470",
        "cpu 2c 23.4G",
        "3% 0 in flight",
        "-",
    ]
    assert cells(lines[2]) == [
        "gpu-box",
        PEER_ID[:8],
        "suspect",
        "direct",
        "10.0.0.2:8470",
        "NVIDIA A100",
        "87% 5 in flight",
        "tiny-sd,minilm",
    ]
    # Columns line up: every STATUS cell starts where the header's does.
    column = lines[0].index("STATUS")
    assert lines[1][column:].startswith("alive")
    assert lines[2][column:].startswith("suspect")


def test_table_survives_missing_and_odd_fields() -> None:
    view = {
        "self": "x",
        "members": [
            {"id": "abc", "name": "bare"},
            {"id": "def", "name": "odd", "device": {"accelerators": "nope"}, "load": {"cpu": "hot"}},
            {"id": "ghi", "name": "lost", "reach": "relayed", "relays": "nope"},
            "not a member",
        ],
    }
    lines = format_peers_table(view).splitlines()
    assert len(lines) == 4
    assert cells(lines[1]) == ["bare", "abc", "-", "-", "-", "-", "-", "-"]
    assert cells(lines[2]) == ["lost", "ghi", "-", "no relay", "-", "-", "-", "-"]
    assert cells(lines[3]) == ["odd", "def", "-", "-", "-", "-", "-", "-"]


def test_table_of_several_accelerators_and_many_models() -> None:
    member = dict(SAMPLE_VIEW["members"][0])
    member["device"] = {"accelerators": [{"name": "H100"}, {"name": "H100"}], "kind": "cuda"}
    member["models"] = ["a", "b", "c", "d", "e"]
    table = format_peers_table({"self": "other", "members": [member]})
    assert "2x H100" in table
    assert "a,b,c +2" in table

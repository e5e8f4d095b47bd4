"""deploy/compose: the Compose file against the Compose specification's JSON schema, and against meshnode.

The schema is the specification's own (vendored in compose_spec/, its README says from where). Each
node service's command and environment go through the real ``meshnode join`` (``join_config``), so
a flag or variable that does not exist, or a value it refuses, fails here. That the topology really
forms a mesh and serves is tests/netns/test_netns_compose.py's job.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from meshnode.cli.demo.apps import APPS
from meshnode.config import DEFAULT_HTTP_PORT, DEFAULT_MESH_PORT
from tests.unit.deploy.dockerfile_facts import container_env, image_facts
from tests.unit.deploy.join_config import join_config

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
SCHEMA = Path(__file__).parent / "compose_spec" / "compose-spec.json"
# The data plane's port in every recipe (AgentConfig's default is a free port, which no firewall
# rule or published port can name).
DATA_PORT = 8472
DATA_DIR = "/var/lib/meshnode"  # the image's VOLUME
TOKEN_SECRET = "meshnode_token"


def _compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def _nodes() -> dict[str, dict[str, Any]]:
    """The services that run an agent: their command is ``join`` (the image's ENTRYPOINT is meshnode)."""
    return {
        name: service
        for name, service in _compose()["services"].items()
        if service.get("command", [None])[0] == "join"
    }


def _seeds(service: dict[str, Any]) -> list[str]:
    return [arg.removeprefix("--seed=") for arg in service["command"] if arg.startswith("--seed=")]


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, error.path))}: {error.message}" for error in validator.iter_errors(_compose())
    ]
    assert not errors, "\n".join(errors)


def test_the_schema_check_catches_a_misspelt_key() -> None:
    document = _compose()
    document["services"]["node1"]["healthchek"] = document["services"]["node1"].pop("healthcheck")
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    assert any("healthchek" in error.message for error in validator.iter_errors(document))


def test_three_cpu_nodes_and_an_optional_gpu_node() -> None:
    nodes = _nodes()
    always = sorted(name for name, service in nodes.items() if not service.get("profiles"))
    assert always == ["node1", "node2", "node3"]
    assert nodes["gpu1"]["profiles"] == ["gpu"]
    assert nodes["gpu1"]["image"] == "${MESHNODE_CUDA_IMAGE:-meshnode:cuda}"
    assert all(nodes[name]["image"] == "${MESHNODE_IMAGE:-meshnode:cpu}" for name in always)
    devices = nodes["gpu1"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


@pytest.mark.parametrize("name", ["node1", "node2", "node3", "gpu1"])
def test_each_node_runs_what_meshnode_join_accepts(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    service = _nodes()[name]
    config = join_config(monkeypatch, service["command"], container_env(service["environment"]))
    assert config.name == name == service["hostname"]
    assert (config.http_host, config.http_port) == ("0.0.0.0", DEFAULT_HTTP_PORT)
    assert (config.mesh_host, config.mesh_port) == ("0.0.0.0", DEFAULT_MESH_PORT)
    assert (config.data_host, config.data_port) == ("0.0.0.0", DATA_PORT)
    assert not config.mdns, "mDNS does not cross Docker's bridge; the nodes join by seeds"
    assert config.token is None and config.token_file == Path("/run/secrets") / TOKEN_SECRET
    assert service["secrets"] == [TOKEN_SECRET]
    assert str(config.data_dir) == DATA_DIR
    assert service["volumes"] == [f"{name}-data:{DATA_DIR}"]
    assert not config.insecure_http, "clients from outside the container need an API key"


def test_the_data_dir_is_the_images_volume() -> None:
    assert image_facts().volume == DATA_DIR


def test_the_secret_and_volumes_are_for_the_images_user_who_runs_each_node() -> None:
    # No `user:` override: the image's numeric user (which must be able to read the secret file,
    # docs/deploy.md) runs the agent; only the one-shot key maker runs as root.
    assert image_facts().uid != 0
    assert not any("user" in service for service in _nodes().values())
    assert _compose()["services"]["prometheus-key"]["user"] == "0"


def test_nodes_join_by_seeding_the_other_nodes_by_service_name() -> None:
    nodes = _nodes()
    cpu = {"node1", "node2", "node3"}
    for name, service in nodes.items():
        seeds = _seeds(service)
        assert len(seeds) == len(set(seeds)) >= 2, name
        assert {seed.rpartition(":")[0] for seed in seeds} == cpu - {name}, name
        assert {seed.rpartition(":")[2] for seed in seeds} == {str(DEFAULT_MESH_PORT)}, name


def test_every_node_has_a_volume_of_its_own() -> None:
    volumes = [service["volumes"][0].split(":")[0] for service in _nodes().values()]
    assert len(set(volumes)) == len(volumes)
    assert set(volumes) <= set(_compose()["volumes"])


def test_the_token_is_a_secret_from_a_file() -> None:
    assert _compose()["secrets"] == {TOKEN_SECRET: {"file": "./meshnode-token"}}


def test_the_demo_apps_are_pinned_as_meshnode_demo_declares_them(monkeypatch: pytest.MonkeyPatch) -> None:
    pinned: dict[str, list[str]] = {}
    for name, service in _nodes().items():
        config = join_config(monkeypatch, service["command"], container_env(service["environment"]))
        for deployment in config.deploy:
            pinned.setdefault(deployment, []).append(name)
    assert set(pinned) == {f"{name}={app}" for name, app in APPS}
    assert sorted(pinned["echo=meshnode.apps.echo:Echo"]) == ["node2", "node3"]  # echo survives one loss


def test_healthchecks_ask_for_readiness_on_the_http_port() -> None:
    for name, service in _nodes().items():
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name
        assert f"'http://127.0.0.1:{DEFAULT_HTTP_PORT}/ready'" in test[3], name
        compile(test[3], f"{name} healthcheck", "exec")  # valid Python


def test_only_node1_is_published_and_only_on_the_hosts_loopback() -> None:
    services = _compose()["services"]
    assert services["node1"]["ports"] == [f"127.0.0.1:{DEFAULT_HTTP_PORT}:{DEFAULT_HTTP_PORT}"]
    assert services["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]
    assert not any("ports" in service for name, service in _nodes().items() if name != "node1")


def test_prometheus_finds_the_nodes_through_their_targets_route_with_the_key_made_for_it() -> None:
    services = _compose()["services"]
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    key_volume, key_dir = next(
        volume.split(":")[:2] for volume in services["prometheus"]["volumes"] if "key" in volume
    )
    key_file = f"{key_dir}/meshnode.key"
    urls = [sd["url"] for sd in job["http_sd_configs"]]
    assert urls == [
        f"http://{name}:{DEFAULT_HTTP_PORT}/v1/prometheus/targets" for name in ("node1", "node2", "node3")
    ]
    assert {sd["authorization"]["credentials_file"] for sd in job["http_sd_configs"]} == {key_file}
    assert job["authorization"]["credentials_file"] == key_file
    # Prometheus 2.42 sends a discovery request's credentials without "Bearer " unless told the type.
    assert (
        {sd["authorization"]["type"] for sd in job["http_sd_configs"]}
        == {job["authorization"]["type"]}
        == {"Bearer"}
    )
    maker = services["prometheus-key"]
    assert maker["network_mode"] == "service:node1"  # node1's loopback: no key needed to make one
    assert f"{key_volume}:/keys" in maker["volumes"]
    assert maker["environment"]["KEY_FILE"] == "/keys/meshnode.key"
    assert services["prometheus"]["depends_on"] == {
        "prometheus-key": {"condition": "service_completed_successfully"}
    }


def test_the_key_script_is_valid_sh() -> None:
    result = subprocess.run(
        ["sh", "-n", str(COMPOSE_DIR / "prometheus-key.sh")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing (scripts/setup.sh installs Debian's prometheus)")
    result = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(COMPOSE_DIR / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""The Compose topology (deploy/compose/compose.yaml) as real agents on real hosts: it forms a mesh
and serves the demo apps through every node.

Each service runs its exact command and environment in a network namespace of its own, joined by a
bridge, as ``compose_topology.py`` describes: node1..node3 (the ``gpu`` profile's node is left out,
as `docker compose up` leaves it out without ``--profile gpu``), the one-shot ``prometheus-key`` in
node1's namespace (``network_mode: service:node1``), and Prometheus in its own, with the file's
prometheus.yml. Service names resolve through /etc/netns/<namespace>/hosts.

What it checks, as a user of the Compose file would see it: every node's healthcheck passes; every
node sees the three alive; the key service makes a key; Prometheus finds the three nodes through
their HTTP service discovery and scrapes each with that key; and from Prometheus's machine (not
loopback, so with the key), every demo app answers a predict through every node.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from meshnode.cli.demo.apps import APPS
from tests.integration.agents import wait_for
from tests.netns.chaos_client import Answer, Call, ask
from tests.netns.compose_topology import hosts_files, load_services, process_env, translate
from tests.netns.netns import Bridge, require_netns

pytestmark = pytest.mark.netns

HTTP_PORT = 8470
PROMETHEUS_PORT = 9090
# Agents starting and joining (LAN profile: the file sets none) on a busy 2-core machine.
READY_TIMEOUT_S = 60.0
# Scrapes every 15 s (prometheus.yml): the first of each target comes within one interval.
SCRAPED_TIMEOUT_S = 45.0
# The pinned apps load at the agents' start: the tiny diffusion and chat models are built and
# MiniLM loaded while the mesh forms; a busy CI machine needs a margin.
APPS_TIMEOUT_S = 180.0
# One small request per demo app, as meshnode demo warms them (node/cli/demo/apps.py).
SAMPLES: dict[str, dict[str, Any]] = {
    "echo": {"hello": "compose"},
    "stream": {"interval_s": 0},
    "embeddings": {"input": "A cat sits on the mat."},
    "t2i": {"prompt": "a red square", "steps": 1},
    "chat": {"prompt": "hello", "max_tokens": 2},
}


@pytest.mark.timeout(420)
def test_the_compose_topology_forms_a_mesh_that_serves_the_demo_apps_through_every_node(
    tmp_path: Path,
) -> None:
    require_netns()
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is missing (scripts/setup.sh installs Debian's prometheus)")
    services = load_services(tmp_path)
    assert set(SAMPLES) == {name for name, _ in APPS}
    nodes = [name for name, service in services.items() if service.argv[1:3] == ["-m", "meshnode"]]
    assert nodes == ["node1", "node2", "node3"]
    own_network = [name for name, service in services.items() if service.network_of is None]
    assert own_network == ["node1", "node2", "node3", "prometheus"]
    token_file = services["node1"].mounts["/run/secrets/meshnode_token"]
    token_file.parent.mkdir(parents=True)
    token_file.write_text(secrets.token_urlsafe(32) + "\n")
    logs = {name: tmp_path / f"{name}.log" for name in own_network}
    began = time.monotonic()
    with (
        contextlib.ExitStack() as files,
        Bridge("mncomp", len(own_network)) as net,
        hosts_files(net, dict(zip(own_network, net.hosts, strict=True))),
    ):
        namespace = dict(zip(own_network, net.hosts, strict=True))

        def start(name: str, argv: list[str]) -> None:
            log = files.enter_context(logs[name].open("ab"))
            env = process_env(services[name])
            net.exec(
                namespace[name],
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=services[name].cwd,
            )

        for name in nodes:
            start(name, services[name].argv)

        def healthy() -> bool:
            return all(
                _run(namespace[name], services[name].healthcheck or []).returncode == 0 for name in nodes
            )

        wait_for(healthy, READY_TIMEOUT_S, interval=1.0, message=lambda: _tails(logs))

        # The key service: node1's namespace, its exact entrypoint and environment.
        maker = services["prometheus-key"]
        assert maker.network_of == "node1"
        made = _run(namespace["node1"], maker.argv, env=process_env(maker), cwd=maker.cwd)
        assert made.returncode == 0, made.stdout + made.stderr
        key_file = maker.mounts["/keys"] / "meshnode.key"
        key = key_file.read_text().strip()
        assert key.startswith("mn_"), key
        again = _run(namespace["node1"], maker.argv, env=process_env(maker), cwd=maker.cwd)
        assert again.returncode == 0 and "keeping it" in again.stdout, again.stdout + again.stderr

        client = namespace["prometheus"]
        auth = (("content-type", "application/json"), ("authorization", f"Bearer {key}"))

        def mesh_views() -> list[Answer]:
            return ask(
                client, [Call("GET", f"http://{name}:{HTTP_PORT}/v1/mesh", headers=auth) for name in nodes]
            )

        def formed() -> bool:
            for answer in mesh_views():
                members = (answer.json() or {}).get("members", [])
                if sorted(m["name"] for m in members if m["status"] == "alive") != nodes:
                    return False
            return True

        wait_for(formed, READY_TIMEOUT_S, interval=1.0, message=lambda: f"{mesh_views()}\n{_tails(logs)}")

        # Prometheus: the file's config, with the key volume's container path translated.
        spec = services["prometheus"]
        config = tmp_path / "prometheus.yml"
        config.write_text(translate(spec.mounts["/etc/prometheus/prometheus.yml"].read_text(), spec.mounts))
        start(
            "prometheus",
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={spec.mounts['/prometheus']}",
                f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
            ],
        )

        def targets() -> dict[str, str]:
            url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/targets?state=active"
            (answer,) = ask(client, [Call("GET", url)])
            active = ((answer.json() or {}).get("data") or {}).get("activeTargets", [])
            return {target["labels"].get("node", "?"): target["health"] for target in active}

        wait_for(
            lambda: targets() == dict.fromkeys(nodes, "up"),
            SCRAPED_TIMEOUT_S,
            interval=1.0,
            message=lambda: f"{targets()}\n{logs['prometheus'].read_text(errors='replace')[-3000:]}",
        )

        # Every demo app through every node, from Prometheus's machine with the key made above.
        calls = [
            Call("POST", f"http://{node}:{HTTP_PORT}/v1/predict/{app}", body, timeout_s=60.0, headers=auth)
            for app, body in SAMPLES.items()
            for node in nodes
        ]
        answers: list[Answer] = []

        def served() -> bool:
            answers[:] = ask(client, calls)
            return all(answer.status == 200 for answer in answers)

        wait_for(
            served,
            APPS_TIMEOUT_S,
            interval=2.0,
            message=lambda: (
                "\n".join(
                    f"{call.url}: {answer.status} {answer.body[:300]}"
                    for call, answer in zip(calls, answers, strict=False)
                )
                + "\n"
                + _tails(logs)
            ),
        )
        # Each request entered the node it was sent to and ran where the file pins its app
        # (X-Mesh-Route: the node path it took, entry first).
        pinned = {
            app: {
                name
                for name in nodes
                if any(arg.startswith(f"--deploy={app}=") for arg in services[name].argv)
            }
            for app in SAMPLES
        }
        sent = [(app, node) for app in SAMPLES for node in nodes]
        for (app, node), answer in zip(sent, answers, strict=True):
            route = (answer.route or "").split(",")
            assert route[0] == node and route[-1] in pinned[app], (app, node, answer.route)
        echo = answers[: len(nodes)]
        assert all(answer.json() == {"echo": SAMPLES["echo"]} for answer in echo), echo
        print(f"compose topology served {len(calls)} predicts in {time.monotonic() - began:.1f} s")


def _run(
    namespace: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `argv` in `namespace` to its end (a healthcheck, the key service)."""
    return subprocess.run(
        ["ip", "netns", "exec", namespace, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        check=False,
    )


def _tails(logs: dict[str, Path]) -> str:
    parts = []
    for name, path in logs.items():
        text = path.read_text(errors="replace") if path.exists() else ""
        parts.append(f"--- {name}\n" + "\n".join(text.splitlines()[-25:]))
    return "\n".join(parts)

"""Real agents on real hosts: three network namespaces on a bridge form a mesh by mDNS alone, no seeds."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agents import wait_for
from tests.netns.netns import Bridge, require_netns

pytestmark = pytest.mark.netns

# mDNS answers within a second here; the rest is three agents starting on a busy 2-core machine.
FORM_TIMEOUT_S = 60.0
# Every host is its own namespace, so every agent can have the default ports.
HTTP_PORT = 8470
MESH_PORT = 8471
# The test cannot reach into a namespace itself, so a tiny client runs inside it (stdlib only: fast).
FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"
LOG_TAIL_LINES = 15


def view_inside(host: str, url: str) -> dict[str, Any] | None:
    """GET ``url`` from inside namespace ``host``; None while the agent does not answer yet."""
    result = subprocess.run(
        ["ip", "netns", "exec", host, sys.executable, "-c", FETCH, url],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    if result.returncode != 0:
        return None
    view: dict[str, Any] = json.loads(result.stdout)
    return view


def log_tail(path: Path) -> str:
    lines = path.read_text(errors="replace").rstrip().splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(empty log)"


def test_agents_in_three_namespaces_find_each_other_by_mdns(tmp_path: Path) -> None:
    require_netns()
    # Its own mesh id, though nothing outside these namespaces could hear them anyway.
    mesh_id = f"netns-{uuid.uuid4().hex[:12]}"
    # One token for the mesh: only nodes holding it can read each other's gossip.
    token = secrets.token_urlsafe(32)
    with Bridge("mna", 3) as net, contextlib.ExitStack() as logs:
        processes = {}
        for index, host in enumerate(net.hosts):
            address = net.address_of(host)
            log = logs.enter_context((tmp_path / f"host{index}.log").open("wb"))
            command = [sys.executable, "-m", "meshnode", "join", "--name", f"host{index}"]
            command += ["--profile", "local", "--mdns", "--interface", address, "--mesh-id", mesh_id]
            command += ["--token", token]
            # HTTP from another machine needs an API key; from the agent's own machine it is open, so
            # it serves every address and the test asks over the namespace's loopback.
            command += ["--http", f"0.0.0.0:{HTTP_PORT}", "--mesh", f"{address}:{MESH_PORT}"]
            command += ["--data-dir", str(tmp_path / f"host{index}")]
            processes[host] = net.exec_logged(host, command, log)
        views: dict[str, dict[str, Any] | None] = dict.fromkeys(net.hosts)

        def everyone_sees_three_alive() -> bool:
            for index, host in enumerate(net.hosts):
                code = processes[host].poll()
                assert code is None, (
                    f"host{index} exited with {code}:\n{log_tail(tmp_path / f'host{index}.log')}"
                )
                views[host] = view_inside(host, f"http://127.0.0.1:{HTTP_PORT}/v1/mesh")
            selves = {view["self"] for view in views.values() if view is not None}
            return len(selves) == 3 and all(
                view is not None
                and {member["id"]: member["status"] for member in view["members"]}
                == dict.fromkeys(selves, "alive")
                for view in views.values()
            )

        def diagnosis() -> str:
            parts = [f"views: {json.dumps(views, indent=1)}"]
            for index in range(len(net.hosts)):
                parts.append(f"--- host{index} log:\n{log_tail(tmp_path / f'host{index}.log')}")
            return "\n".join(parts)

        took = wait_for(everyone_sees_three_alive, FORM_TIMEOUT_S, interval=0.5, message=diagnosis)
        print(f"three namespaces formed a mesh by mDNS {took:.1f} s after their agents started")

        # Each agent advertised its namespace address, not loopback: peers could really reach it.
        expected_addresses = {f"{net.address_of(host)}:{MESH_PORT}" for host in net.hosts}
        for view in views.values():
            assert view is not None
            assert {member["mesh"] for member in view["members"]} == expected_addresses, diagnosis()

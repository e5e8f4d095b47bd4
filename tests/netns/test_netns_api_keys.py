"""API keys on real hosts: clients on another machine need a key, of the right scope, on every node.

Three network namespaces on a bridge: two run agents (``a`` serves ``echo``), the third is a client
machine with no agent. Keys are made and revoked on the agents' own machines over loopback (open, as
the CLI on a node's own machine is); the client reaches the agents over the bridge, so they see it
at a non-loopback address and ask for a key, for HTTP requests and WebSockets alike.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.agents import wait_for
from tests.netns.netns import Bridge, require_netns

pytestmark = pytest.mark.netns

FORM_TIMEOUT_S = 60.0
# A key made on one node works on another once gossip carried it: a round or two of the local profile.
SPREAD_TIMEOUT_S = 15.0
HTTP_PORT = 8470
MESH_PORT = 8471
# A stdlib client run inside a namespace: METHOD URL BODY KEY -> prints the status code.
REQUEST = """
import sys, urllib.request, urllib.error
method, url, body, key = sys.argv[1:5]
headers = {"Content-Type": "application/json"}
if key:
    headers["Authorization"] = "Bearer " + key
request = urllib.request.Request(url, data=body.encode() or None, method=method, headers=headers)
try:
    print(urllib.request.urlopen(request, timeout=5).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except OSError:
    print(0)
"""

# A WebSocket client run inside a namespace: URL KEY -> the first event's type, or the handshake's
# HTTP status when the node refused to open the socket.
WEBSOCKET = """
import json, sys
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
url, key = sys.argv[1:3]
headers = {"Authorization": "Bearer " + key} if key else {}
try:
    with connect(url, additional_headers=headers, open_timeout=5) as socket:
        socket.send(json.dumps({"hello": "mesh"}))
        print(json.loads(socket.recv(timeout=10))["type"])
except InvalidStatus as exc:
    print(exc.response.status_code)
"""


def inside(host: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", host, *argv], capture_output=True, text=True, timeout=60, check=False
    )


def status(host: str, method: str, url: str, body: str = "", key: str = "") -> int:
    """The status code a request from inside `host` gets (0: no answer)."""
    result = inside(host, sys.executable, "-c", REQUEST, method, url, body, key)
    return int(result.stdout.strip() or 0)


def meshnode(host: str, *args: str) -> subprocess.CompletedProcess[str]:
    return inside(host, sys.executable, "-m", "meshnode", *args)


def test_remote_clients_need_a_key_of_the_right_scope_on_every_node(tmp_path: Path) -> None:
    require_netns()
    token = secrets.token_urlsafe(32)
    with Bridge("mnkey", 3) as net, contextlib.ExitStack() as logs:
        a, b, client = net.hosts
        for index, (host, extra) in enumerate(((a, ["--deploy", "echo=meshnode.apps.echo:Echo"]), (b, []))):
            address = net.address_of(host)
            command = [
                sys.executable,
                "-m",
                "meshnode",
                "join",
                "--name",
                f"host{index}",
                "--profile",
                "local",
            ]
            command += ["--no-mdns", "--interface", address, "--token", token, *extra]
            # 0.0.0.0: the node's own machine reaches it on loopback, others on the bridge address.
            command += ["--http", f"0.0.0.0:{HTTP_PORT}", "--mesh", f"{address}:{MESH_PORT}"]
            command += ["--data-dir", str(tmp_path / f"host{index}")]
            command += ["--seed", f"{net.address_of(a)}:{MESH_PORT}"] if index else []
            net.exec_logged(host, command, logs.enter_context((tmp_path / f"host{index}.log").open("wb")))
        url_a, url_b = (f"http://{net.address_of(host)}:{HTTP_PORT}" for host in (a, b))
        local = f"http://127.0.0.1:{HTTP_PORT}"
        predict, body = "/v1/predict/echo", json.dumps({"hello": "mesh"})
        spec = json.dumps({"app": "meshnode.apps.echo:Echo", "min_replicas": 0})

        def served_through_b() -> bool:
            return status(b, "POST", local + predict, body) == 200  # loopback on b: open

        wait_for(served_through_b, FORM_TIMEOUT_S, interval=0.5, message=lambda: _logs(tmp_path))

        # No key, from another machine: 401 on every node, for predict and for declaring.
        for url in (url_a, url_b):
            assert status(client, "POST", url + predict, body) == 401
            assert status(client, "PUT", url + "/v1/deployments/mine", spec) == 401
            assert status(client, "GET", url + "/health") == 200

        # Keys made on a's machine (loopback needs none), used against b.
        made = meshnode(a, "keys", "create", "--scope", "invoke", "--name", "app", "--node", local)
        assert made.returncode == 0, made.stderr
        invoke = made.stdout.strip()
        admin = meshnode(a, "keys", "create", "--scope", "admin", "--node", local).stdout.strip()

        def b_takes_the_invoke_key() -> bool:
            return status(client, "POST", url_b + predict, body, invoke) == 200

        wait_for(b_takes_the_invoke_key, SPREAD_TIMEOUT_S, interval=0.3, message=lambda: _logs(tmp_path))

        # The WebSocket predict route passes the same gate: refused before it opens without a key
        # (uvicorn answers the handshake 403), served through b's hop to a with one.
        for url in (url_a, url_b):
            socket_url = url.replace("http://", "ws://") + "/v1/ws/predict/echo"
            assert inside(client, sys.executable, "-c", WEBSOCKET, socket_url, "").stdout.strip() == "403"
        socket_url = url_b.replace("http://", "ws://") + "/v1/ws/predict/echo"
        opened = inside(client, sys.executable, "-c", WEBSOCKET, socket_url, invoke)
        assert opened.stdout.strip() == "result", opened.stderr
        assert status(client, "PUT", url_b + "/v1/deployments/mine", spec, invoke) == 403
        assert status(client, "PUT", url_b + "/v1/deployments/mine", spec, admin) in (200, 201)

        # The client command line with --api-key, through b.
        answered = meshnode(client, "predict", "echo", body, "--node", url_b, "--api-key", invoke)
        assert answered.returncode == 0 and "mesh" in answered.stdout, answered.stderr
        refused = meshnode(client, "predict", "echo", body, "--node", url_b)
        assert refused.returncode != 0 and "401" in refused.stderr + refused.stdout

        # Revoked on b's machine: a refuses it within a gossip round or two.
        key_id = invoke.split("_")[1]
        assert meshnode(b, "keys", "revoke", key_id, "--node", local).returncode == 0

        def a_refuses_the_revoked_key() -> bool:
            return status(client, "POST", url_a + predict, body, invoke) == 401

        wait_for(a_refuses_the_revoked_key, SPREAD_TIMEOUT_S, interval=0.3, message=lambda: _logs(tmp_path))
        listed = json.loads(meshnode(a, "keys", "list", "--json", "--node", local).stdout)["keys"]
        assert {(key["id"], key["revoked"]) for key in listed} >= {(key_id, True)}


def _logs(tmp_path: Path) -> str:
    return "\n".join(
        f"--- {path.name}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:])
        for path in sorted(tmp_path.glob("host*.log"))
    )

"""Two meshes with different tokens on one network segment stay two meshes, on real hosts.

Four network namespaces on one bridge run one agent each, all with mDNS on and the same
``--mesh-id``: ``a0`` and ``a1`` hold one token, ``b0`` and ``b1`` another. mDNS tells every agent
about all three others (the mesh id matches), so each tries to join the other mesh's nodes too; those
packets are sealed with a key the receivers do not hold, so they are dropped unread and counted as
``unknown_key``, and each mesh keeps seeing only its own two members.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agents import wait_for
from tests.netns.netns import Bridge, require_netns

pytestmark = pytest.mark.netns

# mDNS answers within a second here; the rest is four agents starting on a busy 2-core machine.
FORM_TIMEOUT_S = 60.0
# The watch starts once every agent has counted the other mesh's packets, so every join attempt mDNS
# set off has arrived and been dropped; a believed one would have merged the views at once. Five
# seconds also covers 25 probe rounds of the local profile (0.2 s) and the repeated mDNS
# announcements of the agents' first seconds.
WATCH_S = 5.0
POLL_INTERVAL_S = 0.5
HTTP_PORT = 8470
MESH_PORT = 8471
LOG_TAIL_LINES = 15
# Runs inside a namespace (stdlib only: fast): prints the agent's members and its gossip drops.
LOOK = """
import json, sys, urllib.request
base = sys.argv[1]
mesh = json.loads(urllib.request.urlopen(base + "/v1/mesh", timeout=3).read())
drops = {}
for line in urllib.request.urlopen(base + "/metrics", timeout=3).read().decode().splitlines():
    if line.startswith("meshnode_gossip_dropped_total{"):
        drops[line.split('reason="', 1)[1].split('"', 1)[0]] = float(line.rsplit(" ", 1)[1])
print(json.dumps({"members": {m["name"]: m["status"] for m in mesh["members"]}, "drops": drops}))
"""


def look(host: str) -> dict[str, Any] | None:
    """What the agent in ``host`` sees and dropped; None while it does not answer yet."""
    result = subprocess.run(
        ["ip", "netns", "exec", host, sys.executable, "-c", LOOK, f"http://127.0.0.1:{HTTP_PORT}"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    if result.returncode != 0:
        return None
    seen: dict[str, Any] = json.loads(result.stdout)
    return seen


def log_tail(path: Path) -> str:
    lines = path.read_text(errors="replace").rstrip().splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(empty log)"


def test_two_meshes_with_different_tokens_on_one_segment_stay_apart(tmp_path: Path) -> None:
    require_netns()
    mesh_id = f"netns-{uuid.uuid4().hex[:12]}"
    tokens = {"a": secrets.token_urlsafe(32), "b": secrets.token_urlsafe(32)}
    names = ["a0", "a1", "b0", "b1"]
    own = {name: {other: "alive" for other in names if other[0] == name[0]} for name in names}
    with Bridge("mnt", len(names)) as net, contextlib.ExitStack() as logs:
        processes = []
        for name, host in zip(names, net.hosts, strict=True):
            address = net.address_of(host)
            log = logs.enter_context((tmp_path / f"{name}.log").open("wb"))
            command = [sys.executable, "-m", "meshnode", "join", "--name", name, "--profile", "local"]
            command += ["--mdns", "--interface", address, "--mesh-id", mesh_id, "--token", tokens[name[0]]]
            # HTTP from another machine needs an API key; from the agent's own machine it is open, so
            # it serves every address and the test asks over the namespace's loopback (``look``).
            command += ["--http", f"0.0.0.0:{HTTP_PORT}", "--mesh", f"{address}:{MESH_PORT}"]
            command += ["--data-dir", str(tmp_path / name)]
            processes.append(net.exec_logged(host, command, log))
        seen: dict[str, dict[str, Any] | None] = dict.fromkeys(names)

        def refresh() -> None:
            for name, host, process in zip(names, net.hosts, processes, strict=True):
                code = process.poll()
                assert code is None, f"{name} exited with {code}:\n{log_tail(tmp_path / f'{name}.log')}"
                seen[name] = look(host)

        def diagnosis() -> str:
            parts = [f"seen: {json.dumps(seen, indent=1)}"]
            parts += [f"--- {name} log:\n{log_tail(tmp_path / f'{name}.log')}" for name in names]
            return "\n".join(parts)

        def apart(name: str) -> bool:
            view = seen[name]
            return view is not None and view["members"] == own[name]

        def formed_and_refused() -> bool:
            refresh()
            return all(
                apart(name) and (seen[name] or {}).get("drops", {}).get("unknown_key", 0) >= 1
                for name in names
            )

        took = wait_for(formed_and_refused, FORM_TIMEOUT_S, interval=POLL_INTERVAL_S, message=diagnosis)
        print(f"two meshes formed, each refusing the other's packets, {took:.1f} s after start")

        # A foreign member in any view, at any look during the watch, fails the test.
        deadline = time.monotonic() + WATCH_S
        while time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
            refresh()
            assert all(apart(name) for name in names), diagnosis()
        for name in names:
            view = seen[name]
            assert view is not None
            # Nothing the other mesh sent was opened, so none of it reached the decoder.
            decoded = {reason: view["drops"].get(reason, 0) for reason in ("malformed", "mesh", "version")}
            assert set(decoded.values()) == {0}, f"{name}: {view['drops']}"

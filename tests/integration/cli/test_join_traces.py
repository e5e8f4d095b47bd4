"""``meshnode join`` configured by a file and the environment, logging JSON, traced across a hop.

- two real agents, each given a ``--config`` file (its region, its log level, a pinned replica on
  one) and ``$MESHNODE_LOG_FORMAT=json`` / ``$MESHNODE_ZONE`` in the environment;
- a predict sent to the agent without the replica is forwarded to the other (``X-Mesh-Route``),
  and the request's id is on JSON log lines of both, each line naming its node;
- on a terminal, ``meshnode join`` shows a status line until it has joined.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.integration.agents import HOST, AgentProcess, free_port, stop_processes, wait_for

# Python start-up and imports on a busy 2-core machine, then the echo worker's start.
REPLICA_TIMEOUT_S = 60.0
# Lines are written as the request goes; only a machine too busy to flush takes seconds.
LOG_TIMEOUT_S = 15.0
JOINED_TIMEOUT_S = 60.0


def json_lines(agent: AgentProcess) -> list[dict[str, Any]]:
    """The agent's log lines, each parsed; fails on a line that is not JSON (the harness's aside)."""
    parsed = []
    for line in agent.log_path.read_text(errors="replace").splitlines():
        if line.startswith("--- test harness:") or not line.strip():
            continue
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"{agent.name} wrote a line that is not JSON: {line!r}") from None
    return parsed


def about(agent: AgentProcess, request_id: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(agent) if line.get("request_id") == request_id]


def test_a_request_is_traced_in_the_json_logs_of_both_nodes_it_crosses(tmp_path: Path) -> None:
    mesh_id = f"test-{uuid.uuid4().hex[:12]}"
    token = uuid.uuid4().hex * 2
    (tmp_path / "entry.toml").write_text('region = "from-file"\nlog-level = "debug"\n')
    (tmp_path / "server.yaml").write_text(
        "region: from-file\nlog_level: debug\ndeploy:\n  - echo=meshnode.apps.echo:Echo\n"
    )
    env = {"MESHNODE_LOG_FORMAT": "json", "MESHNODE_ZONE": "from-env"}
    entry = AgentProcess(
        "entry", tmp_path, mesh_id=mesh_id, token=token, env=env,
        extra_args=["--config", str(tmp_path / "entry.toml")],
    )  # fmt: skip
    server = AgentProcess(
        "server", tmp_path, mesh_id=mesh_id, token=token, env=env, seeds=[entry.mesh],
        extra_args=["--config", str(tmp_path / "server.yaml")],
    )  # fmt: skip
    try:
        entry.start()
        server.start()
        entry.wait_ready()
        server.wait_ready()
        me = entry.members()
        assert {(m["name"], m["region"], m["zone"]) for m in me.values()} >= {
            ("entry", "from-file", "from-env")
        }

        def forwarded(request_id: str) -> httpx.Response:
            headers = {"X-Request-Id": request_id}
            return httpx.post(
                f"{entry.url}/v1/predict/echo", json={"x": 1}, headers=headers, timeout=10.0, trust_env=False
            )

        def serves() -> bool:
            entry.check_running()
            server.check_running()
            return forwarded(f"warm-up-{uuid.uuid4().hex[:8]}").status_code == 200

        wait_for(
            serves,
            REPLICA_TIMEOUT_S,
            interval=0.2,
            message=lambda: f"{entry.describe()}\n{server.describe()}",
        )

        request_id = f"trace-{uuid.uuid4().hex}"
        response = forwarded(request_id)
        assert response.status_code == 200, response.text
        assert response.headers["X-Request-Id"] == request_id
        assert response.headers["X-Mesh-Route"] == "entry,server"

        def on_both() -> bool:
            return bool(about(entry, request_id)) and bool(about(server, request_id))

        wait_for(
            on_both,
            LOG_TIMEOUT_S,
            interval=0.1,
            message=lambda: f"no line about {request_id} on both\n{entry.describe()}\n{server.describe()}",
        )
        for agent in (entry, server):
            for line in about(agent, request_id):
                assert line["node"] == agent.name, line
                assert {"ts", "level", "logger", "message"} <= set(line), line
        # Lines no request caused carry no id (the start-up line of each node, for one).
        starts = [line for line in json_lines(server) if " up: http " in line["message"]]
        assert starts and all("request_id" not in line for line in starts), starts
        # uvicorn's own warnings come through the same handler, as JSON (json_lines fails on text).
        host, port = entry.http.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            raw.recv(1024)

        def uvicorn_warned() -> bool:
            return any(line["logger"].startswith("uvicorn") for line in json_lines(entry))

        wait_for(uvicorn_warned, LOG_TIMEOUT_S, interval=0.1, message=entry.describe)
    finally:
        stop_processes([*entry.started, *server.started])


def test_on_a_terminal_join_shows_a_status_line_until_joined(tmp_path: Path) -> None:
    mesh_id = f"test-{uuid.uuid4().hex[:12]}"
    token = uuid.uuid4().hex * 2
    seed = AgentProcess("seed", tmp_path, mesh_id=mesh_id, token=token)
    command = [sys.executable, "-m", "meshnode", "join", "--name", "tty", "--profile", "local", "--no-mdns"]
    command += ["--http", f"{HOST}:{free_port()}", "--mesh", f"{HOST}:{free_port()}"]
    command += ["--data-dir", str(tmp_path / "tty"), "--mesh-id", mesh_id, "--seed", seed.mesh]
    primary, secondary = pty.openpty()
    env = {**os.environ, "MESHNODE_TOKEN": token, "COLUMNS": "200", "TERM": "xterm"}
    joiner = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary, env=env, start_new_session=True
    )
    os.close(secondary)
    screen = bytearray()

    def read_screen() -> str:
        while select.select([primary], [], [], 0)[0]:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the joiner exited and closed its side
                break
            if not chunk:
                break
            screen.extend(chunk)
        return screen.decode(errors="replace")

    try:
        seed.start()
        seed.wait_ready()
        wait_for(
            lambda: "joined: 1 peer; serving on http://" in read_screen() or joiner.poll() is not None,
            JOINED_TIMEOUT_S,
            interval=0.1,
            message=lambda: f"no joined line on the terminal:\n{read_screen()[-3000:]}",
        )
        text = read_screen()
        assert joiner.poll() is None, text[-3000:]
        assert "joining: 0 peers; seeds tried: " in text or "starting the agent" in text, text[-3000:]
        assert " INFO meshnode.agent: node tty " in text, text[-3000:]  # the log lines go on as text
    finally:
        joiner.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while joiner.poll() is None and time.monotonic() < deadline:
            read_screen()  # a full terminal buffer would block the joiner's last lines
            time.sleep(0.05)
        stop_processes([joiner, *seed.started])
        os.close(primary)

"""A mesh of real agents for bench/membership.py: started through a seed, stopped, and read from their logs.

Each agent's membership changes come from its own log lines (millisecond timestamps), so measuring
adds no load to the agents.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import procs
from baseline import Variant

LINE = re.compile(r"^(\S+ \S+) INFO meshnode\.agent: member \S+ \((\w{8})\): (\S+) -> (\w+)")
UP = re.compile(r"^(\S+ \S+) INFO meshnode\.agent: node \S+ \((\w{8})\) up")


def stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


@dataclass
class Agent:
    name: str
    http: int
    mesh: int
    data_dir: Path
    log_path: Path
    seed: str | None
    variant: Variant
    extra_args: tuple[str, ...] = ()  # more `meshnode join` arguments, kept across restarts
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""

    def start(self) -> None:
        args = [
            sys.executable, "-m", "meshnode", "join", "--name", self.name, "--profile", "local", "--no-mdns",
            "--http", f"127.0.0.1:{self.http}", "--mesh", f"127.0.0.1:{self.mesh}",
            "--data-dir", str(self.data_dir), *self.variant.join_args, *self.extra_args,
        ]  # fmt: skip
        if self.seed:
            args += ["--seed", self.seed]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.variant.env)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}{path}"

    def log_events(self) -> list[tuple[float, str, str]]:
        """(time, node id prefix, new status) for every membership change this agent logged."""
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = LINE.match(line)
            if match:
                events.append((stamp(match.group(1)), match.group(2), match.group(4)))
        return events

    def up_times(self) -> list[float]:
        return [stamp(m.group(1)) for line in self.log_path.read_text().splitlines() if (m := UP.match(line))]


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` until it holds, or fail after `timeout` seconds."""
    procs.wait(predicate, timeout, what, [])


def view(agent: Agent) -> dict[str, str]:
    try:
        body = httpx.get(agent.url("/v1/mesh"), timeout=2.0).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return {m["id"][:8]: m["status"] for m in body["members"]}


def member(agent: Agent, node: str) -> dict[str, Any] | None:
    """`agent`'s entry for the member whose id starts with `node` in its `GET /v1/mesh`, if any."""
    try:
        members = httpx.get(agent.url("/v1/mesh"), timeout=2.0).json()["members"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return next((m for m in members if m["id"].startswith(node)), None)


def start_mesh(
    n: int, root: Path, variant: Variant, extra_args: dict[int, tuple[str, ...]] | None = None
) -> list[Agent]:
    """`n` agents, b0 the seed, formed; `extra_args` maps an agent's index to more join arguments."""
    root.mkdir(parents=True, exist_ok=True)
    agents: list[Agent] = []
    seed = None
    try:
        for i in range(n):
            agent = Agent(
                f"b{i}",
                procs.free_port(),
                procs.free_port(),
                root / f"b{i}",
                root / f"b{i}.log",
                seed,
                variant,
                (extra_args or {}).get(i, ()),
            )
            agents.append(agent)
            agent.start()
            if seed is None:
                wait(lambda a=agent: view(a) != {}, 30, "the seed agent")
                seed = f"127.0.0.1:{agent.mesh}"
        wait(
            lambda: all(list(view(a).values()).count("alive") == n for a in agents),
            180,
            f"{n} agents to join",
        )
    except BaseException:
        stop_mesh(agents)  # never leave agents behind when the mesh fails to form
        raise
    for agent in agents:
        agent.node_id = httpx.get(agent.url("/v1/mesh"), timeout=2.0).json()["self"][:8]
    return agents


def stop_mesh(agents: list[Agent]) -> None:
    for agent in agents:
        if agent.process and agent.process.poll() is None:
            agent.process.send_signal(signal.SIGTERM)
    for agent in agents:
        if agent.process:
            try:
                agent.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                agent.process.kill()
                agent.process.wait()


def first_event_after(agent: Agent, node: str, status: str, since: float) -> float | None:
    times = [t for t, who, new in agent.log_events() if who == node and new == status and t >= since]
    return min(times) if times else None

"""The chaos suite's harness: real agents in network namespaces, a real load, faults, and their counts.

Shared by the tests (``tests/netns/test_netns_chaos*.py``) and ``bench/chaos.py``; the scenarios
themselves are in ``chaos_faults.py``, ``chaos_network.py``, ``chaos_clock.py`` and
``chaos_regions.py``, and the map is in docs/testing.md ("Chaos").

- ``ChaosMesh(net, workdir, agents)`` runs one ``meshnode join`` on each of the first ``agents``
  hosts of a ``Bridge`` (one token, one fresh mesh id, ``--profile local`` unless told otherwise,
  every other node a seed); the remaining hosts are client machines with no agent, where the
  harness's HTTP calls and the load generator run. The client holds an admin API key made on the
  first node, as an operator's machine would.
- ``ask(host, calls)`` (``chaos_client.py``) makes HTTP calls from inside a namespace.
- ``Load`` (``chaos_load.py``) is one ``loadgen.py`` run in a namespace, stopped by the harness
  or by its own bounds.
- ``transitions`` reads the agents' logs ("member NAME (id): alive -> suspect"), so a test can
  say that no healthy node was ever suspected.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.agents import wait_for
from tests.netns.chaos_client import Answer, Call, ask, log_tail
from tests.netns.chaos_load import Load, Transition
from tests.netns.netns import Bridge

HTTP_PORT = 8470
MESH_PORT = 8471
ECHO_APP = "meshnode.apps.echo:Echo"
APP_DIR = Path(__file__).parent
# Two slots and a queue of two per replica, for scenarios where capacity matters.
NARROW_APP = f"{APP_DIR / 'chaos_apps.py'}:Narrow"
LOADGEN = APP_DIR / "loadgen.py"
# Agents starting, workers importing, SWIM detection and make-before-break moves, on 2 busy cores.
PHASE_TIMEOUT_S = 90.0
POLL_INTERVAL_S = 0.5
# The deployment every scenario serves, and how the load calls it: an echo answer must give the body
# back; a request that never ran (429/503 with Retry-After, a node not answering) is retried, as a
# careful client does; the deadline and socket timeout are far above any healthy answer here.
DEPLOYMENT = "chaos"
LOAD_OPTIONS: dict[str, object] = {
    "path": f"/v1/predict/{DEPLOYMENT}",
    "expect_echo": True,
    "retries": 3,
    "deadline": 10,
    "timeout": 15,
    # A safety net only: every scenario stops its loads itself.
    "seconds": 600,
}
# One state change of a member, as node/agent.py logs it.
TRANSITION = re.compile(r"member (\S+) \((\w+)\): (\w+) -> (\w+)")


@dataclass
class ChaosMesh:
    """Agents on the first ``agents`` hosts of ``net``; the other hosts are clients. Call ``form()``."""

    net: Bridge
    workdir: Path
    agents: int
    # Per agent index: more ``meshnode join`` arguments, and more environment (libfaketime).
    extra_args: Mapping[int, Sequence[str]] = field(default_factory=dict)
    env: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    # Membership timings: ``local`` (fast, one machine) unless a scenario is about a real network.
    profile: str = "local"

    def __post_init__(self) -> None:
        if not 1 <= self.agents < len(self.net.hosts):
            raise ValueError("the bridge needs at least one host more than the agents, for the client")
        self.names = [f"n{index}" for index in range(self.agents)]
        self.hosts = self.net.hosts[: self.agents]
        self.client = self.net.hosts[self.agents]
        self.mesh_id = f"chaos-{uuid.uuid4().hex[:12]}"
        self.token = secrets.token_urlsafe(32)
        self.key = ""
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._loads = 0

    # -- agents ------------------------------------------------------------------------------

    def start(self, index: int) -> None:
        """Start agent ``index`` (again: same name, ports and data dir, so the same node id)."""
        address = self.net.address_of(self.hosts[index])
        command = [sys.executable, "-m", "meshnode", "join", "--name", self.names[index]]
        # HTTP on every address: loopback callers are trusted, the client machine shows a key.
        command += ["--profile", self.profile, "--http", f"0.0.0.0:{HTTP_PORT}"]
        command += ["--mesh", f"{address}:{MESH_PORT}", "--data", f"{address}:0", "--no-mdns"]
        command += ["--mesh-id", self.mesh_id, "--data-dir", str(self.workdir / self.names[index])]
        command += ["--app-dir", str(APP_DIR)]
        # Every other node is a seed, as an operator lists them: a restarted node rejoins through
        # whichever is up, the first one included.
        for other in range(self.agents):
            command += ["--seed", f"{self.net.addresses[other]}:{MESH_PORT}"] if other != index else []
        command += list(self.extra_args.get(index, ()))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MESHNODE_TOKEN": self.token, **self.env.get(index, {})}
        with self.log_path(index).open("ab") as log:
            log.write(f"--- chaos harness: starting {self.names[index]}\n".encode())
            log.flush()
            self.processes[index] = self.net.exec(
                self.hosts[index],
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def signal(self, index: int, signum: int) -> None:
        """Send a signal to agent ``index`` (SIGKILL, SIGSTOP, SIGCONT, SIGTERM)."""
        self.processes[index].send_signal(signum)

    def kill(self, index: int) -> None:
        """SIGKILL agent ``index`` and reap it: a crash."""
        self.signal(index, signal.SIGKILL)
        self.processes[index].wait(timeout=30)

    def terminate(self, index: int) -> int:
        """SIGTERM agent ``index`` (a graceful leave) and wait; its exit code."""
        self.signal(index, signal.SIGTERM)
        try:
            return self.processes[index].wait(timeout=PHASE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.names[index]} did not stop\n{self.diagnosis()}") from None

    def running(self) -> list[int]:
        """Indexes of the agents whose process runs (a stopped one counts)."""
        return [index for index, process in self.processes.items() if process.poll() is None]

    def log_path(self, index: int) -> Path:
        """Where agent ``index`` writes its output (every run of it)."""
        return self.workdir / f"{self.names[index]}.log"

    # -- HTTP --------------------------------------------------------------------------------

    def url(self, index: int) -> str:
        """Agent ``index``'s HTTP API as the client machine reaches it."""
        return f"http://{self.net.address_of(self.hosts[index])}:{HTTP_PORT}"

    def calls(self, calls: list[tuple[int, str, str, object]], timeout_s: float = 5.0) -> list[Answer]:
        """Make ``(agent, method, path, body)`` calls from the client machine, with the key."""
        headers = (("content-type", "application/json"), ("authorization", f"Bearer {self.key}"))
        return ask(
            self.client,
            [Call(method, self.url(i) + path, body, timeout_s, headers) for i, method, path, body in calls],
        )

    def get(self, path: str, indexes: Sequence[int] | None = None) -> dict[int, Any]:
        """``GET path`` on each agent (the running ones by default): its JSON body, None if not 200."""
        chosen = self.running() if indexes is None else list(indexes)
        answers = self.calls([(index, "GET", path, None) for index in chosen])
        return {i: a.json() if a.status == 200 else None for i, a in zip(chosen, answers, strict=True)}

    def form(self, timeout: float = PHASE_TIMEOUT_S) -> float:
        """Start every agent, give the client an admin key, wait for one mesh; the seconds it took."""
        began = time.monotonic()
        for index in range(self.agents):
            self.start(index)
        local = f"http://127.0.0.1:{HTTP_PORT}/v1/keys"
        made: list[Answer] = []

        def key_made() -> bool:
            self.check_running()
            made.append(ask(self.hosts[0], [Call("POST", local, {"scope": "admin", "name": "chaos"})])[0])
            return made[-1].status in (200, 201)

        wait_for(
            key_made, timeout, interval=POLL_INTERVAL_S, message=lambda: f"{made[-1:]}\n{self.diagnosis()}"
        )
        self.key = made[-1].json()["key"]
        self.wait_members(dict.fromkeys(self.names, "alive"), timeout=timeout)
        return time.monotonic() - began

    def members(self, indexes: Sequence[int] | None = None) -> dict[int, dict[str, str] | None]:
        """``{agent: {member name: status}}`` as each agent sees it (None: no answer)."""
        views = self.get("/v1/mesh", indexes)
        return {i: {m["name"]: m["status"] for m in v["members"]} if v else None for i, v in views.items()}

    def wait_members(
        self,
        expected: Mapping[str, str],
        indexes: Sequence[int] | None = None,
        timeout: float = PHASE_TIMEOUT_S,
    ) -> float:
        """Wait until every agent (running ones by default) sees exactly ``expected``; seconds taken."""

        def seen() -> bool:
            self.check_running()
            return all(view == dict(expected) for view in self.members(indexes).values())

        return wait_for(
            seen, timeout, interval=POLL_INTERVAL_S, message=lambda: f"{expected}\n{self.diagnosis()}"
        )

    def deploy(self, name: str, spec: Mapping[str, Any], via: int = 0) -> Answer:
        """``PUT /v1/deployments/{name}`` on agent ``via``."""
        return self.calls([(via, "PUT", f"/v1/deployments/{name}", dict(spec))], timeout_s=10.0)[0]

    def replicas(self, name: str, indexes: Sequence[int] | None = None) -> dict[int, dict[str, str] | None]:
        """``{agent: {node name: replica status}}`` of deployment ``name`` as each agent lists it."""
        bodies = self.get(f"/v1/deployments/{name}", indexes)
        return {i: {r["node"]: r["status"] for r in b["replicas"]} if b else None for i, b in bodies.items()}

    def wait_replicas(
        self, name: str, count: int, indexes: Sequence[int] | None = None, timeout: float = PHASE_TIMEOUT_S
    ) -> set[str]:
        """Wait until every agent lists the same ``count`` replicas of ``name``, all ready; their nodes."""
        agreed: list[set[str]] = []

        def settled() -> bool:
            self.check_running()
            listed = list(self.replicas(name, indexes).values())
            ready = [{node for node, status in (seen or {}).items() if status == "ready"} for seen in listed]
            # Exactly ``count`` listed (no surplus starting or draining), all ready, the same everywhere.
            if not all(seen is not None and len(seen) == count for seen in listed) or len(ready[0]) != count:
                return False
            if any(nodes != ready[0] for nodes in ready):
                return False
            agreed.append(ready[0])
            return True

        wait_for(
            settled, timeout, interval=POLL_INTERVAL_S, message=lambda: f"{name} x{count}\n{self.diagnosis()}"
        )
        return agreed[-1]

    def metric(self, index: int, name: str, label: str) -> dict[str, float]:
        """One counter family of agent ``index``'s ``/metrics``, by the value of ``label``."""
        answer = self.calls([(index, "GET", "/metrics", None)])[0]
        counts: dict[str, float] = {}
        for line in answer.body.splitlines() if answer.status == 200 else []:
            if line.startswith(f"{name}{{") and f'{label}="' in line:
                value = line.split(f'{label}="', 1)[1].split('"', 1)[0]
                counts[value] = float(line.rsplit(" ", 1)[1])
        return counts

    # -- load and logs -----------------------------------------------------------------------

    def load(self, targets: Sequence[int], host: str | None = None, **options: object) -> Load:
        """Start ``loadgen.py`` on the client (or ``host``) against ``targets``; options become flags."""
        self._loads += 1
        output = self.workdir / f"load{self._loads}.json"
        ready = self.workdir / f"load{self._loads}.ready"
        command = [sys.executable, str(LOADGEN), "--key", self.key, "--ready-file", str(ready)]
        for index in targets:
            command += ["--url", self.url(index)]
        for option, value in options.items():
            flag = "--" + option.replace("_", "-")
            command += (
                [flag]
                if value is True
                else [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
            )
        with output.open("wb") as sink:
            process = self.net.exec(
                host or self.client, command, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
            )
        return Load(process, output, ready)

    def mark(self) -> list[int]:
        """The size of every agent's log now: where ``transitions`` starts reading."""
        return [
            self.log_path(index).stat().st_size if self.log_path(index).exists() else 0
            for index in range(self.agents)
        ]

    def transitions(self, since: Sequence[int] | None = None) -> list[Transition]:
        """Every member state change the agents logged (after the ``mark`` given)."""
        found = []
        for index in range(self.agents):
            with self.log_path(index).open("rb") as log:
                log.seek(since[index] if since else 0)
                text = log.read().decode(errors="replace")
            for match in TRANSITION.finditer(text):
                found.append(Transition(self.names[index], match[1], match[3], match[4]))
        return found

    def suspected(
        self, since: Sequence[int] | None = None, spared: Callable[[str], bool] = lambda _: False
    ) -> list[Transition]:
        """Suspicions and deaths logged about nodes other than those ``spared`` (the faulty ones)."""
        return [
            t for t in self.transitions(since) if t.current in ("suspect", "dead") and not spared(t.subject)
        ]

    # -- diagnosis ---------------------------------------------------------------------------

    def check_running(self) -> None:
        """Fail at once, with its log, if an agent that should run has exited."""
        for index, process in self.processes.items():
            code = process.poll()
            if code is not None and code not in (0, -signal.SIGKILL, -signal.SIGTERM):
                raise AssertionError(
                    f"{self.names[index]} exited with {code}:\n{log_tail(self.log_path(index))}"
                )

    def diagnosis(self) -> str:
        """Each agent's membership view and log tail."""
        parts = []
        try:
            views: dict[int, Any] = self.members()
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            views = {index: f"unreadable: {exc!r}" for index in range(self.agents)}
        for index, name in enumerate(self.names):
            parts.append(
                f"--- {name} sees {views.get(index, '(not running)')}; log:\n{log_tail(self.log_path(index))}"
            )
        return "\n".join(parts)

    def logs(self) -> str:
        """Every agent's log tail (no HTTP: also when the mesh is in pieces)."""
        return "\n".join(
            f"--- {name} log:\n{log_tail(self.log_path(i))}" for i, name in enumerate(self.names)
        )


@contextlib.contextmanager
def replicated(
    prefix: str, workdir: Path, agents: int, *, app: str = ECHO_APP, replicas: int = 2, **options: Any
) -> Iterator[tuple[ChaosMesh, set[str], int]]:
    """A formed mesh serving ``app`` on exactly ``replicas`` nodes; the mesh, those nodes, and an entry.

    The entry is the first agent without a replica, where a load enters as in the issue's runs.
    ``options`` go to ``ChaosMesh``. Everything is torn down when the block ends.
    """
    with Bridge(prefix, agents + 1) as net:
        mesh = ChaosMesh(net, workdir, agents, **options)
        mesh.form()
        spec = {"app": app, "min_replicas": replicas, "max_replicas": replicas}
        put = mesh.deploy(DEPLOYMENT, spec)
        assert put.status in (200, 201), f"PUT answered {put.status}: {put.body}"
        hosts = mesh.wait_replicas(DEPLOYMENT, replicas)
        entry = next(index for index, name in enumerate(mesh.names) if name not in hosts)
        yield mesh, hosts, entry

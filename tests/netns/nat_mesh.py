"""The harness of the NAT tests (issue 15): three real agents on tests/netns/nat.py's topology.

Cloud nodes c0 (the seed) and c1, and h0 on the home network behind a masquerading router, seeded
from c0. Nobody can dial h0; h0 can dial out, and the cloud nodes reach it through relays
(node/membership/relaying.py, docs/edge.md). With ``serve_echo`` h0 also hosts the mesh's only
replica of ``echo`` (meshnode.apps.echo, which answers ``{"echo": <body>}``).

Each agent serves HTTP on 127.0.0.1 inside its namespace, so whatever talks to it runs there too:

- a watcher (``WATCHER``, stdlib only) reads the agent's ``/v1/mesh`` every half second and writes
  what it saw to a file, so a test sees every sample of every view, also the ones between its own
  checks;
- a loader (``LOADER``, ``NatMesh.start_load``) posts echo requests one at a time and writes one
  line per request: when it was sent, its status, its ``X-Mesh-Route`` and whether it was echoed.

Both stop by themselves (bounded in time and count) and are killed with the agents when the
topology closes. The agents' logs ("member h0 (id): alive -> suspect") catch a suspicion shorter
than a sample. ``NatMesh.diagnosis`` gives the latest views, the tail of each agent's log and the
router's connection table, for failure messages.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.agents import wait_for
from tests.netns.chaos import TRANSITION
from tests.netns.chaos_client import log_tail
from tests.netns.nat import NatTopology, require_nat

__all__ = [
    "CLOUD",
    "DEAD_TIMEOUT_S",
    "ECHO",
    "FLUSH_RECOVERY_S",
    "FLUSH_STABLE_S",
    "HOLD_S",
    "HOME",
    "POLL_INTERVAL_S",
    "RELAY_LOSS_S",
    "NatMesh",
    "Sample",
    "hold",
    "nat_mesh",
    "never_left_alive",
    "relays_of_home",
    "wait_relayed",
]

HTTP_PORT = 8470
MESH_PORT = 8471
# Python start-up and imports of three agents at once on a busy 2-core machine.
READY_TIMEOUT_S = 60.0
JOIN_TIMEOUT_S = 30.0
# h0's echo worker starts after h0 joined: one more Python process importing the runtime.
SERVE_TIMEOUT_S = 60.0
# How long h0 must stay alive in every view, looked at every half second: 150 probe rounds of the
# local profile, every one of which could suspect it (bench/membership.py --parts edge watches the
# edge for false suspicions over many kills and rejoins).
HOLD_S = 30.0
DEAD_TIMEOUT_S = 20.0
RELAY_LOSS_S = 20.0
FLUSH_RECOVERY_S = 30.0
# After a flush, h0 must be alive in every view for this long without a break (also the shortest
# look: the failure detector of --profile local notices a lost connection within a few seconds).
FLUSH_STABLE_S = 15.0
POLL_INTERVAL_S = 0.5
CLOUD = ("c0", "c1")
HOME = "h0"
ECHO = "echo"
# Runs beside each agent: one JSON line per look at its view, for at most the given seconds.
WATCHER = """
import json, sys, time, urllib.request
url, interval, until = sys.argv[1], float(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while time.monotonic() < until:
    record = {"t": time.monotonic()}
    try:
        view = json.loads(urllib.request.urlopen(url, timeout=3).read())
        record["self"] = view["self"]
        record["members"] = {
            m["name"]: {key: m.get(key) for key in ("id", "status", "reach", "relays")}
            | {"replicas": {name: r.get("state") for name, r in (m.get("replicas") or {}).items()}}
            for m in view["members"]
        }
    except Exception as exc:
        record["error"] = repr(exc)
    print(json.dumps(record), flush=True)
    time.sleep(max(0.0, record["t"] + interval - time.monotonic()))
"""
WATCHER_LIFETIME_S = 900
# Runs inside a namespace: echo requests one at a time, one JSON line each, for at most the given
# seconds and count. "t" is when the request left (time.monotonic, the test's clock too), "done"
# when its answer or error came; "status" is the HTTP status or the exception's name.
LOADER = """
import json, sys, time, urllib.error, urllib.request
url, until, count = sys.argv[1], time.monotonic() + float(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    if time.monotonic() >= until:
        break
    text = str(i)
    body = json.dumps({"text": text}).encode()
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    record = {"t": time.monotonic(), "text": text, "route": None, "echoed": False}
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            record["status"] = response.status
            record["route"] = response.headers.get("X-Mesh-Route")
            record["echoed"] = json.loads(response.read()) == {"echo": {"text": text}}
    except urllib.error.HTTPError as exc:
        record["status"] = exc.code
        record["route"] = exc.headers.get("X-Mesh-Route")
        record["retry_after"] = exc.headers.get("Retry-After")
        record["body"] = exc.read()[:300].decode(errors="replace")
    except Exception as exc:
        record["status"] = type(exc).__name__
        record["error"] = repr(exc)[:300]
    record["done"] = time.monotonic()
    print(json.dumps(record), flush=True)
"""
# Far more than one-at-a-time requests can reach in any load these tests run; only a bound.
LOADER_MAX_REQUESTS = 20_000
LOADER_REQUEST_TIMEOUT_S = 30.0
LOAD_TAIL_LINES = 10


@dataclass(frozen=True)
class Sample:
    """One look at one agent's view: ``members`` by name, None when the agent did not answer."""

    t: float
    self_id: str | None
    members: dict[str, dict[str, Any]] | None

    def status(self, name: str) -> str | None:
        """``name``'s status in this view (None: not in it, or no view)."""
        return (self.members or {}).get(name, {}).get("status")


class NatMesh:
    """Agents c0, c1 (cloud) and h0 (home) on ``net``, each with a watcher of its view."""

    def __init__(
        self,
        net: NatTopology,
        workdir: Path,
        files: contextlib.ExitStack,
        *,
        serve_echo: bool = False,
        home_relay_count: int | None = None,
    ) -> None:
        """Start the agents (h0 with ``echo`` if ``serve_echo``, keeping ``home_relay_count`` relays)."""
        self.net = net
        self.workdir = workdir
        self.files = files
        self.hosts = dict(zip([*CLOUD, HOME], [*net.hosts_cloud[:2], net.hosts_home[0]], strict=True))
        self.mesh_id = f"nat-{uuid.uuid4().hex[:12]}"
        self.token = secrets.token_urlsafe(32)
        seed = f"{net.address_of(self.hosts['c0'])}:{MESH_PORT}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.loaders: dict[Path, subprocess.Popen[bytes]] = {}
        self.home_relay_count = home_relay_count
        for name, host in self.hosts.items():
            address = net.address_of(host)
            command = [sys.executable, "-m", "meshnode", "join", "--name", name, "--no-mdns"]
            command += ["--profile", "local", "--mesh-id", self.mesh_id, "--token", self.token]
            command += ["--data-dir", str(workdir / name), "--http", f"127.0.0.1:{HTTP_PORT}"]
            command += ["--mesh", f"{address}:{MESH_PORT}", "--data", f"{address}:0"]
            command += [] if name == "c0" else ["--seed", seed]
            if name == HOME and serve_echo:
                command += ["--deploy", f"{ECHO}=meshnode.apps.echo:Echo"]
            if name == HOME and home_relay_count is not None:
                command += ["--set", f"relay_count={home_relay_count}"]
            log = files.enter_context(self.log_path(name).open("wb"))
            self.processes[name] = net.exec_logged(host, command, log)
            watch = [sys.executable, "-c", WATCHER, f"http://127.0.0.1:{HTTP_PORT}/v1/mesh"]
            watch += [str(POLL_INTERVAL_S), str(WATCHER_LIFETIME_S)]
            net.exec_logged(host, watch, files.enter_context(self.views_path(name).open("wb")))
        self.ids: dict[str, str] = {}

    def log_path(self, name: str) -> Path:
        """Where agent ``name`` writes its output."""
        return self.workdir / f"{name}.log"

    def views_path(self, name: str) -> Path:
        """Where the watcher of ``name``'s view writes its samples (JSON lines)."""
        return self.workdir / f"{name}.views.jsonl"

    def name_of(self, node: str) -> str:
        """The agent name of node id ``node`` (the id itself when unknown)."""
        return next((name for name, known in self.ids.items() if known == node), node)

    def kill(self, name: str) -> None:
        """SIGKILL agent ``name`` and reap it: a crash."""
        self.processes[name].kill()
        self.processes[name].wait(timeout=30)

    def samples(self, name: str, since: float = 0.0) -> list[Sample]:
        """Every look at ``name``'s view taken at or after ``since`` (time.monotonic)."""
        found = []
        for line in self.views_path(name).read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # the line being written
                record = json.loads(line)
                if record["t"] >= since:
                    found.append(Sample(record["t"], record.get("self"), record.get("members")))
        return found

    def latest(self, name: str) -> Sample | None:
        """The newest look at ``name``'s view that got an answer."""
        answered = [sample for sample in self.samples(name) if sample.members is not None]
        return answered[-1] if answered else None

    def member(self, viewer: str, name: str) -> dict[str, Any]:
        """``name``'s entry in ``viewer``'s latest view ({} when absent)."""
        sample = self.latest(viewer)
        return (sample.members or {}).get(name, {}) if sample else {}

    def check_running(self, *names: str) -> None:
        """Fail, with the diagnosis, when one of ``names`` (default: every agent) has exited."""
        for name in names or self.processes:
            code = self.processes[name].poll()
            assert code is None, f"{name} exited with {code}\n{self.diagnosis()}"

    def suspicions_of(self, name: str, viewers: tuple[str, ...] = (*CLOUD, HOME)) -> int:
        """How many times the agents ``viewers`` logged ``name`` going to suspect or dead."""
        count = 0
        for viewer in viewers:
            text = self.log_path(viewer).read_text(errors="replace")
            count += sum(1 for m in TRANSITION.finditer(text) if m[1] == name and m[4] in ("suspect", "dead"))
        return count

    def wait_ready(self) -> None:
        """Wait until every agent answers, then note each node's id."""

        def answering() -> bool:
            self.check_running()
            return all(self.latest(name) is not None for name in self.processes)

        wait_for(answering, READY_TIMEOUT_S, interval=POLL_INTERVAL_S, message=self.diagnosis)
        for name in self.processes:
            sample = self.latest(name)
            assert sample is not None and sample.self_id is not None
            self.ids[name] = sample.self_id

    def wait_home_alive(self, viewers: tuple[str, ...] = (*CLOUD, HOME)) -> float:
        """Wait until h0 and both cloud nodes are alive in every view of ``viewers``; seconds taken."""

        def joined() -> bool:
            self.check_running(*viewers)
            return all(
                self.member(viewer, member).get("status") == "alive"
                for viewer in viewers
                for member in (*CLOUD, HOME)
            )

        return wait_for(
            joined,
            JOIN_TIMEOUT_S,
            interval=POLL_INTERVAL_S,
            message=lambda: f"h0, c0 and c1 alive in the views of {', '.join(viewers)}\n{self.diagnosis()}",
        )

    def wait_echo_ready(self, viewers: tuple[str, ...] = CLOUD) -> float:
        """Wait until h0's echo replica is ready in every view of ``viewers``; seconds taken."""

        def ready() -> bool:
            self.check_running()
            states = [self.member(viewer, HOME).get("replicas", {}).get(ECHO) for viewer in viewers]
            return states == ["ready"] * len(viewers)

        return wait_for(
            ready,
            SERVE_TIMEOUT_S,
            interval=POLL_INTERVAL_S,
            message=lambda: f"h0's {ECHO} ready in the views of {', '.join(viewers)}\n{self.diagnosis()}",
        )

    # -- load -------------------------------------------------------------------------------------

    def start_load(self, name: str, seconds: float) -> Path:
        """Post echo requests into agent ``name``, one at a time, for ``seconds``; their results' file."""
        path = self.workdir / f"{name}.load{len(self.loaders)}.jsonl"
        command = [sys.executable, "-c", LOADER, f"http://127.0.0.1:{HTTP_PORT}/v1/predict/{ECHO}"]
        command += [str(seconds), str(LOADER_MAX_REQUESTS)]
        log = self.files.enter_context(path.open("wb"))
        self.loaders[path] = self.net.exec_logged(self.hosts[name], command, log)
        return path

    def load_results(self, path: Path) -> list[dict[str, Any]]:
        """The requests of the load writing to ``path`` so far, one dict each, in order."""
        found = []
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # the line being written
                record = json.loads(line)
                if isinstance(record, dict) and "t" in record:
                    found.append(record)
        return found

    def wait_load(self, path: Path, seconds: float) -> list[dict[str, Any]]:
        """Wait for the load of ``seconds`` writing to ``path`` to end by itself; its results."""
        loader = self.loaders[path]
        try:
            loader.wait(timeout=seconds + LOADER_REQUEST_TIMEOUT_S + READY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            loader.kill()
            raise AssertionError(f"the load into {path.name} did not end\n{self.load_tail(path)}") from None
        assert loader.returncode == 0, f"the loader exited with {loader.returncode}\n{self.load_tail(path)}"
        return self.load_results(path)

    def load_tail(self, path: Path) -> str:
        """The last lines of a load's file (and whatever the loader printed), for failure messages."""
        return f"--- {path.name}, last lines:\n{log_tail(path, LOAD_TAIL_LINES)}"

    # -- diagnosis --------------------------------------------------------------------------------

    def diagnosis(self) -> str:
        """Each agent's latest view and log tail, and the router's tables: for failure messages."""
        parts = []
        for name in self.processes:
            sample = self.latest(name)
            parts.append(f"--- {name} ({self.ids.get(name, '?')[:8]}) view:")
            for member, entry in (sample.members or {}).items() if sample else ():
                relays = [self.name_of(relay) for relay in entry.get("relays") or []]
                parts.append(
                    f"  {member}: {entry['status']}, reach {entry.get('reach')}, relays {relays}, "
                    f"replicas {entry.get('replicas')}"
                )
            parts.append(f"--- {name} log:\n{log_tail(self.log_path(name))}")
        with contextlib.suppress(RuntimeError):
            parts.append(f"--- router connections:\n{self.net.connections()}")
        return "\n".join(parts)


@contextlib.contextmanager
def nat_mesh(
    workdir: Path, prefix: str, *, serve_echo: bool = False, home_relay_count: int | None = None
) -> Iterator[NatMesh]:
    """A fresh topology (namespaces named from ``prefix``), the agents on it answering HTTP."""
    require_nat()
    with NatTopology(prefix, cloud_hosts=2, home_hosts=1) as net, contextlib.ExitStack() as files:
        mesh = NatMesh(net, workdir, files, serve_echo=serve_echo, home_relay_count=home_relay_count)
        mesh.wait_ready()
        yield mesh


def hold(seconds: float, problem: Callable[[], str | None]) -> None:
    """Look every half second for ``seconds``; fail at once with the first ``problem`` reported."""
    deadline = time.monotonic() + seconds
    while True:
        found = problem()
        assert found is None, found
        now = time.monotonic()
        if now >= deadline:
            return
        time.sleep(min(POLL_INTERVAL_S, deadline - now))


def relays_of_home(mesh: NatMesh, viewer: str) -> list[str]:
    """The relays of h0 in ``viewer``'s latest view (ids)."""
    return list(mesh.member(viewer, HOME).get("relays") or [])


def wait_relayed(mesh: NatMesh, viewers: tuple[str, ...] = (*CLOUD, HOME)) -> None:
    """Wait until every view says h0 is relayed by cloud nodes and the cloud nodes are direct."""
    cloud_ids = {mesh.ids[name] for name in CLOUD}

    def reach_shown() -> bool:
        for viewer in viewers:
            home = mesh.member(viewer, HOME)
            relays = home.get("relays") or []
            if home.get("reach") != "relayed" or not relays or not set(relays) <= cloud_ids:
                return False
            if any(mesh.member(viewer, name).get("reach") != "direct" for name in CLOUD):
                return False
        return True

    wait_for(
        reach_shown,
        JOIN_TIMEOUT_S,
        interval=POLL_INTERVAL_S,
        message=lambda: f"h0 relayed by cloud nodes and c0, c1 direct in every view\n{mesh.diagnosis()}",
    )


def never_left_alive(mesh: NatMesh, since: float, pairs: list[tuple[str, str]]) -> str | None:
    """A problem when some ``(viewer, member)`` sample since ``since`` shows the member not alive."""
    for viewer, member in pairs:
        for sample in mesh.samples(viewer, since):
            if sample.members is not None and sample.status(member) != "alive":
                late = sample.t - since
                return f"{viewer} saw {member} {sample.status(member)} {late:.1f} s in\n{mesh.diagnosis()}"
    return None

"""Issue 15, membership: a node behind NAT joins a mesh through relays and stays alive in it.

Real agents on the NAT topology of tests/netns/nat.py: cloud nodes c0 (the seed) and c1, and h0 on
the home network behind a masquerading router, seeded from c0. Nobody can dial h0; h0 can dial out.
Without relays the cloud nodes cannot probe h0 and suspect it; with them (node/membership/relaying.py,
docs/edge.md) the cloud nodes reach it over connections it opened, and GET /v1/mesh says so with
``"reach": "relayed"`` and the ``"relays"`` (cloud node ids) that carry its traffic.

Each agent serves HTTP inside its namespace; a watcher next to it (stdlib only) reads its
``/v1/mesh`` every half second and writes what it saw to a file, so a test sees every sample of
every view, also the ones between its own checks. The agents' logs ("member h0 (id): alive ->
suspect") catch a suspicion shorter than a sample. Failure messages carry the latest views, the tail
of each agent's log, and the router's connection table.
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

import pytest

from tests.integration.agents import wait_for
from tests.netns.chaos import TRANSITION
from tests.netns.chaos_client import log_tail
from tests.netns.nat import NatTopology, require_nat

pytestmark = pytest.mark.netns

HTTP_PORT = 8470
MESH_PORT = 8471
# Python start-up and imports of three agents at once on a busy 2-core machine.
READY_TIMEOUT_S = 60.0
JOIN_TIMEOUT_S = 30.0
HOLD_S = 60.0
DEAD_TIMEOUT_S = 20.0
RELAY_LOSS_S = 20.0
FLUSH_RECOVERY_S = 30.0
# After a flush, h0 must be alive in every view for this long without a break (also the shortest
# look: the failure detector of --profile local notices a lost connection within a few seconds).
FLUSH_STABLE_S = 15.0
POLL_INTERVAL_S = 0.5
CLOUD = ("c0", "c1")
HOME = "h0"
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
            for m in view["members"]
        }
    except Exception as exc:
        record["error"] = repr(exc)
    print(json.dumps(record), flush=True)
    time.sleep(max(0.0, record["t"] + interval - time.monotonic()))
"""
WATCHER_LIFETIME_S = 900


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

    def __init__(self, net: NatTopology, workdir: Path, files: contextlib.ExitStack) -> None:
        self.net = net
        self.workdir = workdir
        self.hosts = dict(zip([*CLOUD, HOME], [*net.hosts_cloud[:2], net.hosts_home[0]], strict=True))
        self.mesh_id = f"nat-{uuid.uuid4().hex[:12]}"
        self.token = secrets.token_urlsafe(32)
        seed = f"{net.address_of(self.hosts['c0'])}:{MESH_PORT}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        for name, host in self.hosts.items():
            address = net.address_of(host)
            command = [sys.executable, "-m", "meshnode", "join", "--name", name, "--no-mdns"]
            command += ["--profile", "local", "--mesh-id", self.mesh_id, "--token", self.token]
            command += ["--data-dir", str(workdir / name), "--http", f"127.0.0.1:{HTTP_PORT}"]
            command += ["--mesh", f"{address}:{MESH_PORT}", "--data", f"{address}:0"]
            command += [] if name == "c0" else ["--seed", seed]
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

    def diagnosis(self) -> str:
        """Each agent's latest view and log tail, and the router's tables: for failure messages."""
        names = {node: name for name, node in self.ids.items()}
        parts = []
        for name in self.processes:
            sample = self.latest(name)
            parts.append(f"--- {name} ({self.ids.get(name, '?')[:8]}) view:")
            for member, entry in (sample.members or {}).items() if sample else ():
                relays = [names.get(relay, relay) for relay in entry.get("relays") or []]
                parts.append(f"  {member}: {entry['status']}, reach {entry.get('reach')}, relays {relays}")
            parts.append(f"--- {name} log:\n{log_tail(self.log_path(name))}")
        with contextlib.suppress(RuntimeError):
            parts.append(f"--- router connections:\n{self.net.connections()}")
        return "\n".join(parts)


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


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[NatMesh]:
    require_nat()
    with NatTopology("mnnatm", cloud_hosts=2, home_hosts=1) as net, contextlib.ExitStack() as files:
        nat_mesh = NatMesh(net, tmp_path, files)
        nat_mesh.wait_ready()
        yield nat_mesh


@pytest.mark.timeout(400)
def test_home_node_joins_through_relays_stays_alive_and_dies_when_killed(mesh: NatMesh) -> None:
    took = mesh.wait_home_alive()
    print(f"h0 alive in every view {took:.1f} s after every agent answered")
    wait_relayed(mesh)
    by_id = {node: name for name, node in mesh.ids.items()}
    print(f"h0's relays as c0 sees them: {[by_id.get(r, r) for r in relays_of_home(mesh, 'c0')]}")

    began, suspicions = time.monotonic(), mesh.suspicions_of(HOME)
    pairs = [(viewer, HOME) for viewer in (*CLOUD, HOME)] + [(HOME, name) for name in CLOUD]

    def steady() -> str | None:
        mesh.check_running()
        if (problem := never_left_alive(mesh, began, pairs)) is not None:
            return problem
        if mesh.suspicions_of(HOME) != suspicions:
            return f"an agent logged a suspicion of h0 between two looks\n{mesh.diagnosis()}"
        return None

    hold(HOLD_S, steady)
    # Each view was really looked at through the hold (about every half second).
    for viewer in (*CLOUD, HOME):
        looked = [s for s in mesh.samples(viewer, began) if s.members is not None]
        assert len(looked) >= HOLD_S / POLL_INTERVAL_S / 4, f"{viewer}: {len(looked)} answers"
    wait_relayed(mesh)

    mesh.kill(HOME)
    killed = time.monotonic()

    def declared_dead() -> bool:
        mesh.check_running(*CLOUD)
        return all(any(s.status(HOME) == "dead" for s in mesh.samples(viewer, killed)) for viewer in CLOUD)

    took = wait_for(
        declared_dead,
        DEAD_TIMEOUT_S,
        interval=POLL_INTERVAL_S,
        message=lambda: f"every cloud view says h0 dead after its SIGKILL\n{mesh.diagnosis()}",
    )
    print(f"every cloud view said h0 dead {took:.1f} s after its SIGKILL")


@pytest.mark.timeout(300)
def test_home_node_stays_alive_when_one_of_its_relays_is_killed(mesh: NatMesh) -> None:
    mesh.wait_home_alive()
    wait_relayed(mesh)
    relays = relays_of_home(mesh, "c0")
    by_id = {node: name for name, node in mesh.ids.items()}
    victim = by_id[relays[0]]
    survivor = next(name for name in CLOUD if name != victim)
    print(f"h0's relays as c0 sees them: {[by_id.get(r, r) for r in relays]}; killing {victim}")
    suspicions = mesh.suspicions_of(HOME, (survivor,))

    mesh.kill(victim)
    killed = time.monotonic()
    moved: list[float] = []

    def home_kept_alive() -> str | None:
        mesh.check_running(survivor, HOME)
        if (problem := never_left_alive(mesh, killed, [(survivor, HOME)])) is not None:
            return problem
        if mesh.suspicions_of(HOME, (survivor,)) != suspicions:
            return f"{survivor} logged a suspicion of h0 after {victim} died\n{mesh.diagnosis()}"
        current = relays_of_home(mesh, survivor)
        if not moved and current and mesh.ids[victim] not in current:
            moved.append(time.monotonic() - killed)
        return None

    hold(RELAY_LOSS_S, home_kept_alive)
    assert moved, f"h0's relays in {survivor}'s view still name {victim} (or none)\n{mesh.diagnosis()}"
    print(f"h0's relays in {survivor}'s view dropped {victim} {moved[0]:.1f} s after its SIGKILL")


@pytest.mark.timeout(300)
def test_home_node_recovers_from_a_nat_flush_by_itself(mesh: NatMesh) -> None:
    mesh.wait_home_alive()
    wait_relayed(mesh)
    tracked = mesh.net.connections()
    assert "ESTABLISHED" in tracked, f"nothing for the flush to forget:\n{tracked}"

    mesh.net.flush_nat()
    flushed = time.monotonic()
    pairs = [(viewer, HOME) for viewer in (*CLOUD, HOME)] + [(HOME, name) for name in CLOUD]
    last_problem = [flushed]

    def alive_again_and_steady() -> bool:
        mesh.check_running()
        for viewer, member in pairs:
            for sample in mesh.samples(viewer, last_problem[0]):
                if sample.members is not None and sample.status(member) != "alive":
                    last_problem[0] = max(last_problem[0], sample.t)
        return time.monotonic() - last_problem[0] >= FLUSH_STABLE_S

    wait_for(
        alive_again_and_steady,
        FLUSH_RECOVERY_S + FLUSH_STABLE_S,
        interval=POLL_INTERVAL_S,
        message=lambda: f"h0 alive in every view for {FLUSH_STABLE_S:g} s on end\n{mesh.diagnosis()}",
    )
    wavered = last_problem[0] - flushed
    print(
        "h0 always alive after the flush"
        if not wavered
        else f"last not alive {wavered:.1f} s after the flush"
    )
    print(f"{mesh.suspicions_of(HOME)} suspicions of h0 logged in all")
    wait_relayed(mesh)

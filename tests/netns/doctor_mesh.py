"""The harness of ``test_netns_doctor.py``: real agents in namespaces, faults, and ``meshnode doctor`` runs.

``DoctorMesh(net, workdir)`` runs agents on hosts of a ``Bridge``: the mesh ``n0``, ``n1``, ``n2`` on
the first three (one token, one fresh mesh id, mDNS on each host's address, every other node a seed,
``--profile local``, fixed ports), ``n2`` under libfaketime so its wall clock can be stepped while it
runs; the other hosts take the agents a case adds (another token, another mesh id, a copied data
dir, an address nobody can dial). The doctor runs inside a host's namespace with the mesh's token
and an invoke key (made on ``n0``, as an operator's), and its ``--json`` findings come back as a
``Diagnosis``. Faults are nftables tables of the host (``nft``/``unnft``), ``ip`` commands, and the
clock file; every one is undone by the case that made it, and the namespaces go with the bridge.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.agents import wait_for
from tests.netns.chaos_clock import faketime_env
from tests.netns.netns import Bridge

__all__ = ["DATA_PORT", "HTTP_PORT", "MESH_PORT", "Diagnosis", "DoctorMesh"]

HTTP_PORT = 8470
MESH_PORT = 8471
DATA_PORT = 8472
# Agents starting and forming on two busy cores; a step of libfaketime's clock file within a second.
PHASE_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.3
# A doctor run takes a few seconds (two of them reading counters apart, dials of at most two).
DOCTOR_TIMEOUT_S = 60.0
LOG_TAIL_LINES = 20
TABLE = "meshnode_doctor_test"
# Runs inside a namespace (stdlib only: fast): GET a path of the agent there, with a key, as JSON.
ASK = """
import json, sys, urllib.request
request = urllib.request.Request(sys.argv[1], method=sys.argv[2], data=sys.argv[3].encode() or None)
request.add_header("Content-Type", "application/json")
if sys.argv[4]:
    request.add_header("Authorization", "Bearer " + sys.argv[4])
print(urllib.request.urlopen(request, timeout=5).read().decode())
"""


@dataclass(frozen=True, repr=False)
class Diagnosis:
    """One doctor run: its exit status and findings (``{"level", "check", "detail", "tried", "fix"}``)."""

    code: int
    findings: list[dict[str, str]]
    output: str

    def find(self, check: str, *words: str, level: str | None = None) -> dict[str, str] | None:
        """The first finding of `check` (at `level`) whose detail and fix say every one of `words`."""
        for finding in self.findings:
            text = f"{finding['detail']} {finding['fix']}"
            wanted = finding["check"] == check and level in (None, finding["level"])
            if wanted and all(word in text for word in words):
                return finding
        return None

    def levels(self, check: str) -> list[str]:
        """The levels of every finding of `check`, in order."""
        return [finding["level"] for finding in self.findings if finding["check"] == check]

    def __repr__(self) -> str:  # what an assertion's message shows: the findings, one a line
        lines = [f"exit {self.code}"]
        lines += [f"{f['level']:<4}  {f['check']:<8}  {f['detail']} | do: {f['fix']}" for f in self.findings]
        return "\n".join(lines) if self.findings else f"exit {self.code}\n{self.output}"


class DoctorMesh:
    """Agents on the hosts of `net`; ``form()`` starts the mesh n0, n1, n2 on the first three."""

    def __init__(self, net: Bridge, workdir: Path) -> None:
        self.net = net
        self.workdir = workdir
        self.mesh_id = f"doctor-{uuid.uuid4().hex[:12]}"
        self.token = secrets.token_urlsafe(32)
        self.key = ""
        self.clock = workdir / "n2.faketime"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.hosts: dict[str, str] = {}

    # -- agents ------------------------------------------------------------------------------

    def start(
        self,
        name: str,
        host: int,
        *,
        token: str | None = None,
        mesh_id: str | None = None,
        seeds: Sequence[int] = (),
        mdns: bool = True,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
        data_dir: Path | None = None,
    ) -> None:
        """Start agent `name` on host number `host` (data dir ``workdir/name``), seeded with `seeds`."""
        namespace, address = self.net.hosts[host], self.net.addresses[host]
        command = [sys.executable, "-m", "meshnode", "join", "--name", name, "--profile", "local"]
        command += ["--http", f"0.0.0.0:{HTTP_PORT}", "--mesh", f"{address}:{MESH_PORT}"]
        command += ["--data", f"{address}:{DATA_PORT}", "--mesh-id", mesh_id or self.mesh_id]
        command += ["--data-dir", str(data_dir or self.workdir / name)]
        command += ["--mdns", "--interface", address] if mdns else ["--no-mdns"]
        for seed in seeds:
            command += ["--seed", f"{self.net.addresses[seed]}:{MESH_PORT}"]
        command += list(extra)
        environment = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "MESHNODE_TOKEN": token or self.token,
            **(env or {}),
        }
        environment["MESHNODE_HOME"] = str(self.workdir / f"home-{name}")
        with (self.workdir / f"{name}.log").open("ab") as log:
            self.processes[name] = self.net.exec(
                namespace,
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
            )
        self.hosts[name] = namespace

    def stop(self, name: str) -> None:
        """Kill agent `name` and wait for it."""
        process = self.processes.pop(name)
        process.kill()
        process.wait(timeout=30)

    def form(self) -> None:
        """Start n0, n1, n2 (n2 on a steppable clock), wait until each sees all three, make a key."""
        for index in range(3):
            env = faketime_env(self.clock) if index == 2 else None
            self.start(f"n{index}", index, seeds=[other for other in range(3) if other != index], env=env)
        names = {"n0", "n1", "n2"}
        # Formed: each sees all three alive, and has learned from its dial check that peers dial it.
        wait_for(
            lambda: all(self.alive_seen(name) == names and self.reach(name) == "direct" for name in names),
            PHASE_TIMEOUT_S,
            POLL_INTERVAL_S,
            self.diagnosis,
        )
        made = json.loads(self.ask("n0", "/v1/keys", "POST", {"scope": "invoke", "name": "doctor"}))
        self.key = made["key"]
        # Gossiped: every node takes the key once it has it.
        wait_for(
            lambda: all(self.takes_key(name) for name in names),
            PHASE_TIMEOUT_S,
            POLL_INTERVAL_S,
            self.diagnosis,
        )

    def view(self, name: str) -> dict[str, Any] | None:
        """Agent `name`'s ``/v1/mesh``, asked over its namespace's loopback; None while it does not answer."""
        self.check_running()
        try:
            body: dict[str, Any] = json.loads(self.ask(name, "/v1/mesh"))
        except AssertionError:
            return None
        return body

    def alive_seen(self, name: str) -> set[str]:
        """The names of members `name` holds alive."""
        view = self.view(name)
        return {m["name"] for m in view["members"] if m["status"] == "alive"} if view else set()

    def reach(self, name: str) -> str:
        """How agent `name` learned peers reach it ("" while not known, "direct", "relayed")."""
        view = self.view(name)
        me = next((m for m in view["members"] if m["id"] == view["self"]), None) if view else None
        return str(me["reach"]) if me is not None else ""

    def takes_key(self, name: str) -> bool:
        """Whether agent `name` takes the invoke key from another machine (n0's namespace)."""
        url = f"http://{self.net.addresses[int(name[1:])]}:{HTTP_PORT}/v1/mesh"
        return (
            self._run(self.hosts["n0"], [sys.executable, "-c", ASK, url, "GET", "", self.key]).returncode == 0
        )

    def ask(self, name: str, path: str, method: str = "GET", body: object = None) -> str:
        """One HTTP call to agent `name` over its namespace's loopback (no key needed there)."""
        data = "" if body is None else json.dumps(body)
        url = f"http://127.0.0.1:{HTTP_PORT}{path}"
        result = self._run(self.hosts[name], [sys.executable, "-c", ASK, url, method, data, ""])
        assert result.returncode == 0, f"{method} {path} on {name}: {result.stderr[-500:]}"
        return result.stdout

    def check_running(self) -> None:
        """Fail with the log of any agent that exited."""
        for name, process in self.processes.items():
            code = process.poll()
            assert code is None, f"{name} exited with {code}:\n{self.log_tail(name)}"

    # -- the doctor --------------------------------------------------------------------------

    def doctor(self, name: str, *args: str, token: str | None = None) -> Diagnosis:
        """``meshnode doctor --json`` inside agent `name`'s namespace, examining that agent."""
        self.check_running()
        command = [sys.executable, "-m", "meshnode", "doctor", "--node", f"http://127.0.0.1:{HTTP_PORT}"]
        command += ["--api-key", self.key, "--json", *args]
        env = {
            **os.environ,
            "MESHNODE_TOKEN": token or self.token,
            "MESHNODE_HOME": str(self.workdir / "home-doctor"),
        }
        result = self._run(self.hosts[name], command, env=env, timeout=DOCTOR_TIMEOUT_S)
        try:
            found = json.loads(result.stdout)
        except json.JSONDecodeError:
            found = []
        diagnosis = Diagnosis(result.returncode, found, result.stdout + result.stderr)
        print(f"--- meshnode doctor {' '.join(args)} on {name}:\n{diagnosis}")  # shown with -s or on failure
        return diagnosis

    # -- faults ------------------------------------------------------------------------------

    def nft(self, name: str, chains: str) -> None:
        """Install `chains` (nft chain blocks) as this harness's table in agent `name`'s namespace."""
        script = f"table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n{chains}\n}}\n"
        result = self._run(self.hosts[name], ["nft", "-f", "-"], stdin=script)
        assert result.returncode == 0, f"nft failed: {result.stderr}\n{script}"

    def unnft(self, name: str) -> None:
        """Delete this harness's table in agent `name`'s namespace (none is fine)."""
        script = f"table inet {TABLE}\ndelete table inet {TABLE}\n"
        result = self._run(self.hosts[name], ["nft", "-f", "-"], stdin=script)
        assert result.returncode == 0, result.stderr

    def ip(self, name: str, *args: str) -> None:
        """One ``ip`` command in agent `name`'s namespace."""
        result = subprocess.run(
            ["ip", "-n", self.hosts[name], *args], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, f"ip {' '.join(args)}: {result.stderr}"

    # -- diagnostics ---------------------------------------------------------------------------

    def log_tail(self, name: str) -> str:
        lines = (self.workdir / f"{name}.log").read_text(errors="replace").rstrip().splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:]) or "(empty log)"

    def diagnosis(self) -> str:
        return "\n".join(f"--- {name}:\n{self.log_tail(name)}" for name in self.processes)

    def _run(
        self,
        namespace: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
        timeout: float = 20.0,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", namespace, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )

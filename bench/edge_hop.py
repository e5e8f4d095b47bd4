"""Hop latency to a node behind NAT: served locally, one direct hop, and through a relay, side by side.

Usage:  python bench/edge_hop.py [--rounds 5] [--requests 400] [--warmup 100]
                                 [--agents-cpu 0] [--load-cpu 1] [--code COMMIT]

The issue-15 part of the forwarding benchmark, in a module of its own (bench/forwarding.py is near
the 400-line limit). Four agents on 127.0.0.1 (``--profile local``, security on: one mesh token):
d0 (the seed), d1 and d2 are dialable; ``e``, the edge, advertises a mesh and a data address where
nobody listens, as a node behind NAT does (docs/edge.md), so every connection to it is one it opened,
and it is reached through two of the three direct nodes. Each node pins a replica of
``apps/echo.py`` under a name of its own (``echo_d0`` on d0, ..., ``echo_e`` on e), so the
deployment asked for forces the path. Once every agent sees e relayed, A is the direct node that is
not one of e's relays and R one that is, and four paths are measured in one run:

- local: ``echo_A`` entering A (``X-Mesh-Route: A``), no hop;
- direct hop: ``echo_R`` entering A (``A,R``), one hop to a dialable node;
- relayed: ``echo_e`` entering A (``A,R',e``, R' one of e's relays), the relay an extra hop;
- relayed, entry a relay: ``echo_e`` entering R (``R,e``), one hop down the edge's own link.

Requests go one at a time, alternating the paths request by request (the order rotating each
cycle), each path on a keepalive connection of its own. The agents and their workers are pinned to
``--agents-cpu`` with ``taskset``; this script, the load generator, pins itself to ``--load-cpu``
(``os.sched_setaffinity``, what ``taskset`` does). Each round gives each path's p50 and p99; absolute
figures are medians over rounds, differences and ratios are taken within a round, then their
median is quoted with the range over rounds. A response that is not a 200 or crossed another route
counts as an error and is left out of the latencies.

Target: the relay hop adds at most one hop's cost: (relayed - direct hop) / (direct hop - local)
at most 1.0 at p50. ``--code COMMIT`` runs the agents on that commit's code (bench/baseline.py's
``at_commit``) rather than the working tree. It measures and prints; it never asserts (docs/benchmarks.md keeps the results).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from baseline import at_commit, commit_of, security_on
from procs import Started, free_port, start, stop, wait

APP = "meshnode.apps.echo:Echo"
NAMES = ("d0", "d1", "d2", "e")
PATHS = ("local", "direct hop", "relayed", "relayed, entry a relay")
BODY = json.dumps({"text": "hello"}).encode()


@dataclass
class MeasuredPath:
    """One path: where its requests enter, what they ask for, the route they must cross."""

    name: str
    port: int
    deployment: str
    entry: str
    route: tuple[str, ...] | None  # None: any route of three nodes from the entry to e
    connection: http.client.HTTPConnection = field(init=False)
    latencies_ms: list[float] = field(default_factory=list)  # of this round's successes
    errors: list[str] = field(default_factory=list)
    routes: set[str] = field(default_factory=set)  # every route a success crossed

    def __post_init__(self) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def crossed(self, route: str) -> bool:
        hops = tuple(route.split(","))
        if self.route is not None:
            return hops == self.route
        return len(hops) == 3 and hops[0] == self.entry and hops[-1] == "e"

    def send(self) -> bool:
        """One request: its latency when it succeeds, or the reason it failed."""
        started = time.perf_counter()
        try:
            self.connection.request(
                "POST", f"/v1/predict/{self.deployment}", BODY, {"Content-Type": "application/json"}
            )
            response = self.connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.connection.close()  # the next request reconnects
            self.errors.append(type(exc).__name__)
            return False
        elapsed_ms = (time.perf_counter() - started) * 1000
        route = response.getheader("X-Mesh-Route", "")
        if response.status != 200 or not self.crossed(route):
            self.errors.append(f"{response.status} via {route}")
            return False
        self.latencies_ms.append(elapsed_ms)
        self.routes.add(route)
        return True


def members(port: int) -> list[dict[str, Any]]:
    try:
        return list(httpx.get(f"http://127.0.0.1:{port}/v1/mesh", timeout=2.0).json()["members"])
    except (httpx.HTTPError, ValueError, KeyError):
        return []


def settled(ports: dict[str, int]) -> bool:
    """Every agent sees all four alive, e relayed through two nodes, and every replica ready."""
    for port in ports.values():
        view = {m["name"]: m for m in members(port)}
        if set(view) != set(NAMES) or any(m["status"] != "alive" for m in view.values()):
            return False
        if view["e"]["reach"] != "relayed" or len(view["e"]["relays"]) != 2:
            return False
        if any(view[n]["replicas"].get(f"echo_{n}", {}).get("state") != "ready" for n in NAMES):
            return False
    return True


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def span(values: list[float], digits: int = 3) -> str:
    """Median (min..max)."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=400, help="requests per path per round")
    parser.add_argument("--warmup", type=int, default=100, help="requests per path before round 1")
    parser.add_argument("--agents-cpu", type=int, default=0, help="CPU for the agents and their workers")
    parser.add_argument("--load-cpu", type=int, default=1, help="CPU for this script's requests")
    parser.add_argument("--code", help="a commit whose code the agents run (default: this working tree)")
    args = parser.parse_args()
    if shutil.which("taskset") is None:
        sys.exit("taskset not found: apt-get install -y util-linux")

    root = Path(tempfile.mkdtemp(prefix="meshnode-bench-edge-hop-"))
    token = secrets.token_urlsafe(32)
    variant = at_commit(root, args.code, "on", ("--token", token)) if args.code else security_on(token)
    ports = {name: free_port() for name in NAMES}  # HTTP
    mesh = {name: free_port() for name in NAMES}
    unreachable = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    started: list[Started] = []
    load_before = os.getloadavg()
    try:
        for name in NAMES:
            command = [
                sys.executable, "-m", "meshnode", "join", "--name", name, "--profile", "local", "--no-mdns",
                "--http", f"127.0.0.1:{ports[name]}", "--mesh", f"127.0.0.1:{mesh[name]}", "--data", "127.0.0.1:0",
                "--data-dir", str(root / name),
                "--mesh-id", f"bench-edge-hop-{os.getpid()}", "--log-level", "warning",
                "--deploy", f"echo_{name}={APP}", *variant.join_args,
            ]  # fmt: skip
            if name != "d0":
                command += ["--seed", f"127.0.0.1:{mesh['d0']}"]
            if name == "e":
                command += ["--advertise-mesh", unreachable[0], "--advertise-data", unreachable[1]]
            started.append(start(name, command, args.agents_cpu, root, variant.env))
        wait(lambda: settled(ports), 180, "the mesh to form with e relayed and every replica ready", started)
        ids = {m["id"]: m["name"] for m in members(ports["d0"])}
        relays = sorted(ids[r] for m in members(ports["d0"]) if m["name"] == "e" for r in m["relays"])
        a = next(n for n in NAMES[:3] if n not in relays)
        r = relays[0]
        paths = [
            MeasuredPath("local", ports[a], f"echo_{a}", a, (a,)),
            MeasuredPath("direct hop", ports[a], f"echo_{r}", a, (a, r)),
            MeasuredPath("relayed", ports[a], "echo_e", a, None),
            MeasuredPath("relayed, entry a relay", ports[r], "echo_e", r, (r, "e")),
        ]
        os.sched_setaffinity(0, {args.load_cpu})
        for path in paths:
            wait(path.send, 60, f"a 200 on the {path.name} path", started)
        for _ in range(args.warmup):
            for path in paths:
                path.send()

        print(f"# meshnode edge hop benchmark: local, direct hop and relayed, {os.cpu_count()} cores\n")
        print(f"Command: python {' '.join(sys.argv)}\n")
        code = (
            f"{commit_of(args.code)}"
            if args.code
            else f"HEAD {commit_of('HEAD')} (working tree as checked out)"
        )
        print(f"Code under test: {code}; {variant.describe()}.")
        print(
            f"\nEntry A = {a} (not a relay of e), e's relays {', '.join(relays)}, R = {r}. Agents and workers on "
            f"CPU {args.agents_cpu}, requests on CPU {args.load_cpu}. {args.rounds} rounds x {args.requests} "
            f"requests per path, one at a time, paths alternating. Load average before: "
            f"{' '.join(f'{x:.2f}' for x in load_before)}.",
            flush=True,
        )
        for path in paths:
            path.errors, path.routes = [], set()  # count the measured requests only
        rounds: list[dict[str, tuple[float, float]]] = []
        for k in range(args.rounds):
            for path in paths:
                path.latencies_ms = []
            for i in range(args.requests):
                for path in paths[i % 4 :] + paths[: i % 4]:
                    path.send()
            rounds.append(
                {p.name: (percentile(p.latencies_ms, 0.5), percentile(p.latencies_ms, 0.99)) for p in paths}
            )
            print(f"round {k + 1} of {args.rounds} done", file=sys.stderr, flush=True)
        report(rounds, paths, args)
        print(f"\nLoad average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    finally:
        stop(started)
        shutil.rmtree(root, ignore_errors=True)


def report(
    rounds: list[dict[str, tuple[float, float]]], paths: list[MeasuredPath], args: argparse.Namespace
) -> None:
    print(f"\n## Latency per path, one request at a time (median of {args.rounds} rounds)\n")
    print("| path | routes crossed | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|")
    for path in paths:
        p50 = statistics.median(r[path.name][0] for r in rounds)
        p99 = statistics.median(r[path.name][1] for r in rounds)
        routes = " ".join(sorted(path.routes))
        print(f"| {path.name} | {routes} | {p50:.3f} | {p99:.2f} | {len(path.errors)} |")
    for path in paths:
        if path.errors:
            print(f"\nErrors on {path.name}: {', '.join(sorted(set(path.errors))[:5])}")

    def each(q: int, f: Any) -> list[float]:
        return [f(*(r[n][q] for n in PATHS)) for r in rounds]

    print("\n## The hops against each other (per round, median and range over rounds)\n")
    print("| figure | p50 | p99 | target |")
    print("|---|---|---|---|")
    figures: list[tuple[str, Any, str]] = [
        ("one hop: direct hop - local, ms", lambda lo, d, rl, rr: d - lo, ""),
        ("the relay's extra: relayed - direct hop, ms", lambda lo, d, rl, rr: rl - d, ""),
        (
            "(relayed - direct hop) / (direct hop - local)",
            lambda lo, d, rl, rr: (rl - d) / (d - lo),
            "<= 1.0 (p50)",
        ),
        ("relayed - local, ms", lambda lo, d, rl, rr: rl - lo, ""),
        ("entry a relay: (relayed, entry a relay) - local, ms", lambda lo, d, rl, rr: rr - lo, ""),
        ("(relayed, entry a relay) - direct hop, ms", lambda lo, d, rl, rr: rr - d, ""),
        (
            "relayed - (relayed, entry a relay): the entry apart from the relay, ms",
            lambda lo, d, rl, rr: rl - rr,
            "",
        ),
    ]
    for label, f, target in figures:
        digits = 3 if label.endswith("ms") else 2
        print(f"| {label} | {span(each(0, f), digits)} | {span(each(1, f), digits)} | {target} |")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # everything started was already stopped by main's finally

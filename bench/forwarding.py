"""Forwarding benchmark: direct, an nginx hop and a meshnode hop, with security on and off, side by side.

Usage:  python bench/forwarding.py [--rounds 5] [--duration-s 3] [--concurrency 1 32]
                                   [--agents-cpu 0] [--load-cpu 1] [--entry-cpu 1]
                                   [--baseline-commit 9588113]

Two meshes of two agents each serve one replica of ``apps/echo.py``: one runs this checkout with its
security on (a mesh token: sealed gossip, the data plane sealed, the HTTP gate), the other the code
just before security existed (bench/baseline.py says how, and why there is no "off" switch). Five
paths to a replica, measured in one run:

- direct on / direct off: ``POST`` to n1, the agent that hosts the replica (``X-Mesh-Route: n1``);
- forwarded on / forwarded off: ``POST`` to n0, an agent with no replica, which forwards over the
  ZeroMQ data plane to n1 (``X-Mesh-Route: n0,n1``; the request path of docs/architecture.md);
- nginx: ``POST`` to an nginx ``proxy_pass`` in front of n1 of the "on" mesh (keepalive upstream),
  the reference cost of one well-made hop.

The agents (``--profile local``), n1's worker processes and nginx run on ``--agents-cpu``; the load
generator, ``wrk`` (one thread, keepalive connections, a Lua script for the POST), runs on
``--load-cpu``, both pinned with ``taskset``. Every round measures each path at each concurrency for
``--duration-s``, rotating the order of the paths from round to round so that noise hits them alike.
Absolute figures are medians over rounds; differences and ratios are taken within a round, then their
median is quoted. CPU time per request of the processes that serve a path comes from the processes'
own counters; "others" is the share of each core that processes outside this benchmark took meanwhile.
"Requests/s per core" is 1 / (CPU time per request on the agents' core): what that core would serve
with nothing else on it, the throughput figure that a shared, noisy machine moves least.

``--entry-cpu`` puts the entries of the hops (n0 of both meshes, and nginx) on a core of their own, as
the machines of a real mesh are: the hop then crosses cores, and what forwarding costs the serving
core is apart from what it costs the entry's. On a 2-core machine that core is wrk's (``--entry-cpu
1``), which the entry then shares with the load generator: a conservative layout for the hops.

Targets: one forwarding hop adds at most 0.3 ms p50 at concurrency 1; forwarded throughput at least
60 % of direct on the same cores; security adds at most 0.05 ms to the hop's p50. It measures and
prints; it never asserts (docs/benchmarks.md says how the benchmarks measure, and keeps the latest
results). Needs git, and the Debian packages nginx and wrk. The hop through a relay to a node
behind NAT (issue 15) is measured by bench/edge_hop.py.
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
from baseline import BEFORE_SECURITY, Variant, commit_of, security_off, security_on
from nginx import start_nginx
from procs import Started, free_port, start, stop, wait
from wrk import Run, Sample, measure, run_wrk, wrk_script

VARIANTS = ("on", "off")
PATHS = ("direct on", "forwarded on", "nginx", "direct off", "forwarded off")
ROUTES = {"direct": "n1", "nginx": "n1", "forwarded": "n0,n1"}
DEPLOYMENT = "echo"
APP = "meshnode.apps.echo:Echo"


def agent_args(name: str, variant: str, ports: dict[str, int], root: Path, *extra: str) -> list[str]:
    """`meshnode join` for agent `name` (n0 or n1) of the mesh of `variant`."""
    http, mesh = ports[f"{name} {variant} http"], ports[f"{name} {variant} mesh"]
    return [
        sys.executable, "-m", "meshnode", "join", "--name", name, "--profile", "local", "--no-mdns",
        "--http", f"127.0.0.1:{http}", "--mesh", f"127.0.0.1:{mesh}", "--data", "127.0.0.1:0",
        "--data-dir", str(root / f"{name}-{variant}"), "--mesh-id", f"bench-forwarding-{variant}-{os.getpid()}",
        "--log-level", "warning", *extra,
    ]  # fmt: skip


def route(path: str) -> str:
    """The X-Mesh-Route a request on `path` answers with."""
    return ROUTES[path.split()[0]]


def serving(path: str, started: list[Started]) -> list[Started]:
    """The processes that serve a request on `path`: its mesh's agents (and their workers), and nginx."""
    variant = "on" if path == "nginx" else path.split()[1]
    return [s for s in started if s.name.endswith(f" {variant}") or (path == "nginx" and s.name == "nginx")]


def replica_ready(n0_url: str) -> bool:
    """n0's view shows member n1 with its echo replica ready."""
    try:
        members = httpx.get(f"{n0_url}/v1/mesh", timeout=2.0).json()["members"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return any(
        m["name"] == "n1"
        and m["status"] == "alive"
        and m["replicas"].get(DEPLOYMENT, {}).get("state") == "ready"
        for m in members
    )


def answers(url: str, route: str, body: str) -> bool:
    """A POST to `url` returns 200 having crossed `route`."""
    try:
        response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=5.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.headers.get("x-mesh-route") == route


def workers_of(n1: Started) -> str:
    """The command line of n1's running worker process(es)."""
    return ", ".join(" ".join(p.cmdline()[1:4]) for p in n1.processes()[1:]) or "none"


def n0_hosts_nothing(n0_url: str) -> bool:
    """n0 never took a replica of its own, so every request to it crossed the hop."""
    body = httpx.get(f"{n0_url}/v1/mesh", timeout=2.0).json()
    me = next(m for m in body["members"] if m["id"] == body["self"])
    return not me["replicas"]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


Results = dict[tuple[str, int], list[Sample]]


def paired(results: Results, c: int, digits: int, value: Callable[..., float], *paths: str) -> str:
    """Median (range) over rounds of `value` applied to the samples of `paths` taken in the same round."""
    values = [value(*samples) for samples in zip(*(results[(p, c)] for p in paths), strict=True)]
    return f"{median(values):.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


def report(results: Results, args: argparse.Namespace) -> None:
    rounds, high = args.rounds, max(args.concurrency)
    print(f"\n## Latency and throughput (median of {rounds} rounds of {args.duration_s} s)\n")
    print(
        "Requests/s per core: what the agents' core would serve if it were ours alone "
        "(1 / CPU time per request of the processes that serve the path), which noise barely moves.\n"
    )
    print("| path | concurrency | p50 ms | p99 ms | requests/s | requests/s per core | errors |")
    print("|---|---|---|---|---|---|---|")
    for c in args.concurrency:
        for path in PATHS:
            samples = results[(path, c)]
            print(
                f"| {path} | {c} | {median([s.p50_ms for s in samples]):.3f} | {median([s.p99_ms for s in samples]):.2f} | "
                f"{median([s.rps for s in samples]):.0f} | {median([s.rps_per_core for s in samples]):.0f} | "
                f"{sum(s.errors for s in samples)} |"
            )

    figures: list[tuple[str, Callable[[Sample, Sample], float], int]] = [
        ("p50 added at c={c}, ms", lambda s, d: s.p50_ms - d.p50_ms, 3),
        ("p99 added at c={c}, ms", lambda s, d: s.p99_ms - d.p99_ms, 2),
        ("CPU per request added at c={c}, µs", lambda s, d: s.cpu_total_us - d.cpu_total_us, 0),
        ("requests/s at c={c} / direct", lambda s, d: s.rps / d.rps, 2),
        ("requests/s per core at c={c} / direct", lambda s, d: s.rps_per_core / d.rps_per_core, 2),
    ]
    targets = {("p50 added at c={c}, ms", min(args.concurrency)): "<= 0.300"}
    targets |= {(f, high): ">= 0.60" for f, _, _ in figures[3:]}
    print("\n## Each hop against direct (median of per-round figures, range over rounds in brackets)\n")
    print(
        "| figure | meshnode hop, security on | meshnode hop, security off | nginx hop | target (meshnode) |"
    )
    print("|---|---|---|---|---|")
    for figure, value, digits in figures:
        for c in args.concurrency:
            cells = [
                paired(results, c, digits, value, "forwarded on", "direct on"),
                paired(results, c, digits, value, "forwarded off", "direct off"),
                paired(results, c, digits, value, "nginx", "direct on"),
            ]
            print(f"| {figure.format(c=c)} | {' | '.join(cells)} | {targets.get((figure, c), '')} |")

    def difference(field: Callable[[Sample], float]) -> Callable[[Sample, Sample], float]:
        return lambda on, off: field(on) - field(off)

    def hop(field: Callable[[Sample], float]) -> Callable[[Sample, Sample, Sample, Sample], float]:
        """What security adds to the hop: (forwarded - direct) with it, less the same without."""
        return lambda fon, don, foff, doff: (field(fon) - field(don)) - (field(foff) - field(doff))

    print("\n## What security costs: on - off, per round (median, range over rounds in brackets)\n")
    print("| figure | direct path | forwarded path | the hop (forwarded - direct) | target |")
    print("|---|---|---|---|---|")
    costs: list[tuple[str, Callable[[Sample], float], int]] = [
        ("p50 at c={c}, ms", lambda s: s.p50_ms, 3),
        ("p99 at c={c}, ms", lambda s: s.p99_ms, 2),
        ("CPU per request at c={c}, µs", lambda s: s.cpu_total_us, 0),
    ]
    hop_paths = ("forwarded on", "direct on", "forwarded off", "direct off")
    for figure, field, digits in costs:
        for c in args.concurrency:
            cells = [
                paired(results, c, digits, difference(field), "direct on", "direct off"),
                paired(results, c, digits, difference(field), "forwarded on", "forwarded off"),
                paired(results, c, digits, hop(field), *hop_paths),
            ]
            target = "<= 0.050 (the hop)" if figure.startswith("p50") and c == min(args.concurrency) else ""
            print(f"| {figure.format(c=c)} | {' | '.join(cells)} | {target} |")
    for c in args.concurrency:
        ratio = [
            paired(results, c, 2, lambda on, off: on.rps_per_core / off.rps_per_core, f"{p} on", f"{p} off")
            for p in ("direct", "forwarded")
        ]
        print(f"| requests/s per core at c={c}, on / off | {' | '.join(ratio)} | | |")

    names = sorted({n for samples in results.values() for s in samples for n in s.cpu_us})
    print(f"\n## CPU per request of the processes that serve each path, µs (median of {rounds} rounds)\n")
    print(
        "Last two columns: share of each core that processes outside this benchmark (the machine's other "
        "work) took during the same runs.\n"
    )
    print(
        f"| path | concurrency | {' | '.join(names)} | all | others on agents' core | others on wrk's core |"
    )
    print(f"|---|---|{'---|' * len(names)}---|---|---|")
    for c in args.concurrency:
        for path in PATHS:
            samples = results[(path, c)]
            cells = [median([s.cpu_us.get(n, 0.0) for s in samples]) for n in names]
            print(
                f"| {path} | {c} | {' | '.join(f'{v:.0f}' for v in cells)} | {median([s.cpu_total_us for s in samples]):.0f} | "
                f"{median([s.others_agents_core for s in samples]):.0%} | {median([s.others_load_core for s in samples]):.0%} |"
            )


def entry_cpu(args: argparse.Namespace) -> int:
    """The core of the hops' entries (n0, nginx): their own with ``--entry-cpu``, else the agents'."""
    return args.agents_cpu if args.entry_cpu is None else int(args.entry_cpu)


def start_mesh(
    variant: Variant, args: argparse.Namespace, root: Path, ports: dict[str, int]
) -> list[Started]:
    """n1 hosting the echo replica and n0 joined to it by a seed, both of `variant`."""
    v = variant.name
    n1 = agent_args("n1", v, ports, root, "--deploy", f"{DEPLOYMENT}={APP}", *variant.join_args)
    n0 = agent_args("n0", v, ports, root, "--seed", f"127.0.0.1:{ports[f'n1 {v} mesh']}", *variant.join_args)
    return [
        start(f"n1 {variant.name}", n1, args.agents_cpu, root, variant.env),
        start(f"n0 {variant.name}", n0, entry_cpu(args), root, variant.env),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration-s", type=int, default=3, help="length of one wrk run (whole seconds)")
    parser.add_argument("--warmup-s", type=int, default=2, help="wrk run per path before round 1 (0: none)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--agents-cpu", type=int, default=0, help="CPU for the agents, the workers and nginx")
    parser.add_argument("--load-cpu", type=int, default=1, help="CPU for wrk")
    parser.add_argument("--entry-cpu", type=int, help="CPU for n0 and nginx (default: --agents-cpu)")
    parser.add_argument("--body", default='{"text": "hello"}', help="JSON body of every request")
    parser.add_argument(
        "--baseline-commit", default=BEFORE_SECURITY, help="the code whose agents run with security off"
    )
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "taskset", "git"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y nginx wrk util-linux git")

    root = Path(tempfile.mkdtemp(prefix="meshnode-bench-forwarding-"))
    script = root / "post.lua"
    script.write_text(wrk_script(args.body))
    ports = {
        f"{n} {v} {kind}": free_port() for n in ("n0", "n1") for v in VARIANTS for kind in ("http", "mesh")
    }
    ports["nginx"] = free_port()
    urls = {
        f"{kind} {v}": f"http://127.0.0.1:{ports[f'{n} {v} http']}"
        for kind, n in (("direct", "n1"), ("forwarded", "n0"))
        for v in VARIANTS
    }
    urls["nginx"] = f"http://127.0.0.1:{ports['nginx']}"
    predict = {path: f"{url}/v1/predict/{DEPLOYMENT}" for path, url in urls.items()}
    started: list[Started] = []
    load_before = os.getloadavg()
    try:
        variants = [security_on(secrets.token_urlsafe(32)), security_off(root, args.baseline_commit)]
        for variant in variants:
            started += start_mesh(variant, args, root, ports)
        n1 = {"n1": [f"127.0.0.1:{ports['n1 on http']}"]}
        started.append(start_nginx(root, ports["nginx"], n1, {"/": "http://n1"}, entry_cpu(args)))
        for v in VARIANTS:
            ready = functools.partial(replica_ready, urls[f"forwarded {v}"])
            wait(ready, 120, f"n0 {v} to see n1's echo replica ready", started)
        for path in PATHS:
            crossed = functools.partial(answers, predict[path], route(path), args.body)
            wait(crossed, 60, f"a 200 through the {path} path", started)

        load = " ".join(f"{x:.2f}" for x in load_before)
        print(
            "# meshnode forwarding benchmark: direct vs nginx hop vs meshnode hop, security on and off, "
            f"{os.cpu_count()} cores\n"
        )
        print(f"Command: python {' '.join(sys.argv)}\n")
        print(
            f"Code under test: HEAD {commit_of('HEAD')} (working tree as checked out), against {commit_of(args.baseline_commit)}."
        )
        for variant, n1 in zip(variants, (started[0], started[2]), strict=True):
            print(f"- {variant.describe()}; n1's worker: {workers_of(n1)}")
        layout = f"Agents, n1's echo workers and nginx on CPU {args.agents_cpu}"
        if args.entry_cpu is not None:
            layout = (
                f"n1 and its echo workers on CPU {args.agents_cpu}, n0 and nginx on CPU {entry_cpu(args)}"
            )
        print(
            f"\n{layout}; wrk (1 thread) on CPU {args.load_cpu}. {args.rounds} rounds x {len(PATHS)} paths "
            f"x {len(args.concurrency)} concurrencies x {args.duration_s} s, path order rotated each round. "
            f"Load average before: {load}.",
            flush=True,
        )
        for path in PATHS if args.warmup_s > 0 else ():
            run_wrk(predict[path], max(args.concurrency), args.warmup_s, script, args.load_cpu)
        run = Run(args.agents_cpu, args.load_cpu, args.duration_s)
        results: Results = {(p, c): [] for p in PATHS for c in args.concurrency}
        for r in range(args.rounds):
            order = PATHS[r % len(PATHS) :] + PATHS[: r % len(PATHS)]
            for c in args.concurrency:
                for path in order:
                    sample = measure(predict[path], c, script, run, serving(path, started), started)
                    results[(path, c)].append(sample)
            print(f"round {r + 1} of {args.rounds} done", file=sys.stderr, flush=True)
        for v in VARIANTS:
            if not n0_hosts_nothing(urls[f"forwarded {v}"]):
                print(
                    f"\nWARNING: n0 {v} started a replica of its own; some forwarded requests did not cross the hop."
                )
        report(results, args)
        print(f"\nLoad average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    finally:
        stop(started)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # everything started was already stopped by main's finally

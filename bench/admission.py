"""Admission benchmark: goodput under short deadlines and a deep queue, this checkout against another commit.

Usage:  python bench/admission.py [--rounds 3] [--duration-s 5] [--concurrency 128] [--offered 2.0]
                                  [--delay-s 0.1] [--deadline-s 0.3] [--baseline-commit HEAD]

Two meshes of two agents each, one running this checkout and one running ``--baseline-commit``
(bench/baseline.py installs it from the repository's history): n1 hosts one replica of
``apps/echo.py`` (16 requests at once, the node's default queue of 64), n0 hosts nothing and forwards.
Every request is ``{"delay_s": DELAY}`` to n0 with ``X-Request-Timeout: DEADLINE``, in two loads:

- closed loop: ``wrk`` on ``--concurrency`` connections, far more than the replica runs at once,
  each sending its next request as soon as it has an answer (a refusal too: clients that ignore
  ``Retry-After`` and spin, the worst case for the CPU the agents share with the worker);
- open loop: Poisson arrivals at ``--offered`` times the capacity (seeded), from this script,
  which pins itself to ``--load-cpu``: many independent clients, none waiting for another's answer.
  (``hey -q`` was tried first: its workers' rate tickers start together, so its requests come in
  synchronized bursts that no replica queue can smooth, and goodput halves for the load
  generator's sake.)

The replica's capacity is ``slots / delay`` requests per second (160 at the defaults). Printed per
side, medians over rounds that alternate the two meshes: goodput (200s per second, and as a share of
capacity), refusals (429 and 503) per second, and 504s: a request admitted that then missed its
deadline. Targets (issue 12): goodput at least 80 % of capacity, and no 504 while the service time
holds steady. It measures and prints; it never asserts. Needs git and the Debian package wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from baseline import Variant, at_commit, commit_of, security_on
from procs import Started, free_port, start, stop, wait

SLOTS = 16  # apps/echo.py's max_concurrency
DEPLOYMENT = "echo"
LUA = """\
wrk.method = "POST"
wrk.body = [[{{"delay_s": {delay}}}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Request-Timeout"] = "{deadline}"
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {{}} end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("counts")) do io.write(string.format("STATUS %d %d\\n", status, n)) end
  end
  io.write(string.format("SECONDS %f\\n", summary.duration / 1e6))
end
"""


@dataclass(frozen=True)
class Round:
    """One wrk run: responses by status over its duration."""

    statuses: dict[int, int]
    seconds: float

    def per_s(self, *codes: int) -> float:
        return sum(self.statuses.get(code, 0) for code in codes) / self.seconds


def start_mesh(variant: Variant, root: Path, cpu: int) -> tuple[list[Started], str]:
    """n1 with the echo replica and n0 seeded from it; n0's predict URL."""
    ports = {name: free_port() for name in ("n0h", "n0m", "n1h", "n1m")}
    mesh_id = f"bench-admission-{variant.name}-{os.getpid()}"

    def join(name: str, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "meshnode", "join", "--name", name, "--profile", "local", "--no-mdns",
            "--http", f"127.0.0.1:{ports[name + 'h']}", "--mesh", f"127.0.0.1:{ports[name + 'm']}",
            "--data", "127.0.0.1:0", "--data-dir", str(root / f"{name}-{variant.name}"),
            "--mesh-id", mesh_id, "--log-level", "warning", *variant.join_args, *extra,
        ]  # fmt: skip

    n1 = start(
        f"n1 {variant.name}",
        join("n1", "--deploy", f"{DEPLOYMENT}=meshnode.apps.echo:Echo"),
        cpu,
        root,
        variant.env,
    )
    n0 = start(
        f"n0 {variant.name}", join("n0", "--seed", f"127.0.0.1:{ports['n1m']}"), cpu, root, variant.env
    )
    return [n1, n0], f"http://127.0.0.1:{ports['n0h']}/v1/predict/{DEPLOYMENT}"


def forwarded(url: str) -> bool:
    try:
        response = httpx.post(url, json={"delay_s": 0}, timeout=5)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.headers.get("x-mesh-route") == "n0,n1"


def run_wrk(url: str, script: Path, args: argparse.Namespace) -> Round:
    command = [
        "taskset", "-c", str(args.load_cpu), "wrk", "-t1", f"-c{args.concurrency}", f"-d{args.duration_s}s",
        "--timeout", "10s", "-s", str(script), url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    statuses: dict[int, int] = {}
    seconds = float(args.duration_s)
    for line in done.stdout.splitlines():
        if line.startswith("STATUS "):
            _, code, count = line.split()
            statuses[int(code)] = statuses.get(int(code), 0) + int(count)
        elif line.startswith("SECONDS "):
            seconds = float(line.split()[1])
    return Round(statuses, seconds)


def run_open_loop(url: str, args: argparse.Namespace, capacity: float, seed: int) -> Round:
    """Poisson arrivals at ``--offered`` x capacity for ``--duration-s``, whatever the answers."""
    rate = args.offered * capacity
    rng = random.Random(seed)
    body = {"delay_s": args.delay_s}
    headers = {"X-Request-Timeout": str(args.deadline_s)}
    statuses: collections.Counter[int] = collections.Counter()

    async def one(client: httpx.AsyncClient, at: float) -> None:
        await asyncio.sleep(max(0.0, at - asyncio.get_running_loop().time()))
        try:
            response = await client.post(url, json=body, headers=headers)
            statuses[response.status_code] += 1
        except httpx.HTTPError:
            statuses[0] += 1  # no answer at all

    async def run() -> float:
        limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000)
        async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:
            start = asyncio.get_running_loop().time() + 0.2
            arrivals, at = [], start
            while at < start + args.duration_s:
                arrivals.append(at)
                at += rng.expovariate(rate)
            await asyncio.gather(*(one(client, t) for t in arrivals))
        return float(args.duration_s)

    seconds = asyncio.run(run())
    return Round(dict(statuses), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration-s", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=128, help="wrk connections (closed loop)")
    parser.add_argument("--offered", type=float, default=2.0, help="open-loop rate, in multiples of capacity")
    parser.add_argument("--delay-s", type=float, default=0.1, help="service time of each request")
    parser.add_argument("--deadline-s", type=float, default=0.3, help="X-Request-Timeout of each request")
    parser.add_argument("--baseline-commit", default="HEAD", help="the code to compare this checkout with")
    parser.add_argument("--agents-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    args = parser.parse_args()
    for tool in ("wrk", "taskset", "git"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y wrk util-linux git")
    os.sched_setaffinity(0, {args.load_cpu})  # the open loop runs here, beside wrk, not beside the agents

    root = Path(tempfile.mkdtemp(prefix="meshnode-bench-admission-"))
    script = root / "load.lua"
    script.write_text(LUA.format(delay=args.delay_s, deadline=args.deadline_s))
    started: list[Started] = []
    try:
        on = security_on(secrets.token_urlsafe(32))
        sides = {
            "checkout": Variant("checkout", on.env, on.join_args),
            # A commit with security: its agents get a token of their own.
            "baseline": at_commit(
                root, args.baseline_commit, "baseline", ("--token", secrets.token_urlsafe(32))
            ),
        }
        urls = {}
        for variant in sides.values():
            processes, urls[variant.name] = start_mesh(variant, root, args.agents_cpu)
            started += processes
        for name, url in urls.items():
            wait(lambda u=url: forwarded(u), 120, f"{name}: a request forwarded n0 -> n1", started)

        capacity = SLOTS / args.delay_s
        print(f"# meshnode admission benchmark, {os.cpu_count()} cores\n")
        print(f"Command: python {' '.join(sys.argv)}\n")
        print(
            f"Checkout: HEAD {commit_of('HEAD')} (working tree as checked out); baseline: {commit_of(args.baseline_commit)}."
        )
        print(
            f"Service time {args.delay_s} s, {SLOTS} slots: capacity {capacity:.0f} requests/s. Deadline "
            f"{args.deadline_s} s, {args.concurrency} connections, {args.rounds} rounds x {args.duration_s} s per side.\n",
            flush=True,
        )
        loads = {
            f"closed loop, {args.concurrency} connections": lambda url, _: run_wrk(url, script, args),
            f"open loop, {args.offered:g} x capacity": lambda url, seed: run_open_loop(
                url, args, capacity, seed
            ),
        }
        rounds: dict[tuple[str, str], list[Round]] = {(load, name): [] for load in loads for name in sides}
        for r in range(args.rounds):
            for load, run in loads.items():
                for name in list(sides)[:: 1 if r % 2 == 0 else -1]:
                    rounds[(load, name)].append(run(urls[name], r))
            print(f"round {r + 1} of {args.rounds} done", file=sys.stderr, flush=True)

        print(
            "| load | side | goodput requests/s | goodput / capacity | 429 + 503 per s | 504 per s | other per s |"
        )
        print("|---|---|---|---|---|---|---|")
        for (load, name), samples in rounds.items():
            good = statistics.median(s.per_s(200) for s in samples)
            refused = statistics.median(s.per_s(429, 503) for s in samples)
            late = statistics.median(s.per_s(504) for s in samples)
            other = statistics.median(
                sum(n for code, n in s.statuses.items() if code not in (200, 429, 503, 504)) / s.seconds
                for s in samples
            )
            print(
                f"| {load} | {name} | {good:.0f} | {good / capacity:.2f} | {refused:.0f} | {late:.1f} | {other:.1f} |"
            )
        print("\nTarget: goodput / capacity >= 0.80; 504 per s = 0.")
    finally:
        stop(started)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)

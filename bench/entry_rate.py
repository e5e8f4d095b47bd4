"""The entry's CPU per request over 1 peer and over 10, at the same fixed request rate.

Usage:  python bench/entry_rate.py [--rates 300 600] [--rounds 3] [--duration-s 5] [--peers 10]
                                  [--baseline-commit COMMIT] [--agent-set KNOB=VALUE ...]

``bench/scale.py`` part (a) measures an entry node at full speed (wrk, c = 32): forwarding to ten
peers, whose agents and workers share the one core, it runs at a third of the rate it reaches with
one peer, and its CPU per request doubled. That mixes two causes: more peers, and a lower rate (at a
lower rate fewer requests share each event-loop wakeup, each ZeroMQ batch). Here ``hey`` holds the
rate fixed (``-q``, per connection), below what ten peers can take, so the only difference between
the two paths is the number of peers.

Same mesh as scale.py part (a): eleven real agents (``--profile local``, one token); ``e0`` hosts
nothing, ``p1``..``p10`` each pin an ``echo`` replica, ``p1`` also the only ``echo1``. Paths: entry
to 1 peer (``e0`` -> ``p1`` for ``echo1``) and entry to 10 peers (``e0`` -> ``p1..p10`` for
``echo``), alternated round by round. With ``--baseline-commit`` a second mesh runs that commit's
code (bench/baseline.py), measured the same way after this checkout's. Agents on ``--agents-cpu``,
hey on ``--load-cpu``. With ``--entry-cpu`` the entry has a core of its own, so the peers' turns on
theirs no longer decide when the entry wakes (``--entry-cpu 0 --agents-cpu 1 --load-cpu 1``: ten
peers and hey share the other core). Prints; never asserts. Needs the Debian package hey.

With ``--nginx`` the same run also measures nginx as the entry (on the entry's core, keepalive
upstreams, round robin): ``POST`` to p1's ``echo1`` alone, and to ``echo`` on p1..p10 in turn.
nginx's own 10 peers / 1 peer ratio is what spreading the same traffic over ten sockets costs an
event-driven proxy with no threads, no routing and no security: the yardstick for meshnode's.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from baseline import Variant, at_commit, commit_of
from nginx import start_nginx
from procs import Started, free_port, progress, start, stop, wait
from scale import APP, BODY, median, ready_replicas
from wrk import cpu_seconds

PATHS = ("entry to 1 peer", "entry to 10 peers")
NGINX_PATHS = ("nginx to 1 peer", "nginx to 10 peers")


def hey(
    url: str, rate: int, concurrency: int, seconds: int, load_cpu: int
) -> tuple[int, float, float, float]:
    """One fixed-rate run: (requests answered 200, seconds, p50 ms, p99 ms)."""
    per_connection = max(1, round(rate / concurrency))
    command = [
        "taskset", "-c", str(load_cpu), "hey", "-z", f"{seconds}s", "-c", str(concurrency),
        "-q", str(per_connection), "-m", "POST", "-T", "application/json", "-d", BODY, url,
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=False).stdout
    total = re.search(r"Total:\s+([\d.]+) secs", out)
    answered = re.search(r"\[200\]\s+(\d+) responses", out)
    p50 = re.search(r"50% in ([\d.]+) secs", out)
    p99 = re.search(r"99% in ([\d.]+) secs", out)
    if not (total and answered and p50 and p99):
        raise RuntimeError(f"hey printed no result:\n{out}")
    return int(answered[1]), float(total[1]), float(p50[1]) * 1000, float(p99[1]) * 1000


# Per path: (requests/s, entry µs, p50, p99, the entry loop's wake-ups and CPU µs per request).
Samples = dict[str, list[tuple[float, float, float, float, float, float]]]


def mesh(variant: Variant, root: Path, args: argparse.Namespace, started: list[Started]) -> dict[str, str]:
    """Eleven agents of `variant`, joined; the two paths' predict URLs at the entry ``e0``."""
    token, key = secrets.token_urlsafe(32), re.sub(r"[^a-z0-9]+", "-", variant.name.lower())
    knobs = [flag for knob in args.agent_set for flag in ("--set", knob)]
    env = variant.env | {"MESHNODE_TOKEN": token}

    def agent(name: str, *extra: str, cpu: int = args.agents_cpu) -> tuple[str, str]:
        http, gossip = free_port(), free_port()
        command = [
            sys.executable, "-m", "meshnode", "join", "--name", name, "--profile", "local", "--no-mdns",
            "--http", f"127.0.0.1:{http}", "--mesh", f"127.0.0.1:{gossip}", "--data", "127.0.0.1:0",
            "--data-dir", str(root / key / name), "--mesh-id", f"entry-rate-{key}",
            "--log-level", "warning", *knobs, *extra,
        ]  # fmt: skip
        started.append(start(f"{name}", command, cpu, root, env))
        return f"http://127.0.0.1:{http}", f"127.0.0.1:{gossip}"

    seed, peers = "", []
    for i in range(1, args.peers + 1):
        extra = ["--deploy", f"echo={APP}"] + (["--deploy", f"echo1={APP}"] if i == 1 else [])
        http, gossip = agent(f"p{i}", *extra, *(["--seed", seed] if seed else []))
        seed, peers = seed or gossip, [*peers, http.removeprefix("http://")]
    entry_cpu = args.agents_cpu if args.entry_cpu is None else args.entry_cpu
    entry, _ = agent("e0", "--seed", seed, cpu=entry_cpu)
    progress(f"{variant.name}: started {len(started)} agents; waiting for {args.peers} ready echo replicas")
    wait(lambda: len(ready_replicas(entry, "echo")) == args.peers, 300, "echo replicas", started)
    wait(lambda: ready_replicas(entry, "echo1") == {"p1"}, 60, "p1's echo1 replica", started)
    urls = {PATHS[0]: f"{entry}/v1/predict/echo1", PATHS[1]: f"{entry}/v1/predict/echo"}
    if args.nginx:
        urls |= nginx_paths(root / key, peers, entry_cpu, started)
    return urls


def nginx_paths(root: Path, peers: list[str], cpu: int, started: list[Started]) -> dict[str, str]:
    """nginx in front of p1 alone and of every peer in turn; the URLs of its two paths."""
    port = free_port()
    upstreams = {"one": peers[:1], "ten": peers}
    paths = {"= /one": "http://one/v1/predict/echo1", "= /ten": "http://ten/v1/predict/echo"}
    started.append(start_nginx(root, port, upstreams, paths, cpu))
    return {NGINX_PATHS[0]: f"http://127.0.0.1:{port}/one", NGINX_PATHS[1]: f"http://127.0.0.1:{port}/ten"}


def measure(predict: dict[str, str], rate: int, args: argparse.Namespace, started: list[Started]) -> Samples:
    paths = list(predict)
    got: Samples = {p: [] for p in paths}
    for r in range(args.rounds):
        for path in paths[r % len(paths) :] + paths[: r % len(paths)]:
            entry = "nginx" if path in NGINX_PATHS else "e0"
            before, slept = cpu_seconds(started), loop_sleeps(started, entry)
            answered, seconds, p50, p99 = hey(
                predict[path], rate, args.concurrency, args.duration_s, args.load_cpu
            )
            after, woke = cpu_seconds(started), loop_sleeps(started, entry)
            n = max(answered, 1)
            per_request = (after[entry] - before[entry]) / n * 1e6
            wakes, loop_us = (woke[0] - slept[0]) / n, (woke[1] - slept[1]) / n * 1e6
            got[path].append((answered / seconds, per_request, p50, p99, wakes, loop_us))
        progress(f"rate {rate}: round {r + 1} of {args.rounds} done")
    return got


def loop_sleeps(started: list[Started], entry: str) -> tuple[int, float]:
    """The entry's event loop (its main thread): how often it has slept and been woken, and its CPU
    seconds, so far (the rest of the entry's CPU is its threads': ZeroMQ's I/O threads, files)."""
    process = next(s for s in started if s.name == entry).processes()[0]
    loop = next(t for t in process.threads() if t.id == process.pid)
    return int(process.num_ctx_switches().voluntary), loop.user_time + loop.system_time  # /proc/PID/status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[300, 600], help="requests/s, total")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration-s", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--peers", type=int, default=10)
    parser.add_argument("--agents-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument(
        "--entry-cpu",
        type=int,
        help="the entry alone on this CPU (peers on --agents-cpu): as if the peers were other machines",
    )
    parser.add_argument("--baseline-commit", help="also measure the agents of this commit")
    parser.add_argument(
        "--agent-set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="a knob of every agent (meshnode join --set), e.g. meta_min_interval_s=5",
    )
    parser.add_argument("--nginx", action="store_true", help="also nginx as the entry, to 1 peer and to 10")
    args = parser.parse_args()
    for tool in ("hey", *(["nginx"] if args.nginx else [])):
        if shutil.which(tool) is None:
            sys.exit(f"needs {tool} (apt-get install {tool})")
    root = Path(tempfile.mkdtemp(prefix="bench-entry-rate-"))
    here = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MESHNODE_TOKEN")}
    variants = [Variant(f"HEAD {commit_of('HEAD')}", here)]
    if args.baseline_commit:
        variants.append(at_commit(root, args.baseline_commit, f"at {commit_of(args.baseline_commit)}"))
    results: dict[str, dict[int, Samples]] = {}
    try:
        for variant in variants:
            started: list[Started] = []
            try:
                predict = mesh(variant, root, args, started)
                for url in predict.values():
                    hey(url, min(args.rates), args.concurrency, 2, args.load_cpu)  # warm-up
                results[variant.name] = {rate: measure(predict, rate, args, started) for rate in args.rates}
            finally:
                stop(started)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n## Entry CPU at a fixed rate (hey, c={args.concurrency}, {args.rounds} rounds of {args.duration_s} s)\n"
    )
    print(
        "| code | rate asked | path | requests/s | entry CPU µs/request (its loop's) | p50 ms | p99 ms "
        "| entry loop's wake-ups/request |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, by_rate in results.items():
        for rate, got in by_rate.items():
            for path in got:
                c = [median([sample[k] for sample in got[path]]) for k in range(6)]
                print(
                    f"| {name} | {rate} | {path} | {c[0]:.0f} | {c[1]:.0f} ({c[5]:.0f}) | {c[2]:.2f} | {c[3]:.2f} "
                    f"| {c[4]:.2f} |"
                )
    print(
        "\n| code, entry | rate asked | entry CPU per request, 10 peers / 1 peer, per round: median (range) |"
    )
    print("|---|---|---|")
    for name, by_rate in results.items():
        for rate, got in by_rate.items():
            for one, ten in (PATHS, NGINX_PATHS) if NGINX_PATHS[0] in got else (PATHS,):
                ratios = [b[1] / a[1] for a, b in zip(got[one], got[ten], strict=True)]
                entry = "nginx" if one in NGINX_PATHS else "meshnode"
                print(
                    f"| {name}, {entry} | {rate} | {median(ratios):.2f} ({min(ratios):.2f}..{max(ratios):.2f}) |"
                )


if __name__ == "__main__":
    main()

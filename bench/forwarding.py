"""Forwarding benchmark: one request direct, through an nginx hop and through a meshnode hop, side by side.

Usage:  python bench/forwarding.py [--rounds 5] [--duration-s 3] [--concurrency 1 32]
                                   [--agents-cpu 0] [--load-cpu 1]

Three paths to the same replica of ``apps/echo.py``, measured in one run:

- direct: ``POST`` to n1, the agent that hosts the replica (``X-Mesh-Route: n1``);
- nginx: ``POST`` to an nginx ``proxy_pass`` in front of n1's HTTP port (keepalive upstream), the
  reference cost of one well-made hop;
- forwarded: ``POST`` to n0, an agent with no replica, which forwards over the ZeroMQ data plane to
  n1 (``X-Mesh-Route: n0,n1``; the request path of docs/architecture.md).

Both agents (``--profile local``), n1's worker process and nginx run on ``--agents-cpu``; the load
generator, ``wrk`` (one thread, keepalive connections, a Lua script for the POST), runs on
``--load-cpu``, both pinned with ``taskset``. Every round measures each path at each concurrency for
``--duration-s``, rotating the order of the paths from round to round so that noise hits them alike.
Absolute figures are medians over rounds; differences and ratios are taken within a round, then their
median is quoted. CPU time per request of every process on the agents' core comes from the processes'
own counters; "others" is the share of each core that processes outside this benchmark took meanwhile.
"Requests/s per core" is 1 / (CPU time per request on the agents' core): what that core would serve
with nothing else on it, the throughput figure that a shared, noisy machine moves least.

Targets: one forwarding hop adds at most 0.3 ms p50 at concurrency 1; forwarded throughput at least
60 % of direct on the same cores. It measures and prints; it never asserts (docs/benchmarks.md says how
the benchmarks measure, and keeps the latest results).
Needs the Debian packages nginx and wrk.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

PATHS = ("direct", "nginx", "forwarded")
ROUTES = {"direct": "n1", "nginx": "n1", "forwarded": "n0,n1"}
DEPLOYMENT = "echo"
APP = "meshnode.apps.echo:Echo"
WRK_TIMEOUT = "10s"
# wrk prints this line from the script's done(): requests, duration µs, p50 µs, p99 µs, non-2xx, socket errors.
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""
NGINX_CONF = """\
worker_processes 1;
master_process off;
daemon off;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream n1 {{
        server 127.0.0.1:{upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://n1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Started:
    """A process this benchmark started (pinned with taskset), with its log."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def processes(self) -> list[psutil.Process]:
        """It and its descendants (an agent's worker), for CPU accounting and cleanup."""
        try:
            proc = psutil.Process(self.process.pid)
            return [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


def start(name: str, args: list[str], cpu: int, root: Path) -> Started:
    log_path = root / f"{name}.log"
    with log_path.open("ab") as log:
        # Its own session: a Ctrl-C reaches only this script, whose finally stops everything in order.
        process = subprocess.Popen(
            ["taskset", "-c", str(cpu), *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Started(name, process, log_path)


def stop(started: list[Started]) -> None:
    """SIGTERM every process (agents leave gracefully), SIGKILL what lingers, then its leftover children."""
    children = {s.name: s.processes()[1:] for s in started}
    for s in started:
        if s.process.poll() is None:
            s.process.send_signal(signal.SIGTERM)
    for s in started:
        try:
            s.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            s.process.kill()
            s.process.wait()
        for child in children[s.name]:
            try:
                child.wait(timeout=5)
            except psutil.TimeoutExpired:
                child.kill()
            except psutil.NoSuchProcess:
                pass


def agent_args(name: str, http: int, mesh: int, root: Path, mesh_id: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "meshnode", "join", "--name", name, "--profile", "local", "--no-mdns",
        "--http", f"127.0.0.1:{http}", "--mesh", f"127.0.0.1:{mesh}", "--data", "127.0.0.1:0",
        "--data-dir", str(root / name), "--mesh-id", mesh_id, "--log-level", "warning", *extra,
    ]  # fmt: skip


def wait(predicate: Callable[[], bool], timeout: float, what: str, started: list[Started]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in started:
            if s.process.poll() is not None:
                tail = s.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"{s.name} exited with {s.process.returncode} while waiting for {what}:\n{tail}"
                )
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


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


def code_under_test(n1: Started) -> str:
    """Which meshnode the agents run: the package this interpreter and environment import (as the
    agents, started the same way, do) and the command line of n1's running worker process."""
    where = subprocess.run(
        [sys.executable, "-c", "import meshnode; print(meshnode.__file__)"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    workers = [" ".join(p.cmdline()[1:4]) for p in n1.processes()[1:]]
    return f"meshnode from {where}; n1's worker: {', '.join(workers) or 'none'}"


def n0_hosts_nothing(n0_url: str) -> bool:
    """n0 never took a replica of its own, so every request to it crossed the hop."""
    body = httpx.get(f"{n0_url}/v1/mesh", timeout=2.0).json()
    me = next(m for m in body["members"] if m["id"] == body["self"])
    return not me["replicas"]


@dataclass(frozen=True)
class Sample:
    """One wrk run on one path at one concurrency, and the CPU it cost."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: dict[str, float]  # CPU µs per request of each process on the agents' core
    others_agents_core: float  # share of the agents' core that processes outside this benchmark took
    others_load_core: float  # the same on the load generator's core (besides wrk)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_total_us(self) -> float:
        return sum(self.cpu_us.values())

    @property
    def rps_per_core(self) -> float:
        """Requests per second the agents' core would serve with nothing else on it."""
        return 1e6 / self.cpu_total_us if self.cpu_total_us > 0 else float("nan")


def cpu_seconds(started: list[Started]) -> dict[str, float]:
    """CPU seconds (user + system) so far of each started process, its worker counted as its own entry."""
    out: dict[str, float] = {}
    for s in started:
        for i, proc in enumerate(s.processes()):
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            name = s.name if i == 0 else f"{s.name} worker"
            out[name] = out.get(name, 0.0) + times.user + times.system
    return out


def core_busy_s(cpu: int) -> float:
    """CPU seconds processes have run on `cpu` so far (interrupts and steal left out, as in process times)."""
    times = psutil.cpu_times(percpu=True)[cpu]
    return times.user + times.nice + times.system


def wrk_seconds() -> float:
    """CPU seconds of every finished child of this script: the wrk runs (taskset execs wrk)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    url: str, concurrency: int, seconds: int, script: Path, load_cpu: int
) -> tuple[int, float, float, float, int]:
    command = [
        "taskset", "-c", str(load_cpu), "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s",
        "--timeout", WRK_TIMEOUT, "-s", str(script), url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    requests, duration_us, p50_us, p99_us, status_errors, socket_errors = map(int, line.split()[1:])
    return requests, duration_us / 1e6, p50_us / 1000, p99_us / 1000, status_errors + socket_errors


def measure(
    url: str, concurrency: int, seconds: int, script: Path, args: argparse.Namespace, started: list[Started]
) -> Sample:
    def snapshot() -> tuple[dict[str, float], float, float, float]:
        ours = cpu_seconds(started)
        return ours, core_busy_s(args.agents_cpu), core_busy_s(args.load_cpu), wrk_seconds()

    ours_before, agents_before, load_before, wrk_before = snapshot()
    requests, elapsed, p50, p99, errors = run_wrk(url, concurrency, seconds, script, args.load_cpu)
    ours_after, agents_after, load_after, wrk_after = snapshot()
    ours = {name: ours_after[name] - ours_before.get(name, 0.0) for name in ours_after}
    # All this benchmark runs is pinned: `started` on the agents' core, wrk on the load core.
    others_agents = agents_after - agents_before - sum(ours.values())
    others_load = load_after - load_before - (wrk_after - wrk_before)
    return Sample(
        requests,
        elapsed,
        p50,
        p99,
        errors,
        {name: value / max(requests, 1) * 1e6 for name, value in ours.items()},
        # Clamped: process and per-core counters tick separately, so a share can read a little outside 0..1.
        min(1.0, max(0.0, others_agents / elapsed)),
        min(1.0, max(0.0, others_load / elapsed)),
    )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: dict[tuple[str, int], list[Sample]], args: argparse.Namespace) -> None:
    rounds, high = args.rounds, max(args.concurrency)
    print(f"\n## Latency and throughput (median of {rounds} rounds of {args.duration_s} s)\n")
    print(
        "Requests/s per core: what the agents' core would serve if it were ours alone "
        "(1 / CPU time per request of every process on it), which noise from other processes barely moves.\n"
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

    def per_round(path: str, c: int, value: Callable[[Sample, Sample], float]) -> tuple[float, float, float]:
        values = [value(s, d) for s, d in zip(results[(path, c)], results[("direct", c)], strict=True)]
        return median(values), min(values), max(values)

    def row(
        figure: str, c: int, value: Callable[[Sample, Sample], float], digits: int, target: str = ""
    ) -> None:
        cells = []
        for path in ("forwarded", "nginx"):
            mid, lo, hi = per_round(path, c, value)
            cells.append(f"{mid:.{digits}f} ({lo:.{digits}f}..{hi:.{digits}f})")
        print(f"| {figure.format(c=c)} | {cells[0]} | {cells[1]} | {target} |")

    print("\n## Each hop against direct (median of per-round figures, range over rounds in brackets)\n")
    print("| figure | meshnode hop (n0 -> n1) | nginx hop | target (meshnode) |")
    print("|---|---|---|---|")
    for c in args.concurrency:
        row("p50 added at c={c}, ms", c, lambda s, d: s.p50_ms - d.p50_ms, 3, "<= 0.300" if c == 1 else "")
    for c in args.concurrency:
        row("p99 added at c={c}, ms", c, lambda s, d: s.p99_ms - d.p99_ms, 2)
    for c in args.concurrency:
        row("CPU per request added at c={c}, µs", c, lambda s, d: s.cpu_total_us - d.cpu_total_us, 0)
    for c in args.concurrency:
        row("requests/s at c={c} / direct", c, lambda s, d: s.rps / d.rps, 2, ">= 0.60" if c == high else "")
    for c in args.concurrency:
        row(
            "requests/s per core at c={c} / direct",
            c,
            lambda s, d: s.rps_per_core / d.rps_per_core,
            2,
            ">= 0.60" if c == high else "",
        )

    names = sorted({n for samples in results.values() for s in samples for n in s.cpu_us})
    print(f"\n## CPU per request on the agents' core, µs (median of {rounds} rounds)\n")
    print(
        "Last two columns: share of each core that processes outside this benchmark (the machine's other "
        "work) took during the same runs.\n"
    )
    print(
        f"| path | concurrency | {' | '.join(names)} | all of ours | others on agents' core | others on wrk's core |"
    )
    print(f"|---|---|{'---|' * len(names)}---|---|---|")
    for c in args.concurrency:
        for path in PATHS:
            samples = results[(path, c)]
            cells = [median([s.cpu_us.get(n, 0.0) for s in samples]) for n in names]
            others = (
                median([s.others_agents_core for s in samples]),
                median([s.others_load_core for s in samples]),
            )
            print(
                f"| {path} | {c} | {' | '.join(f'{v:.0f}' for v in cells)} | {median([s.cpu_total_us for s in samples]):.0f} | "
                f"{others[0]:.0%} | {others[1]:.0%} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration-s", type=int, default=3, help="length of one wrk run (whole seconds)")
    parser.add_argument("--warmup-s", type=int, default=2, help="wrk run per path before round 1 (0: none)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--agents-cpu", type=int, default=0, help="CPU for the agents, the worker and nginx")
    parser.add_argument("--load-cpu", type=int, default=1, help="CPU for wrk")
    parser.add_argument("--body", default='{"text": "hello"}', help="JSON body of every request")
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y nginx wrk util-linux")

    root = Path(tempfile.mkdtemp(prefix="meshnode-bench-forwarding-"))
    script = root / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=args.body))
    ports = {name: free_port() for name in ("n1-http", "n1-mesh", "n0-http", "n0-mesh", "nginx")}
    urls = {
        "direct": f"http://127.0.0.1:{ports['n1-http']}",
        "nginx": f"http://127.0.0.1:{ports['nginx']}",
        "forwarded": f"http://127.0.0.1:{ports['n0-http']}",
    }
    predict = {path: f"{url}/v1/predict/{DEPLOYMENT}" for path, url in urls.items()}
    (root / "nginx.conf").write_text(
        NGINX_CONF.format(root=root, upstream=ports["n1-http"], port=ports["nginx"])
    )
    mesh_id = f"bench-forwarding-{os.getpid()}"
    started: list[Started] = []
    load_before = os.getloadavg()
    try:
        deploy = ("--deploy", f"{DEPLOYMENT}={APP}")
        n1 = agent_args("n1", ports["n1-http"], ports["n1-mesh"], root, mesh_id, *deploy)
        started.append(start("n1", n1, args.agents_cpu, root))
        seed = ("--seed", f"127.0.0.1:{ports['n1-mesh']}")
        n0 = agent_args("n0", ports["n0-http"], ports["n0-mesh"], root, mesh_id, *seed)
        started.append(start("n0", n0, args.agents_cpu, root))
        # Its own config and prefix in the temp dir: nothing under /etc or /var is read or written.
        conf, log = str(root / "nginx.conf"), str(root / "nginx-error.log")
        nginx = ["nginx", "-c", conf, "-p", str(root), "-e", log]
        started.append(start("nginx", nginx, args.agents_cpu, root))
        wait(lambda: replica_ready(urls["forwarded"]), 120, "n0 to see n1's echo replica ready", started)
        for path in PATHS:
            crossed = functools.partial(answers, predict[path], ROUTES[path], args.body)
            wait(crossed, 60, f"a 200 through the {path} path", started)

        code = code_under_test(started[0])
        load = " ".join(f"{x:.2f}" for x in load_before)
        print(
            f"# meshnode forwarding benchmark: direct vs nginx hop vs meshnode hop, {os.cpu_count()} cores\n"
        )
        print(f"Command: python {' '.join(sys.argv)}\n")
        print(f"Code under test: {code}.\n")
        print(
            f"Agents n0 and n1, n1's echo worker and nginx on CPU {args.agents_cpu}; wrk (1 thread) on CPU "
            f"{args.load_cpu}. {args.rounds} rounds x {len(PATHS)} paths x {len(args.concurrency)} concurrencies "
            f"x {args.duration_s} s, path order rotated each round. Load average before: {load}.",
            flush=True,
        )
        for path in PATHS if args.warmup_s > 0 else ():
            run_wrk(predict[path], max(args.concurrency), args.warmup_s, script, args.load_cpu)
        results: dict[tuple[str, int], list[Sample]] = {(p, c): [] for p in PATHS for c in args.concurrency}
        for r in range(args.rounds):
            order = PATHS[r % len(PATHS) :] + PATHS[: r % len(PATHS)]
            for c in args.concurrency:
                for path in order:
                    results[(path, c)].append(
                        measure(predict[path], c, args.duration_s, script, args, started)
                    )
            print(f"round {r + 1} of {args.rounds} done", file=sys.stderr, flush=True)
        if not n0_hosts_nothing(urls["forwarded"]):
            print(
                "\nWARNING: n0 started a replica of its own; some 'forwarded' requests did not cross the hop."
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

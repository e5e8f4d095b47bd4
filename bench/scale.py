"""Scale of one agent: an entry node forwarding to ten peers, and an agent holding 1,000 members and 1,000 deployments.

Usage:  python bench/scale.py [--part a b] [--rounds 3] [--duration-s 5] [--peers 10]
                              [--members 1000] [--deployments 1000] [--idle-s 20]
                              [--load-changes-per-s 0] [--farm-dials-always]

(a) Entry throughput. Eleven real agents (``--profile local``, one mesh token): ``e0`` hosts nothing,
    ``p1``..``p10`` each pin a replica of ``echo`` (``apps/echo.py``), and ``p1`` also the only one of
    ``echo1``. ``wrk`` (one thread, c=32, a Lua POST) measures three paths in the same run, their order
    rotated each round: direct (``p1``'s own ``echo1`` replica, no hop), entry to 1 peer (``e0`` ->
    ``p1`` for ``echo1``) and entry to 10 peers (``e0`` -> ``p1..p10`` for ``echo``). Same entry
    process, same mesh, so the ratio of the last two is what the peer count costs the entry. The
    entry's CPU per request comes from its own counters (bench/wrk.py), and how the entry spread the
    requests over the ten peers from the ``X-Mesh-Route`` of requests sent afterwards.
(b) One agent's footprint. A real agent, alone; 1,000 deployments declared through its HTTP API
    (``PUT /v1/deployments/NAME``, ``min_replicas`` 0, so nothing starts); then 1,000 members,
    production membership cores behind sockets of their own that probe it, answer its probes and
    exchange full state with it over real sealed packets (bench/member_farm.py says what they do and
    do not do). Before and after each step: the agent's RSS, PSS and USS (``/proc/PID/smaps``), its
    idle CPU, and the latency of ``GET /health``, ``GET /v1/mesh`` (and its size) and ``GET
    /v1/deployments``, alone and while ``/v1/mesh`` is read in a loop (a dashboard, ``meshnode top``).
    With the members, the measurements wait until the agent's memory stops growing: it dials each
    member when its probing first reaches it, minutes after the join at 1,000 members.
    The members are quiet (a lower bound) unless ``--load-changes-per-s`` makes them busy: their
    load samples reach the agent at that rate, all members together.

Agents (and their workers) run on ``--agents-cpu``; wrk and the member farm on ``--load-cpu``, pinned
with ``taskset``. It measures and prints; it never asserts. Needs the Debian package wrk.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from procs import Started, commit, free_port, progress, start, stop, wait
from wrk import Run, Sample, measure, run_wrk, wrk_script

APP = "meshnode.apps.echo:Echo"
PATHS = ("direct", "entry to 1 peer", "entry to 10 peers")
BODY = '{"text": "hello"}'
FARM = Path(__file__).resolve().parent / "member_farm.py"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def agent(
    name: str, root: Path, cpu: int, mesh_id: str, token: str, *extra: str, pythonpath: str = ""
) -> tuple[Started, str, str]:
    """One ``meshnode join`` pinned to `cpu`; (it, its HTTP base URL, its mesh address).

    `pythonpath` runs it from another build of meshnode (a commit installed with ``pip --target``).
    """
    http, mesh = free_port(), free_port()
    args = [
        sys.executable, "-m", "meshnode", "join", "--name", name, "--profile", "local", "--no-mdns",
        "--http", f"127.0.0.1:{http}", "--mesh", f"127.0.0.1:{mesh}", "--data", "127.0.0.1:0",
        "--data-dir", str(root / name), "--mesh-id", mesh_id, "--log-level", "warning", *extra,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"MESHNODE_TOKEN": token}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return start(name, args, cpu, root, env), f"http://127.0.0.1:{http}", f"127.0.0.1:{mesh}"


def view(url: str) -> list[dict[str, Any]]:
    try:
        return list(httpx.get(f"{url}/v1/mesh", timeout=5.0).json()["members"])
    except (httpx.HTTPError, ValueError, KeyError):
        return []


def ready_replicas(url: str, deployment: str) -> set[str]:
    """Names of the members `url` sees alive with a ready replica of `deployment`."""
    return {
        m["name"]
        for m in view(url)
        if m["status"] == "alive" and m["replicas"].get(deployment, {}).get("state") == "ready"
    }


def routes(url: str, count: int) -> collections.Counter[str]:
    with httpx.Client(timeout=10.0) as client:
        return collections.Counter(
            client.post(url, content=BODY, headers={"content-type": "application/json"}).headers.get(
                "x-mesh-route", "?"
            )
            for _ in range(count)
        )


def part_a(args: argparse.Namespace, root: Path, started: list[Started]) -> None:
    mesh_id, token = f"bench-scale-{os.getpid()}", secrets.token_urlsafe(32)
    names = [f"p{i}" for i in range(1, args.peers + 1)]
    urls: dict[str, str] = {}
    seed = ""
    for name in names:
        extra = ["--deploy", f"echo={APP}"] + (["--deploy", f"echo1={APP}"] if name == "p1" else [])
        extra += ["--seed", seed] if seed else []
        s, urls[name], mesh = agent(name, root, args.agents_cpu, mesh_id, token, *extra)
        started.append(s)
        seed = seed or mesh
    s, urls["e0"], _ = agent("e0", root, args.agents_cpu, mesh_id, token, "--seed", seed)
    started.append(s)
    entry = urls["e0"]
    progress(f"started {len(started)} agents; waiting for e0 to see {args.peers} ready echo replicas")
    wait(lambda: len(ready_replicas(entry, "echo")) == args.peers, 300, "ten echo replicas", started)
    wait(lambda: ready_replicas(entry, "echo1") == {"p1"}, 60, "p1's echo1 replica", started)
    predict = {
        "direct": f"{urls['p1']}/v1/predict/echo1",
        "entry to 1 peer": f"{entry}/v1/predict/echo1",
        "entry to 10 peers": f"{entry}/v1/predict/echo",
    }
    script = root / "post.lua"
    script.write_text(wrk_script(BODY))
    for path in PATHS:
        run_wrk(predict[path], args.concurrency, 2, script, args.load_cpu)  # warm-up
    run = Run(args.agents_cpu, args.load_cpu, args.duration_s)
    results: dict[str, list[Sample]] = {p: [] for p in PATHS}
    for r in range(args.rounds):
        for path in PATHS[r % 3 :] + PATHS[: r % 3]:
            results[path].append(measure(predict[path], args.concurrency, script, run, started, started))
        progress(f"part a: round {r + 1} of {args.rounds} done")
    spread = routes(predict["entry to 10 peers"], 500)
    one = routes(predict["entry to 1 peer"], 100)
    e0_hosts = [m["replicas"] for m in view(entry) if m["name"] == "e0"]

    print(
        f"\n## (a) Entry throughput: wrk c={args.concurrency}, {args.rounds} rounds of {args.duration_s} s\n"
    )
    print(
        "| path | requests/s | p50 ms | p99 ms | entry CPU µs/request | all agents+workers CPU µs/request | errors |"
    )
    print("|---|---|---|---|---|---|---|")
    for path in PATHS:
        samples = results[path]
        entry_cpu = [s.cpu_us.get("e0", 0.0) for s in samples]
        print(
            f"| {path} | {median([s.rps for s in samples]):.0f} | {median([s.p50_ms for s in samples]):.2f} | "
            f"{median([s.p99_ms for s in samples]):.2f} | {median(entry_cpu):.0f} | "
            f"{median([s.cpu_total_us for s in samples]):.0f} | {sum(s.errors for s in samples)} |"
        )

    def ratio(field: str, num: str, den: str) -> str:
        values = [
            getattr(a, field) / getattr(b, field) for a, b in zip(results[num], results[den], strict=True)
        ]
        return f"{median(values):.2f} ({min(values):.2f}..{max(values):.2f})"

    def entry_ratio(num: str, den: str) -> str:
        values = [
            a.cpu_us.get("e0", 0.0) / max(b.cpu_us.get("e0", 0.0), 1e-9)
            for a, b in zip(results[num], results[den], strict=True)
        ]
        return f"{median(values):.2f} ({min(values):.2f}..{max(values):.2f})"

    print("\n| ratio, per round (median, range) | value |")
    print("|---|---|")
    print(
        f"| requests/s, entry to 10 peers / entry to 1 peer | {ratio('rps', 'entry to 10 peers', 'entry to 1 peer')} |"
    )
    print(f"| requests/s, entry to 10 peers / direct | {ratio('rps', 'entry to 10 peers', 'direct')} |")
    print(f"| requests/s, entry to 1 peer / direct | {ratio('rps', 'entry to 1 peer', 'direct')} |")
    print(
        f"| requests/s per core, entry to 10 peers / entry to 1 peer | {ratio('rps_per_core', 'entry to 10 peers', 'entry to 1 peer')} |"
    )
    print(
        f"| entry CPU per request, 10 peers / 1 peer | {entry_ratio('entry to 10 peers', 'entry to 1 peer')} |"
    )
    others = median([s.others_agents_core for p in PATHS for s in results[p]])
    print(f"\nOthers' share of the agents' core during the runs: {others:.0%}.")
    print(f"\nRoutes of 500 requests to e0 for echo (10 peers): {dict(sorted(spread.items()))}")
    print(f"Routes of 100 requests to e0 for echo1 (1 peer): {dict(one)}; e0's own replicas: {e0_hosts}")
    cpu_names = sorted({n for p in PATHS for s in results[p] for n in s.cpu_us})
    print("\nCPU µs per request by process (median over rounds):\n")
    print(f"| path | {' | '.join(cpu_names)} |")
    print(f"|---|{'---|' * len(cpu_names)}")
    for path in PATHS:
        cells = [f"{median([s.cpu_us.get(n, 0.0) for s in results[path]]):.0f}" for n in cpu_names]
        print(f"| {path} | {' | '.join(cells)} |")
    sys.stdout.flush()


def memory(proc: psutil.Process) -> dict[str, float]:
    """MiB of RSS, PSS and USS of `proc` and its children, median of three reads half a second apart."""
    reads = []
    for _ in range(3):
        infos = [p.memory_full_info() for p in [proc, *proc.children(recursive=True)]]
        reads.append({k: sum(getattr(i, k) for i in infos) / 2**20 for k in ("rss", "pss", "uss")})
        time.sleep(0.5)
    return {k: median([r[k] for r in reads]) for k in ("rss", "pss", "uss")}


def settle_memory(proc: psutil.Process, limit_s: float = 400.0) -> float:
    """Seconds until `proc`'s PSS grows by under 1 MiB in 20 s (at most `limit_s`).

    The agent dials a member when its probing first reaches it, five a second with the local
    profile, and each connection holds libzmq buffers: its memory is still growing for minutes
    after the members joined, so a snapshot taken at once undercounts them.
    """
    began = time.monotonic()
    last = memory(proc)["pss"]
    while time.monotonic() - began < limit_s:
        time.sleep(20.0)
        now = memory(proc)["pss"]
        if now - last < 1.0:
            break
        last = now
    return time.monotonic() - began


def timed_gets(url: str, count: int) -> tuple[list[float], int]:
    """Milliseconds of `count` sequential GETs of `url` on one connection, and the last body's bytes."""
    times, size = [], 0
    with httpx.Client(timeout=60.0) as client:
        for _ in range(count):
            began = time.perf_counter()
            size = len(client.get(url).content)
            times.append((time.perf_counter() - began) * 1000)
    return times, size


def under_mesh_reads(url: str, count: int) -> list[float]:
    """/health latencies while another client reads /v1/mesh back to back."""
    done = threading.Event()

    def reader() -> None:
        with httpx.Client(timeout=60.0) as client:
            while not done.is_set():
                client.get(f"{url}/v1/mesh")

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(0.2)
    try:
        return timed_gets(f"{url}/health", count)[0]
    finally:
        done.set()
        thread.join()


def paced_gets(url: str, seconds: float, gap_s: float = 0.02) -> list[float]:
    """Milliseconds of GETs of `url` sent every `gap_s` for `seconds`: the longest is the loop's worst stall."""
    times = []
    with httpx.Client(timeout=60.0) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            began = time.perf_counter()
            client.get(url)
            times.append((time.perf_counter() - began) * 1000)
            time.sleep(gap_s)
    return times


def cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def snapshot(proc: psutil.Process, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Memory, idle CPU and API latencies of the agent now."""
    time.sleep(args.settle_s)
    out: dict[str, Any] = memory(proc)
    before, began = cpu_s(proc), time.monotonic()
    time.sleep(args.idle_s)
    out["idle_cpu"] = (cpu_s(proc) - before) / (time.monotonic() - began)
    out["health"], _ = timed_gets(f"{url}/health", 200)
    out["mesh"], out["mesh_bytes"] = timed_gets(f"{url}/v1/mesh", 20)
    out["deployments"], out["deployments_bytes"] = timed_gets(f"{url}/v1/deployments", 10)
    out["health_busy"] = under_mesh_reads(url, 200)
    out["stall"] = paced_gets(f"{url}/health", args.stall_s) if args.stall_s else []
    out["statuses"] = dict(collections.Counter(m["status"] for m in view(url)))
    out["children"] = len(proc.children(recursive=True))
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def stall(times: list[float]) -> str:
    if not times:
        return "-"
    return f"{pct(times, 0.99):.1f} / {max(times):.1f} ({sum(t > 20 for t in times)} of {len(times)})"


def part_b(args: argparse.Namespace, root: Path, started: list[Started]) -> None:
    mesh_id, token = f"bench-footprint-{os.getpid()}", secrets.token_urlsafe(32)
    s, url, mesh = agent("m0", root, args.agents_cpu, mesh_id, token, pythonpath=args.agent_pythonpath)
    started.append(s)
    wait(lambda: bool(view(url)), 60, "the agent", started)
    proc = psutil.Process(s.process.pid)
    stages: dict[str, dict[str, Any]] = {}
    progress("part b: the agent alone")
    stages["alone"] = snapshot(proc, url, args)

    spec = json.dumps({"app": APP, "min_replicas": 0, "max_replicas": 1})
    puts: list[float] = []
    with httpx.Client(timeout=30.0, headers={"content-type": "application/json"}) as client:
        for index in range(args.deployments):
            began = time.perf_counter()
            client.put(f"{url}/v1/deployments/d{index:04d}", content=spec).raise_for_status()
            puts.append((time.perf_counter() - began) * 1000)
    progress(f"part b: {args.deployments} deployments declared")
    stages["+ deployments"] = snapshot(proc, url, args)

    farm_stats = root / "farm.json"
    farm_args = [
        sys.executable, str(FARM), "--agent-http", url.removeprefix("http://"), "--agent-mesh", mesh,
        "--mesh-id", mesh_id, "--count", str(args.members), "--stats", str(farm_stats),
        "--load-changes-per-s", str(args.load_changes_per_s),
        *(["--dial-always"] if args.farm_dials_always else []),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"MESHNODE_TOKEN": token}
    farm = start("farm", farm_args, args.load_cpu, root, env)
    started.append(farm)
    began = time.monotonic()
    while sum(m["status"] == "alive" for m in view(url)) < args.members + 1:
        if farm.process.poll() is not None or time.monotonic() - began > 300:
            raise RuntimeError(f"the farm's members never all joined:\n{farm.log_path.read_text()[-2000:]}")
        time.sleep(1.0)
    joined_s = time.monotonic() - began
    progress(f"part b: {args.members} members in the view after {joined_s:.0f} s")
    settled_s = settle_memory(proc)
    progress(f"part b: the agent's memory stopped growing {settled_s:.0f} s later")
    stages["+ members"] = snapshot(proc, url, args)
    farm_busy = cpu_s(psutil.Process(farm.process.pid)) / (time.monotonic() - began)
    stop([farm])
    started.remove(farm)
    stats = json.loads(farm_stats.read_text()) if farm_stats.exists() else {}

    print(f"\n## (b) One agent with {args.deployments} deployments and {args.members} members\n")
    print(
        "| stage | RSS MiB | PSS MiB | USS MiB | idle CPU | /health p50/p99 ms | /health p99 while /v1/mesh is read "
        "| /v1/mesh p50/max ms | /v1/mesh KiB | /v1/deployments p50/max ms | /v1/deployments KiB "
        f"| /health every 20 ms for {args.stall_s:.0f} s: p99/max ms (> 20 ms) | view |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, st in stages.items():
        print(
            f"| {name} | {st['rss']:.1f} | {st['pss']:.1f} | {st['uss']:.1f} | {st['idle_cpu']:.1%} "
            f"| {pct(st['health'], 0.5):.2f} / {pct(st['health'], 0.99):.2f} | {pct(st['health_busy'], 0.99):.1f} "
            f"| {pct(st['mesh'], 0.5):.1f} / {max(st['mesh']):.1f} | {st['mesh_bytes'] / 1024:.0f} "
            f"| {pct(st['deployments'], 0.5):.1f} / {max(st['deployments']):.1f} | {st['deployments_bytes'] / 1024:.0f} "
            f"| {stall(st['stall'])} | {st['statuses']} |"
        )
    alone, deps, members = stages["alone"], stages["+ deployments"], stages["+ members"]
    print("\n| per unit | RSS KiB | PSS KiB | USS KiB |")
    print("|---|---|---|---|")
    for label, a, b, n in (
        ("per deployment", alone, deps, args.deployments),
        ("per member", deps, members, args.members),
    ):
        print(
            f"| {label} | "
            + " | ".join(f"{(b[k] - a[k]) * 1024 / n:.1f}" for k in ("rss", "pss", "uss"))
            + " |"
        )
    print(
        f"\nDeclaring: {len(puts)} PUTs, p50 {pct(puts, 0.5):.1f} ms, p99 {pct(puts, 0.99):.1f} ms, "
        f"{len(puts) / (sum(puts) / 1000):.0f} per second. Members in the view {joined_s:.0f} s after the farm started; "
        f"the agent's memory stopped growing {settled_s:.0f} s after that. "
        f"Worker processes of the agent: {members['children']}. The farm took {farm_busy:.0%} of its core; "
        f"its counters: {stats}."
    )
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=["a", "b"], default=["a", "b"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration-s", type=int, default=5, help="length of one wrk run (whole seconds)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--peers", type=int, default=10)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--idle-s", type=float, default=20.0, help="how long idle CPU is measured per stage")
    parser.add_argument(
        "--load-changes-per-s",
        type=float,
        default=0.0,
        help="part b: the members' load samples reaching the agent per second (0: a quiet mesh)",
    )
    parser.add_argument(
        "--farm-dials-always",
        action="store_true",
        help="part b: members dial the agent at their first send, as agents did before members shared "
        "one connection per pair: with --agent-pythonpath of such an install, so they act as its peers",
    )
    parser.add_argument("--settle-s", type=float, default=5.0, help="wait before each stage's measurements")
    parser.add_argument(
        "--stall-s", type=float, default=30.0, help="how long /health is read every 20 ms per stage (0: not)"
    )
    parser.add_argument(
        "--agent-pythonpath",
        default="",
        help="part b: run the agent from this build (pip install --no-deps --target DIR CHECKOUT), for a before/after",
    )
    parser.add_argument("--agents-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1, help="CPU for wrk and the member farm")
    args = parser.parse_args()
    if "a" in args.part and shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# meshnode scale of one agent, {os.cpu_count()} cores\n")
    print(f"Command: python {' '.join(sys.argv)}\n\nCommit: {commit()}. Load average before: {load}.")
    print(f"Agents on CPU {args.agents_cpu}; wrk and the member farm on CPU {args.load_cpu}.", flush=True)
    for part in args.part:
        root = Path(tempfile.mkdtemp(prefix=f"meshnode-bench-scale-{part}-"))
        started: list[Started] = []
        try:
            (part_a if part == "a" else part_b)(args, root, started)
        finally:
            stop(started)
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nLoad average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # everything started was already stopped by main's finally

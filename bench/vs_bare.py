"""The echo through meshnode against bare uvicorn alone: bench/vs_ray.py --echo-only.

Issue 19 item 2 asks for the direct path at half of bare uvicorn's requests per second at c = 1 and
c = 32, with at most twice its CPU per request, in the same run. vs_ray.py measures that beside a Ray
Serve cluster whose idle processes share the servers' core (6 % of it, and their caches); this runs
the two alone: agent n1 of the commit given, with one ``echo`` replica (apps/echo.py), and the bare
uvicorn + FastAPI echo (bench/vs_ray_systems.py ``bare``), both pinned to the servers' core, wrk on
the other. Each round measures both at each concurrency, in an order that alternates, and prints
the ratios of that round: requests per second, CPU per request (agent and worker against bare's
one process), and the share of the core that processes outside the benchmark took. Then medians
over rounds. It measures and prints; it never asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from baseline import at_commit, commit_of
from forwarding import agent_args
from procs import Started, free_port, start, wait
from vs_ray_systems import BARE, ECHO_BODY, MESH, posts_ok, start_bare, stop_trees
from wrk import Run, Sample, measure, run_wrk, wrk_script

__all__ = ["echo_only"]


def echo_only(args: argparse.Namespace, root: Path, env: dict[str, str]) -> None:
    """Run the rounds and print their table and medians."""
    started: list[Started] = []
    try:
        mesh_env = env | {"PYTHONPATH": at_commit(root, args.meshnode_commit, "meshnode").env["PYTHONPATH"]}
        ports = {"n1 on http": free_port(), "n1 on mesh": free_port()}
        replica = ["--token", os.urandom(24).hex(), "--deploy", "echo=meshnode.apps.echo:Echo"]
        n1 = start("n1 on", agent_args("n1", "on", ports, root, *replica), args.agents_cpu, root, mesh_env)
        started.append(n1)
        urls = {MESH: f"http://127.0.0.1:{ports['n1 on http']}/v1/predict/echo"}
        wait(lambda: posts_ok(urls[MESH], ECHO_BODY), 120, "n1's echo replica", started)
        urls[BARE] = start_bare(args.agents_cpu, root, env, started)
        own = {MESH: started[:1], BARE: started[1:2]}
        script = root / "echo.lua"
        script.write_text(wrk_script(ECHO_BODY))
        run = Run(args.agents_cpu, args.load_cpu, args.duration_s)
        print(f"# meshnode direct vs bare uvicorn, agents of commit {commit_of(args.meshnode_commit)}\n")
        print(
            f"Servers on CPU {args.agents_cpu}, wrk on CPU {args.load_cpu}; {args.rounds} rounds x {args.duration_s} s.\n"
        )
        for url in urls.values() if args.warmup_s else ():
            run_wrk(url, 32, args.warmup_s, script, args.load_cpu)
        print(
            "| round | c | meshnode / bare: requests/s | CPU per request | meshnode CPU µs (agent + worker) | bare CPU µs | others on the core |"
        )
        print("|---|---|---|---|---|---|---|", flush=True)
        rows: dict[int, list[tuple[float, float]]] = {1: [], 32: []}
        for r in range(args.rounds):
            for c in (1, 32):
                order = (MESH, BARE) if (r + c) % 2 else (BARE, MESH)
                samples: dict[str, Sample] = {
                    p: measure(urls[p], c, script, run, own[p], started) for p in order
                }
                mesh, bare = samples[MESH], samples[BARE]
                rps, cpu = mesh.rps / bare.rps, mesh.cpu_total_us / bare.cpu_total_us
                rows[c].append((rps, cpu))
                others = max(mesh.others_agents_core, bare.others_agents_core)
                parts = " + ".join(f"{v:.0f}" for v in mesh.cpu_us.values())
                print(
                    f"| {r + 1} | {c} | {rps:.2f} | {cpu:.2f}x | {mesh.cpu_total_us:.0f} ({parts}) "
                    f"| {bare.cpu_total_us:.0f} | {others:.0%} |",
                    flush=True,
                )
        print("\nMedians over rounds (item 2 asks requests/s at least 0.5x, CPU per request at most 2x):\n")
        for c, pairs in rows.items():
            rps_median = statistics.median(p[0] for p in pairs)
            cpu_median = statistics.median(p[1] for p in pairs)
            print(f"- c = {c}: requests/s {rps_median:.2f}x bare's, CPU per request {cpu_median:.2f}x")
    finally:
        stop_trees(started)

"""MiniLM embeddings through meshnode against the same model in-process: bench/vs_ray.py --minilm-only.

Issue 19 asks for sentences per second through the mesh at concurrency 32 within 0.9x of the model's
own limit: the same model, in-process, in batches of 32 with the same threads. This runs agent n1
(an ``embed`` replica of apps/embeddings.py, batching 32 within 5 ms) of each commit given, and the
in-process model (bench/vs_ray_systems.py ``minilm``), all pinned to the servers' core; each round
measures every one of them in a rotated order, so each commit's ratio to the model is taken within
one round, and two commits' ratios side by side are a before and after measured in the same run.
With ``--openai`` the requests go to ``POST /v1/embeddings`` (OpenAI's shape) instead of
``/v1/predict/embed``. Per round: sentences per second, the ratio, the ratio per core (the model's CPU per sentence
in-process over the agent's and its workers' through the mesh: what the ratio would be with the
core to themselves, the figure others' load moves least), p50, the mean batch the replica ran (from n1's
``/metrics``), CPU per sentence of the agent, its workers and the in-process model, and the share
of the core that processes outside the benchmark took; then medians over all rounds and over the
quiet ones (others under 10 % in both runs of the round).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import time
from pathlib import Path

import httpx
from baseline import at_commit, commit_of
from procs import Started
from vs_ray_systems import EMBED_BODY, MODEL, SENTENCE, in_process, start_model, start_n1, stop_trees
from wrk import Run, Sample, core_busy_s, cpu_seconds, measure, run_wrk, wrk_script

__all__ = ["minilm_only"]

# A round is quiet when processes outside the benchmark took less than this share of the servers' core
# during both its mesh run and its in-process run: the wall-clock ratio means something only then.
QUIET = 0.1
# The same sentence through OpenAI's route (--openai), as the openai SDK sends it when asked for floats.
OPENAI_BODY = f'{{"model": "embed", "input": "{SENTENCE}", "encoding_format": "float"}}'


def batch_counts(base_url: str) -> tuple[float, float]:
    """The embed replica's batches so far and the requests they held, from the agent's /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    found = {"count": 0.0, "sum": 0.0}
    for line in text.splitlines():
        for kind in found:
            if line.startswith(f'meshnode_batch_size_{kind}{{deployment="embed"}}'):
                found[kind] = float(line.split()[-1])
    return found["count"], found["sum"]


def model_run(model: Started, seconds: int, cpu: int, started: list[Started]) -> Sample:
    """One in-process run (``in_process``), with the share of the core that others took meanwhile."""
    ours_before, busy_before = sum(cpu_seconds(started).values()), core_busy_s(cpu)
    sample = in_process(model, seconds)
    ours, busy = sum(cpu_seconds(started).values()) - ours_before, core_busy_s(cpu) - busy_before
    return dataclasses.replace(sample, others_agents_core=min(1.0, max(0.0, (busy - ours) / sample.seconds)))


def minilm_only(args: argparse.Namespace, root: Path, env: dict[str, str]) -> None:
    """Every commit's agent and the in-process model, round by round, rotated; then the medians."""
    route, body = ("/v1/embeddings", OPENAI_BODY) if args.openai else ("/v1/predict/embed", EMBED_BODY)
    (script := root / "MiniLM.lua").write_text(wrk_script(body))
    commits = [args.meshnode_commit, *args.also_commit]
    started: list[Started] = []
    token = os.urandom(24).hex()
    try:
        bases: dict[str, str] = {}
        agents: dict[str, Started] = {}
        for i, ref in enumerate(commits):
            name = f"c{i}"
            site = at_commit(root, ref, name).env["PYTHONPATH"]
            ports = start_n1(name, root, token, args.agents_cpu, env | {"PYTHONPATH": site}, started)[1]
            bases[name], agents[name] = f"http://127.0.0.1:{ports[f'n1 {name} http']}", started[-1]
        model = start_model(args.agents_cpu, root, env, started)
        run = Run(args.agents_cpu, args.load_cpu, args.duration_s)
        names = {f"c{i}": f"{commit_of(ref)} ({ref})" for i, ref in enumerate(commits)}
        print(f"# MiniLM c=32: meshnode direct vs the model in-process; {', '.join(names.values())}\n")
        print(f"POST {route}; {args.rounds} rounds x {args.duration_s} s, order rotated each round.\n")
        for base in bases.values() if args.warmup_s else ():
            run_wrk(f"{base}{route}", 32, args.warmup_s, script, args.load_cpu)
        print(
            "| round | commit | meshnode sentences/s | in-process | ratio | per core | p50 ms | mean batch "
            "| CPU µs a sentence: agent / its workers / model in-process | others on the core: mesh / model |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
        samples: dict[str, list[Sample]] = {name: [] for name in [*bases, MODEL]}
        ratios: dict[str, list[float]] = {name: [] for name in bases}
        per_core: dict[str, list[float]] = {name: [] for name in bases}
        order = [*bases, MODEL]
        for r in range(args.rounds):
            means: dict[str, float] = {}
            for name in order[r % len(order) :] + order[: r % len(order)]:
                if name == MODEL:
                    samples[name].append(model_run(model, args.duration_s, args.agents_cpu, started))
                    continue
                batches, sentences = batch_counts(bases[name])
                url = f"{bases[name]}{route}"
                samples[name].append(measure(url, 32, script, run, [agents[name]], started))
                time.sleep(1.2)  # the worker reports its batch sizes at most once a second
                after = batch_counts(bases[name])
                means[name] = (after[1] - sentences) / max(after[0] - batches, 1)
            ref = samples[MODEL][-1]
            for name in bases:
                mesh = samples[name][-1]
                ratios[name].append(mesh.rps / ref.rps)
                per_core[name].append(ref.cpu_us["model"] / mesh.cpu_total_us)
                cpu = f"{mesh.cpu_us.get('n1', 0):.0f} / {mesh.cpu_us.get('n1 worker', 0):.0f}"
                print(
                    f"| {r + 1} | {names[name]} | {mesh.rps:.1f} | {ref.rps:.1f} | {ratios[name][-1]:.3f} "
                    f"| {per_core[name][-1]:.3f} | {mesh.p50_ms:.0f} | {means[name]:.1f} "
                    f"| {cpu} / {ref.cpu_us['model']:.0f} "
                    f"| {mesh.others_agents_core:.0%} / {ref.others_agents_core:.0%} |",
                    flush=True,
                )
        model_rps = statistics.median(s.rps for s in samples[MODEL])
        for name in bases:
            rps = statistics.median(s.rps for s in samples[name])
            print(
                f"| median | {names[name]} | {rps:.1f} | {model_rps:.1f} "
                f"| {statistics.median(ratios[name]):.3f} | {statistics.median(per_core[name]):.3f} | | | | |"
            )
        for name in bases:
            quiet = [
                i
                for i, (a, b) in enumerate(zip(samples[name], samples[MODEL], strict=True))
                if max(a.others_agents_core, b.others_agents_core) < QUIET
            ]
            if quiet:
                print(
                    f"| median of the {len(quiet)} quiet rounds ({', '.join(str(i + 1) for i in quiet)}) "
                    f"| {names[name]} | {statistics.median(samples[name][i].rps for i in quiet):.1f} "
                    f"| {statistics.median(samples[MODEL][i].rps for i in quiet):.1f} "
                    f"| {statistics.median(ratios[name][i] for i in quiet):.3f} "
                    f"| {statistics.median(per_core[name][i] for i in quiet):.3f} | | | | |"
                )
        errors = {names[n]: sum(s.errors for s in samples[n]) for n in bases}
        print(f"\nErrors (non-2xx or socket): {errors}.")
    finally:
        stop_trees(started)
        shutil.rmtree(root, ignore_errors=True)

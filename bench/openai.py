"""Chat through the OpenAI-compatible API and a hop, against the same model called in-process.

Usage:  python bench/openai.py [--requests 30] [--max-tokens 32] [--concurrency 1 8 32]
                               [--rounds 3] [--model DIR]

The model is the text-generation app (``meshnode.apps.text_generation``; the tiny offline language
model unless ``--model`` names a checkpoint folder), greedy, ``--max-tokens`` tokens per answer.

- Part A, one stream at a time: time to first token (TTFT) and tokens per second of a streamed chat
  completion, (1) in-process: the app's ``async_predict`` called in this process, and (2) through a
  hop: ``POST /v1/chat/completions`` with ``stream: true`` to agent n0, which hosts nothing and
  forwards to n1's replica (read as Server-Sent Events; the first content chunk is the first token).
  The hop's client is a process of its own (``--hop-client``, httpx's plain client, as the ``openai``
  SDK uses): measured from this process, which holds two models and their engine threads, an HTTP
  client's own time grew by 5-15 ms and swamped what the hop adds. Printed: the p50 of each, and
  their difference (target: at most 2 ms more through the hop).
- Part B, throughput: completion tokens per second with ``c`` streams at once, ``c`` in
  ``--concurrency``, batched (``max_batch_size`` 32) against unbatched (1), in-process and through
  the hop (two meshes: the replica's batching set by ``MESHNODE_LM_MAX_BATCH``). Target: batched at
  c = 32 at least 3x unbatched.

Part A runs first, with only the batch-32 mesh and engine up, the two paths alternating in blocks of
``--requests``; Part B brings the unbatched pair up after it. Medians over rounds are printed. It measures and prints; it never
asserts. The machine is shared and noisy: compare within a run. (This file never imports the
``openai`` package, which its name would shadow for scripts run from this folder.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from procs import Started, free_port, start, stop, wait

# As the agent runs its workers (node/serving/worker_process.py), so the in-process engine here and
# the workers' idle OpenMP threads sleep instead of spinning beside each other.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEPLOYMENT = "chat"
APP = "meshnode.apps.text_generation:TextGeneration"
BATCH_ENV = "MESHNODE_LM_MAX_BATCH"
MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Say something about meshes of machines."},
]


@dataclass
class Stream:
    """One streamed answer: seconds to its first token and in all, and its tokens."""

    first_s: float
    total_s: float
    tokens: int

    @property
    def tokens_per_s(self) -> float:
        """Tokens after the first, per second after the first (the decoding rate)."""
        return (self.tokens - 1) / max(self.total_s - self.first_s, 1e-9)


def request_body(max_tokens: int, index: int) -> dict[str, object]:
    """The predictor's chat body (the contract of the OpenAI layer), greedy, ignoring stop tokens."""
    messages = [*MESSAGES[:-1], {"role": "user", "content": f"{MESSAGES[-1]['content']} ({index})"}]
    return {
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,  # every answer exactly max_tokens long, as vLLM's benchmarks do
        "stream": True,
    }


async def timed(pieces: AsyncIterator[str]) -> Stream:
    """Time a stream of text pieces (each a token)."""
    began = time.perf_counter()
    first = 0.0
    tokens = 0
    async for piece in pieces:
        if piece:
            tokens += 1
            if tokens == 1:
                first = time.perf_counter() - began
    return Stream(first, time.perf_counter() - began, tokens)


# -- in-process ------------------------------------------------------------------------------


def load_app(model: Path | None, max_batch_size: int) -> object:
    """The app, set up in this process."""
    from meshnode.apps.text_generation import TextGeneration

    app = TextGeneration(model=model, max_batch_size=max_batch_size)
    app.setup()
    return app


async def in_process(app: object, max_tokens: int, index: int) -> Stream:
    async def pieces() -> AsyncIterator[str]:
        async for piece in app.async_predict(request_body(max_tokens, index)):  # type: ignore[attr-defined]
            yield piece.get("text", "")

    return await timed(pieces())


# -- through a hop ---------------------------------------------------------------------------


def start_mesh(root: Path, model: Path | None, max_batch_size: int) -> tuple[list[Started], str]:
    """n1 hosting the chat replica, n0 seeded from it and hosting nothing; n0's base URL."""
    ports = {name: free_port() for name in ("n0h", "n0m", "n1h", "n1m")}
    mesh_id = f"bench-openai-{max_batch_size}-{os.getpid()}"
    env = {**os.environ, BATCH_ENV: str(max_batch_size)}
    if model is not None:
        env["MESHNODE_LM_MODEL"] = str(model)

    def join(name: str, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "meshnode", "join", "--name", name, "--profile", "local", "--no-mdns",
            "--http", f"127.0.0.1:{ports[name + 'h']}", "--mesh", f"127.0.0.1:{ports[name + 'm']}",
            "--data", "127.0.0.1:0", "--data-dir", str(root / f"{name}-{max_batch_size}"),
            "--mesh-id", mesh_id, "--log-level", "warning", *extra,
        ]  # fmt: skip

    n1 = start(f"n1 batch {max_batch_size}", join("n1", "--deploy", f"{DEPLOYMENT}={APP}"), 1, root, env)
    n0 = start(f"n0 batch {max_batch_size}", join("n0", "--seed", f"127.0.0.1:{ports['n1m']}"), 0, root, env)
    return [n1, n0], f"http://127.0.0.1:{ports['n0h']}"


def forwarded(base: str) -> bool:
    """Whether n0 answers a chat completion through n1."""
    body = {"model": DEPLOYMENT, "messages": MESSAGES, "max_tokens": 1}
    try:
        response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.headers.get("x-mesh-route") == "n0,n1"


async def through_hop(client: httpx.AsyncClient, base: str, max_tokens: int, index: int) -> Stream:
    body = {**request_body(max_tokens, index), "model": DEPLOYMENT}

    async def pieces() -> AsyncIterator[str]:
        async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                for choice in json.loads(line[6:]).get("choices", ()):
                    yield choice.get("delta", {}).get("content") or ""

    return await timed(pieces())


# -- the runs --------------------------------------------------------------------------------


async def concurrent(run: object, concurrency: int, requests: int) -> float:
    """Completion tokens per second with `concurrency` streams at once, `requests` in all."""
    queue = list(range(requests))
    total = 0

    async def client() -> None:
        nonlocal total
        while queue:
            # Awaited first: `total += await ...` would read `total` before the await and lose updates.
            tokens = (await run(queue.pop())).tokens  # type: ignore[operator]
            total += tokens

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return total / (time.perf_counter() - began)


class HopClient:
    """The Part A hop client: this script in ``--hop-client`` mode, one request per line asked."""

    def __init__(self, base: str, max_tokens: int) -> None:
        command = [sys.executable, __file__, "--hop-client", base, "--max-tokens", str(max_tokens)]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, index: int) -> Stream:
        """One streamed chat completion through the hop; blocks until it has ended."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(f"{index}\n")
        self._process.stdin.flush()
        return Stream(**json.loads(self._process.stdout.readline()))

    def close(self) -> None:
        """End the client process."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=30)


def hop_client(base: str, max_tokens: int) -> None:
    """``--hop-client`` mode: for each index read on stdin, one timed stream; its JSON on stdout."""
    with httpx.Client(timeout=120) as client:
        for line in sys.stdin:
            body = {**request_body(max_tokens, int(line)), "model": DEPLOYMENT}
            began, first, tokens = time.perf_counter(), 0.0, 0
            with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                for text in response.iter_lines():
                    if not text.startswith("data: ") or text == "data: [DONE]":
                        continue
                    for choice in json.loads(text[6:]).get("choices", ()):
                        if choice.get("delta", {}).get("content"):
                            tokens += 1
                            first = first or time.perf_counter() - began
            total = time.perf_counter() - began
            print(json.dumps({"first_s": first, "total_s": total, "tokens": tokens}), flush=True)


def main() -> None:
    """Run parts A and B and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hop-client", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None, help="a checkpoint folder (default: tiny)")
    args = parser.parse_args()
    if args.hop_client is not None:
        hop_client(args.hop_client, args.max_tokens)
        return
    first: dict[str, list[float]] = {"in-process": [], "hop": []}
    rate: dict[str, list[float]] = {"in-process": [], "hop": []}
    throughput: dict[tuple[str, int, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="meshnode-bench-openai-") as temporary:
        root = Path(temporary)
        meshes: dict[int, tuple[list[Started], str]] = {}
        started: list[Started] = []
        apps: dict[int, object] = {}

        def bring_up(batch: int) -> None:
            """The mesh and the in-process engine of batch size `batch`, ready to answer."""
            meshes[batch] = start_mesh(root, args.model, batch)
            started.extend(meshes[batch][0])
            apps[batch] = load_app(args.model, batch)
            wait(lambda: forwarded(meshes[batch][1]), 300, "a chat answer through the hop", started)

        try:
            # Part A with only what it measures running: the batch-32 mesh and engine. The unbatched
            # pair of Part B comes up after it (four idle agents and two idle engines beside a
            # request cost it 1-3 ms of scheduling on two cores).
            bring_up(32)
            hop = HopClient(meshes[32][1], args.max_tokens)

            async def part_a() -> None:
                # The two paths alternate in blocks of --requests: each block runs with its own
                # processes' caches warm, as a client's steady stream would (request by request,
                # each path evicted the other's model and both slowed by 1-3 ms).
                for _ in range(args.rounds):
                    in_process_block = [
                        await in_process(apps[32], args.max_tokens, i) for i in range(args.requests)
                    ]
                    hop_block = [await asyncio.to_thread(hop.run, i) for i in range(args.requests)]
                    for name, measured in (("in-process", in_process_block), ("hop", hop_block)):
                        first[name].append(statistics.median(s.first_s for s in measured))
                        rate[name].append(statistics.median(s.tokens_per_s for s in measured))

            asyncio.run(part_a())
            hop.close()
            bring_up(1)

            async def part_b() -> None:
                async with httpx.AsyncClient(timeout=120) as client:
                    paths: dict[str, Callable[..., Awaitable[Stream]]] = {
                        "in-process": lambda i, b=32: in_process(apps[b], args.max_tokens, i),
                        "hop": lambda i, b=32: through_hop(client, meshes[b][1], args.max_tokens, i),
                    }
                    for _ in range(args.rounds):
                        for name, run in paths.items():
                            for batch in (32, 1):
                                for c in args.concurrency:
                                    runner = lambda i, b=batch, r=run: r(i, b)  # noqa: E731
                                    measured_tps = await concurrent(runner, c, max(args.requests, 2 * c))
                                    throughput.setdefault((name, batch, c), []).append(measured_tps)

            asyncio.run(part_b())
        finally:
            for app in apps.values():
                app.close()  # type: ignore[attr-defined]  # its engine thread, before the interpreter exits
            stop(started)
    print(f"\nPart A: one stream at a time, {args.max_tokens} tokens, medians over {args.rounds} rounds")
    print("| path | TTFT p50 ms | tokens/s after the first |\n|---|---|---|")
    for name in ("in-process", "hop"):
        print(
            f"| {name} | {1000 * statistics.median(first[name]):.2f} | {statistics.median(rate[name]):.0f} |"
        )
    extra_ms = 1000 * (statistics.median(first["hop"]) - statistics.median(first["in-process"]))
    per_round = ", ".join(
        f"{1000 * (h - i):+.2f}" for i, h in zip(first["in-process"], first["hop"], strict=True)
    )
    print(f"\nthe hop adds {extra_ms:.2f} ms to the time to first token at p50 (target <= 2 ms)")
    print(f"round by round (hop - in-process, ms): {per_round}")
    print("\nPart B: completion tokens per second, batched (32) vs unbatched (1)")
    print("| path | c | batched | unbatched | ratio |\n|---|---|---|---|---|")
    for name in ("in-process", "hop"):
        for c in args.concurrency:
            batched = statistics.median(throughput[(name, 32, c)])
            unbatched = statistics.median(throughput[(name, 1, c)])
            print(f"| {name} | {c} | {batched:.0f} | {unbatched:.0f} | {batched / unbatched:.2f}x |")


if __name__ == "__main__":
    main()

"""The floor of a hop in Python: what forwarding one request must cost, beside nginx's and meshnode's hops.

Issue 19 item 3 asks meshnode's hop to add at most 0.15 ms at p50. This measures, in one run, how
close a forwarder written in Python can come on this machine, so the target is judged against what
the language and the machine allow rather than against nginx alone:

- ``python direct``: uvicorn (uvloop, httptools) serving a bare ASGI echo, ``{"echo": body}``.
- ``python hop``: the same ASGI app in a second uvicorn, which sends each body as one frame over one
  long-lived TCP connection to a backend process (uvloop, an ``asyncio.Protocol``) that answers the
  echo. Frames are sealed with ChaCha20-Poly1305 (``cryptography``) as a secure data plane must; there
  is no routing, deadline, retry or metric: nothing but the hop.
- ``nginx hop``: nginx ``proxy_pass`` (keepalive upstream) in front of ``python direct``.
- ``meshnode direct`` and ``meshnode hop``: agent n1 with one ``echo`` replica, and agent n0 forwarding
  to it, security on (bench/forwarding.py measures them in more detail).

Every server runs on ``--agents-cpu`` (the hops' entries on ``--entry-cpu`` when given), wrk on
``--load-cpu``; each round runs every path at c = 1 and c = 32, in an order that rotates. It prints,
per path, latency, requests per second and the CPU per request of each process that serves it, then
for each hop what it adds against its own direct path. It measures and prints; it never asserts.

    python bench/hop_floor.py --rounds 4
    python bench/hop_floor.py --rounds 4 --entry-cpu 1

The servers of the Python paths are this file too (``serve echo|forward|backend``).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import functools
import os
import secrets
import shutil
import statistics
import struct
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' helpers, also when loaded by path

from forwarding import agent_args, replica_ready
from nginx import start_nginx
from procs import Started, commit, free_port, progress, start, stop, wait
from vs_ray_systems import ECHO_BODY, posts_ok, server_env
from wrk import Run, Sample, measure, run_wrk, wrk_script

# A frame: length of what follows the header, request id; then the sealed body (nonce = counter).
HEADER = struct.Struct("!II")
PATHS = ("python direct", "python hop", "nginx hop", "meshnode direct", "meshnode hop")
HOPS = (("python hop", "python direct"), ("nginx hop", "python direct"), ("meshnode hop", "meshnode direct"))
# Which started processes serve each path (their CPU per request is counted).
SERVERS = {
    "python direct": ("echo",),
    "python hop": ("forward", "backend"),
    "nginx hop": ("nginx", "echo"),
    "meshnode direct": ("n1",),
    "meshnode hop": ("n0", "n1"),
}

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Sealer:
    """ChaCha20-Poly1305 with a counter nonce, one per direction of the connection."""

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        self._aead = ChaCha20Poly1305(key)
        self._sent = 0

    def seal(self, data: bytes) -> bytes:
        self._sent += 1
        return self._aead.encrypt(self._sent.to_bytes(12, "big"), data, None)

    def open(self, nonce: int, data: bytes) -> bytes:
        return self._aead.decrypt(nonce.to_bytes(12, "big"), data, None)


class Framed(asyncio.Protocol, metaclass=abc.ABCMeta):
    """Length-prefixed sealed frames in; `on_frame(request_id, body)` for each."""

    def __init__(self, key: bytes) -> None:
        self.buffer = bytearray()
        self.sealer = Sealer(key)
        self.received = 0
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= HEADER.size:
            length, rid = HEADER.unpack_from(self.buffer)
            end = HEADER.size + length
            if len(self.buffer) < end:
                return
            self.received += 1
            body = self.sealer.open(self.received, bytes(self.buffer[HEADER.size : end]))
            del self.buffer[:end]
            self.on_frame(rid, body)

    def write_frame(self, rid: int, body: bytes) -> None:
        sealed = self.sealer.seal(body)
        self.transport.write(HEADER.pack(len(sealed), rid) + sealed)

    @abc.abstractmethod
    def on_frame(self, rid: int, body: bytes) -> None:
        """One frame's request id and opened body: the backend answers it, the entry's link matches it."""


class Backend(Framed):
    """The serving side of the Python hop: answers each frame with the echo."""

    def on_frame(self, rid: int, body: bytes) -> None:
        self.write_frame(rid, echo_of(body))


class Link(Framed):
    """The entry's side: one call per request, its answer matched by request id."""

    def __init__(self, key: bytes) -> None:
        super().__init__(key)
        self.waiting: dict[int, asyncio.Future[bytes]] = {}
        self.next_id = 0

    def on_frame(self, rid: int, body: bytes) -> None:
        future = self.waiting.pop(rid, None)
        if future is not None and not future.done():
            future.set_result(body)

    def call(self, body: bytes) -> asyncio.Future[bytes]:
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        future = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = future
        self.write_frame(self.next_id, body)
        return future


def echo_of(body: bytes) -> bytes:
    import orjson

    return orjson.dumps({"echo": orjson.loads(body)})


def asgi_app(
    backend_port: int | None, key: bytes
) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    """The echo as a bare ASGI app: answered here, or (with `backend_port`) by the backend over one link."""
    link: Link | None = None
    headers = [(b"content-type", b"application/json")]

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        nonlocal link
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                if backend_port is not None:
                    loop = asyncio.get_running_loop()
                    _, link = await loop.create_connection(lambda: Link(key), "127.0.0.1", backend_port)
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        answer = echo_of(body) if link is None else await link.call(body)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def serve(role: str, port: int, backend_port: int | None, key: bytes) -> None:
    """Run one server of the Python paths until killed."""
    import uvloop

    if role == "backend":

        async def backend() -> None:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(lambda: Backend(key), "127.0.0.1", port)
            await server.serve_forever()

        uvloop.run(backend())
        return
    import uvicorn

    app = asgi_app(backend_port if role == "forward" else None, key)
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", lifespan="on",
        log_level="warning", access_log=False,
    )  # fmt: skip


def start_all(args: argparse.Namespace, root: Path, started: list[Started]) -> dict[str, str]:
    """Every server, pinned, added to `started` as it starts (so a failure stops it too); the URL of
    each path once it answers."""
    entry = args.agents_cpu if args.entry_cpu is None else args.entry_cpu
    key = secrets.token_hex(32)
    env = server_env()
    ports = {p: free_port() for p in ("echo", "forward", "backend", "nginx")}
    ports |= {f"{n} on {kind}": free_port() for n in ("n0", "n1") for kind in ("http", "mesh")}
    this = [sys.executable, __file__, "serve"]
    started.append(start("echo", [*this, "echo", str(ports["echo"]), "0", key], args.agents_cpu, root, env))
    backend = [*this, "backend", str(ports["backend"]), "0", key]
    started.append(start("backend", backend, args.agents_cpu, root, env))
    wait(functools.partial(posts_ok, f"http://127.0.0.1:{ports['echo']}/", ECHO_BODY), 60, "echo", started)
    forward = [*this, "forward", str(ports["forward"]), str(ports["backend"]), key]
    started.append(start("forward", forward, entry, root, env))
    echo = {"echo": [f"127.0.0.1:{ports['echo']}"]}
    started.append(start_nginx(root, ports["nginx"], echo, {"/": "http://echo"}, entry))
    token = ["--token", secrets.token_urlsafe(32)]
    n1 = agent_args("n1", "on", ports, root, *token, "--deploy", "echo=meshnode.apps.echo:Echo")
    started.append(start("n1 on", n1, args.agents_cpu, root, env))
    n0 = agent_args("n0", "on", ports, root, *token, "--seed", f"127.0.0.1:{ports['n1 on mesh']}")
    started.append(start("n0 on", n0, entry, root, env))
    n0_url, n1_url = (f"http://127.0.0.1:{ports[f'{n} on http']}" for n in ("n0", "n1"))
    wait(functools.partial(replica_ready, n0_url), 120, "n0 to see n1's echo replica ready", started)
    urls = {
        "python direct": f"http://127.0.0.1:{ports['echo']}/",
        "python hop": f"http://127.0.0.1:{ports['forward']}/",
        "nginx hop": f"http://127.0.0.1:{ports['nginx']}/",
        "meshnode direct": f"{n1_url}/v1/predict/echo",
        "meshnode hop": f"{n0_url}/v1/predict/echo",
    }
    for path, url in urls.items():
        wait(functools.partial(posts_ok, url, ECHO_BODY), 60, f"a 200 on the {path} path", started)
    return urls


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(results: dict[tuple[str, int], list[Sample]], args: argparse.Namespace) -> None:
    print(f"\n## Each path (medians of {args.rounds} rounds of {args.duration_s} s)\n")
    print("| path | c | p50 ms | p99 ms | requests/s | CPU µs per request (per process) |")
    print("|---|---|---|---|---|---|")
    for c in (1, 32):
        for path in PATHS:
            samples = results[(path, c)]
            parts = {name: median([s.cpu_us.get(name, 0.0) for s in samples]) for name in samples[0].cpu_us}
            each = ", ".join(f"{name} {value:.0f}" for name, value in parts.items())
            print(
                f"| {path} | {c} | {median([s.p50_ms for s in samples]):.3f} | "
                f"{median([s.p99_ms for s in samples]):.2f} | {median([s.rps for s in samples]):.0f} | "
                f"{median([s.cpu_total_us for s in samples]):.0f} ({each}) |"
            )
    print("\n## Each hop against its direct path (median of per-round figures, range in brackets)\n")
    print(
        "| hop | p50 added at c=1, ms | CPU added at c=1, µs | requests/s at c=32 / direct | CPU added at c=32, µs |"
    )
    print("|---|---|---|---|---|")

    def paired(hop: str, direct: str, c: int, value: Callable[[Sample, Sample], float], digits: int) -> str:
        values = [value(h, d) for h, d in zip(results[(hop, c)], results[(direct, c)], strict=True)]
        return f"{median(values):.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"

    for hop, direct in HOPS:
        cells = [
            paired(hop, direct, 1, lambda h, d: h.p50_ms - d.p50_ms, 3),
            paired(hop, direct, 1, lambda h, d: h.cpu_total_us - d.cpu_total_us, 0),
            paired(hop, direct, 32, lambda h, d: h.rps / d.rps, 2),
            paired(hop, direct, 32, lambda h, d: h.cpu_total_us - d.cpu_total_us, 0),
        ]
        print(f"| {hop} | {' | '.join(cells)} |")
    others = max(s.others_agents_core for samples in results.values() for s in samples)
    print(f"\nProcesses outside the benchmark took at most {others:.0%} of the servers' core in any run.")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        role, port, backend_port, key = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        serve(role, port, backend_port or None, bytes.fromhex(key))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration-s", type=int, default=3, help="length of one wrk run (whole seconds)")
    parser.add_argument("--agents-cpu", type=int, default=0, help="CPU for every server")
    parser.add_argument("--entry-cpu", type=int, help="CPU for the hops' entries (default: --agents-cpu)")
    parser.add_argument("--load-cpu", type=int, default=1, help="CPU for wrk")
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y nginx wrk util-linux")
    root = Path(tempfile.mkdtemp(prefix="meshnode-bench-hop-floor-"))
    script = root / "post.lua"
    script.write_text(wrk_script(ECHO_BODY))
    started: list[Started] = []
    try:
        urls = start_all(args, root, started)
        own = {path: [s for s in started if s.name.split()[0] in SERVERS[path]] for path in PATHS}
        entry = "" if args.entry_cpu is None else f", the hops' entries on CPU {args.entry_cpu}"
        print(f"# The floor of a hop in Python, at {commit()}, {os.cpu_count()} cores\n")
        print(f"Servers on CPU {args.agents_cpu}{entry}; wrk on CPU {args.load_cpu}.")
        for url in urls.values():
            run_wrk(url, 32, 2, script, args.load_cpu)
        run = Run(args.agents_cpu, args.load_cpu, args.duration_s)
        results: dict[tuple[str, int], list[Sample]] = {(p, c): [] for p in PATHS for c in (1, 32)}
        for r in range(args.rounds):
            order = PATHS[r % len(PATHS) :] + PATHS[: r % len(PATHS)]
            for c in (1, 32):
                for path in order:
                    results[(path, c)].append(measure(urls[path], c, script, run, own[path], started))
            progress(f"round {r + 1} of {args.rounds} done")
        report(results, args)
    finally:
        stop(started)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

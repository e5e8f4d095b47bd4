"""A seeded TCP delay proxy, for latency between namespaces on a kernel without ``tc netem``.

    python tests/netns/chaos_delay.py --port 7999 --remote 10.250.7.3 --remote 10.250.7.4 \\
        --delay-s 0.010 [--jitter-s 0.002] [--seed 1] [--ready-file PATH]

Run inside a host namespace, it installs an nftables table there whose ``output`` hook redirects
every TCP connection this host opens to a ``--remote`` address into the proxy (``redirect``), and
the proxy, which learns the real destination from ``SO_ORIGINAL_DST``, connects there itself.
Its own connections carry a firewall mark (``SO_MARK``) that the table lets through, so they are
not redirected again. Every byte is held ``--delay-s`` in each direction (plus a jitter drawn from
``--seed``, order kept), and so is the connection's opening, as the SYN would be: a connection from
this host to a remote one sees a round trip of twice the delay. Run one per host of one region,
naming the other region's addresses, and connections from either side cross the distance.

Logs one line per connection relayed. Stops on SIGTERM or SIGINT, deleting its table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import socket
import struct
import subprocess
import sys

# From <linux/netfilter_ipv4.h>: the address a redirected connection was originally sent to.
SO_ORIGINAL_DST = 80
# The firewall mark of the proxy's own connections (any value no other rule here uses).
MARK = 0x6D6E
TABLE = "meshnode_delay"
CHUNK_BYTES = 1 << 16


class Delay:
    """When each chunk may go out: the delay, plus seeded jitter, never before the previous chunk."""

    def __init__(self, delay_s: float, jitter_s: float, rng: random.Random) -> None:
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.rng = rng

    def due(self, now: float, previous: float) -> float:
        """The time a chunk read at ``now`` leaves, after one that left at ``previous``."""
        return max(previous, now + self.delay_s + self.rng.uniform(0.0, self.jitter_s))


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: Delay) -> None:
    """Copy ``reader`` to ``writer``, each chunk held until its due time; end with the stream."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        last = 0.0
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(CHUNK_BYTES):
                last = delay.due(loop.time(), last)
                queue.put_nowait((last, chunk))
        queue.put_nowait((delay.due(loop.time(), last), b""))

    reading = asyncio.create_task(read())
    try:
        while True:
            due, chunk = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    finally:
        reading.cancel()
        writer.close()


async def relay(
    delay: Delay, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
) -> None:
    """Connect to where the client meant to go, after the delay, and copy both ways."""
    loop = asyncio.get_running_loop()
    raw = client_writer.get_extra_info("socket").getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack("!2xH4s8x", raw)
    target = (socket.inet_ntoa(packed), port)
    upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    upstream.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
    upstream.setblocking(False)
    try:
        await asyncio.sleep(delay.due(loop.time(), 0.0) - loop.time())
        await loop.sock_connect(upstream, target)
    except OSError as exc:
        # Refused or unreachable there: the client sees its connection closed, as after a RST.
        print(f"cannot reach {target[0]}:{target[1]}: {exc}", flush=True)
        upstream.close()
        client_writer.close()
        return
    print(f"relaying to {target[0]}:{target[1]}", flush=True)
    upstream_reader, upstream_writer = await asyncio.open_connection(sock=upstream)
    await asyncio.gather(
        pump(client_reader, upstream_writer, delay),
        pump(upstream_reader, client_writer, delay),
        return_exceptions=True,
    )


def nft(script: str) -> None:
    """Run an nft script in this namespace, exiting with its error if it fails."""
    result = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"nft failed: {result.stderr.strip()}\n{script}")


def install(port: int, remotes: list[str]) -> None:
    """Redirect this host's TCP connections to ``remotes`` into the proxy, its own excepted."""
    nft(
        f"""table ip {TABLE}
delete table ip {TABLE}
table ip {TABLE} {{
  chain output {{
    type nat hook output priority -100; policy accept;
    meta mark {MARK} return
    ip daddr {{ {", ".join(remotes)} }} meta l4proto tcp redirect to :{port}
  }}
}}
"""
    )


async def main(arguments: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT, then delete the table."""
    delay = Delay(arguments.delay_s, arguments.jitter_s, random.Random(arguments.seed))
    server = await asyncio.start_server(
        lambda reader, writer: relay(delay, reader, writer), "127.0.0.1", arguments.port
    )
    install(arguments.port, arguments.remote)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if arguments.ready_file:
        open(arguments.ready_file, "w").close()
    try:
        await stop.wait()
    finally:
        nft(f"table ip {TABLE}\ndelete table ip {TABLE}\n")
        server.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True, help="where the proxy listens, on 127.0.0.1")
    parser.add_argument("--remote", action="append", required=True, help="an address across the distance")
    parser.add_argument("--delay-s", type=float, required=True, help="one way, each direction")
    parser.add_argument("--jitter-s", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ready-file", default="")
    arguments = parser.parse_args(argv)
    if arguments.delay_s < 0 or arguments.jitter_s < 0:
        parser.error("--delay-s and --jitter-s must not be negative")
    return arguments


if __name__ == "__main__":
    asyncio.run(main(parse()))

"""A data-plane round trip over ZeroMQ CURVE beside the same over a sealed link, in one run.

Issue 19 item 3: the data plane moves from ZeroMQ (a CURVE DEALER per peer, a ROUTER per node, read
from the event loop by ``FrameReader``, encrypted in libzmq's I/O threads) to sealed links
(``node/dataplane/sealed_stream.py``: AES-GCM frames on one TCP connection, read and written by
the event loop itself). This measures what one round trip of a small frame costs each way, both
ends in one process on one core (``--cpu``), so that the CPU of ZeroMQ's I/O threads counts:

- ``c = 1``: one frame out, its echo back, the next only then (a lone request's hop);
- ``window 32``: 32 frames outstanding at all times (a busy link).

Per transport and round it prints microseconds per round trip (wall) and CPU per round trip
(every thread of the process), then the medians and the ratio sealed / ZeroMQ. It measures and
prints; it never asserts.

    python bench/sealed_link.py --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import uvloop
import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from meshnode.dataplane.frames import FrameReader
from meshnode.dataplane.sealed_listener import SealedListener, connect
from meshnode.dataplane.sealed_stream import SealedStream, StreamLimits
from meshnode.trust.keyring import derive_key
from meshnode.trust.sealed import ClientHandshake, ServerKeys

TOKEN = "bench-" + "t" * 40
PAYLOAD = b"x" * 200  # about a small request's envelope
Trip = Callable[[], Awaitable[None]]


class Echoes:
    """Counts echoes back and wakes whoever waits for the n-th."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done: asyncio.Future[None] | None = None

    def arrived(self) -> None:
        self.count += 1
        if self.done is not None and self.count >= self.target and not self.done.done():
            self.done.set_result(None)

    async def until(self, target: int) -> None:
        self.target = target
        if self.count < target:
            self.done = asyncio.get_running_loop().create_future()
            await self.done


async def drive(send: Callable[[], None], echoes: Echoes, trips: int, window: int) -> tuple[float, float]:
    """`trips` round trips with `window` outstanding; (wall, CPU) per trip in microseconds."""
    echoes.count = 0
    wall, cpu = time.perf_counter(), time.process_time()
    sent = 0
    for _ in range(min(window, trips)):
        send()
        sent += 1
    while sent < trips:
        await echoes.until(sent - window + 1)
        send()
        sent += 1
    await echoes.until(trips)
    return (time.perf_counter() - wall) / trips * 1e6, (time.process_time() - cpu) / trips * 1e6


def serving_context() -> zmq.Context[zmq.Socket[bytes]]:
    """A context as the ZeroMQ data plane made them (up to 785d8d5): its I/O thread under SCHED_BATCH."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ctx.set(zmq.THREAD_SCHED_POLICY, os.SCHED_BATCH)
    return ctx


class ClientCheck:
    """ZAP: admits the one client key derived from the token, as the ZeroMQ data plane did."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], public: bytes) -> None:
        self._public = public
        self._authenticator = ThreadAuthenticator(ctx)
        self._authenticator.start()
        self._authenticator.configure_curve_callback(domain="*", credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self._public

    def stop(self) -> None:
        self._authenticator.stop()


async def zmq_pair() -> tuple[Callable[[], None], Echoes, Callable[[], None]]:
    """A CURVE DEALER and ROUTER as the ZeroMQ data plane set them up; (send, echoes, close)."""
    server_ctx, client_ctx = serving_context(), serving_context()
    public, secret = zmq.curve_keypair()
    client_secret = z85.encode(derive_key(TOKEN, b"data plane curve client"))
    client_public = zmq.curve_public(client_secret)
    check = ClientCheck(server_ctx, client_public)
    router = server_ctx.socket(zmq.ROUTER)
    router.curve_server = True
    router.curve_secretkey, router.curve_publickey = secret, public
    port = router.bind_to_random_port("tcp://127.0.0.1")
    router_reader = FrameReader(router, lambda frames: router_reader.send(frames))
    dealer = client_ctx.socket(zmq.DEALER)
    dealer.curve_serverkey = public
    dealer.curve_publickey, dealer.curve_secretkey = client_public, client_secret
    dealer.connect(f"tcp://127.0.0.1:{port}")
    echoes = Echoes()
    dealer_reader = FrameReader(dealer, lambda _frames: echoes.arrived())
    dealer_reader.send([PAYLOAD])  # the handshake, then one echo
    await echoes.until(1)

    def close() -> None:
        dealer_reader.close()
        router_reader.close()
        check.stop()
        client_ctx.term()
        server_ctx.term()

    return lambda: dealer_reader.send([PAYLOAD]) and None, echoes, close


async def sealed_pair() -> tuple[Callable[[], None], Echoes, Callable[[], None]]:
    """A sealed link and its listener; (send, echoes, close)."""
    public, secret = zmq.curve_keypair()
    limits = StreamLimits(max_frame_bytes=1 << 20)

    def echo(stream: SealedStream, payload: bytes) -> None:
        stream.send(payload)

    listener = SealedListener(ServerKeys(z85.decode(secret), [TOKEN]), limits, echo)
    port = await listener.listen("127.0.0.1", 0)
    echoes = Echoes()
    dialing = ClientHandshake(TOKEN, z85.decode(public))
    stream = await connect("127.0.0.1", port, dialing, limits, lambda _s, _p: echoes.arrived())

    def close() -> None:
        stream.close()
        asyncio.get_running_loop().create_task(listener.close())

    return lambda: stream.send(PAYLOAD) and None, echoes, close


async def main(rounds: int, trips: int) -> None:
    pairs = {"zeromq": await zmq_pair(), "sealed": await sealed_pair()}
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    print(f"{'round':>5} {'transport':>9} {'window':>6} {'us/trip':>8} {'cpu us/trip':>11}")
    for round_no in range(rounds):
        names = list(pairs) if round_no % 2 == 0 else list(reversed(pairs))
        for name in names:
            send, echoes, _ = pairs[name]
            for window in (1, 32):
                await drive(send, echoes, trips // 10, window)  # warm
                wall, cpu = await drive(send, echoes, trips, window)
                results.setdefault((name, window), []).append((wall, cpu))
                print(f"{round_no:>5} {name:>9} {window:>6} {wall:>8.1f} {cpu:>11.1f}")
    print("\nmedians")
    for window in (1, 32):
        zeromq = results[("zeromq", window)]
        sealed = results[("sealed", window)]
        zw, zc = (statistics.median(v[i] for v in zeromq) for i in (0, 1))
        sw, sc = (statistics.median(v[i] for v in sealed) for i in (0, 1))
        print(
            f"window {window:>2}: zeromq {zw:.1f} us ({zc:.1f} cpu), sealed {sw:.1f} us ({sc:.1f} cpu);"
            f" sealed/zeromq wall {sw / zw:.2f}x, cpu {sc / zc:.2f}x"
        )
    for _, _, close in pairs.values():
        close()
    await asyncio.sleep(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trips", type=int, default=5000, help="round trips per measurement")
    parser.add_argument("--cpu", type=int, default=0, help="the core both ends run on")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    uvloop.run(main(args.rounds, args.trips))

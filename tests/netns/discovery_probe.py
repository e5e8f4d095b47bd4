"""Run one Discovery inside a namespace and print each node it finds as a JSON line.

    python tests/netns/discovery_probe.py --address 10.250.0.1 --node-id ID --mesh-id M [--seconds 30]

Prints ``{"started": ID}`` once registered, then ``{"found": ID, "mesh_addr": ..., "http_addr": ...}``
per report. Stops after --seconds, on SIGTERM, or when stdin closes, unregistering cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from meshnode.membership.discovery import Advert, Discovery


def emit(record: dict[str, str]) -> None:
    print(json.dumps(record), flush=True)


async def main(arguments: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Closing stdin is the portable "please stop" from the parent.
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.readline() else None)

    def on_found(advert: Advert) -> None:
        emit({"found": advert.node_id, "mesh_addr": advert.mesh_addr, "http_addr": advert.http_addr})

    advert = Advert(
        node_id=arguments.node_id,
        mesh_id=arguments.mesh_id,
        name=arguments.node_id[:6],
        mesh_addr=f"{arguments.address}:8471",
        http_addr="0.0.0.0:8470",
        version="test",
    )
    discovery = Discovery(interfaces=[arguments.address], advert=advert, on_found=on_found)
    await discovery.start()
    emit({"started": arguments.node_id})
    try:
        await asyncio.wait_for(stop.wait(), arguments.seconds)
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(sys.stdin.fileno())
        await discovery.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--mesh-id", required=True)
    parser.add_argument("--seconds", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))

"""mDNS discovery between real hosts: three namespaces on a bridge find each other."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import IO

import pytest

from tests.netns.netns import Bridge, require_netns

pytestmark = pytest.mark.netns

PROBE = Path(__file__).with_name("discovery_probe.py")
DEADLINE_S = 20.0


def test_three_hosts_discover_each_other() -> None:
    require_netns()
    mesh = uuid.uuid4().hex
    with Bridge("mnd", 3) as net:
        ids = {host: uuid.uuid4().hex for host in net.hosts}
        host_of = {node_id: host for host, node_id in ids.items()}
        probes = {
            net.exec(
                host,
                [
                    sys.executable,
                    str(PROBE),
                    "--address",
                    net.address_of(host),
                    "--node-id",
                    ids[host],
                    "--mesh-id",
                    mesh,
                    "--seconds",
                    str(DEADLINE_S + 10),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,
            ): host
            for host in net.hosts
        }
        found: dict[str, dict[str, dict[str, str]]] = {host: {} for host in net.hosts}

        def everyone_found_everyone() -> bool:
            return all(set(found[host]) == set(ids.values()) - {ids[host]} for host in net.hosts)

        with selectors.DefaultSelector() as selector:
            for process, host in probes.items():
                assert process.stdout is not None
                selector.register(process.stdout, selectors.EVENT_READ, host)
            deadline = time.monotonic() + DEADLINE_S
            while not everyone_found_everyone() and (remaining := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(timeout=remaining):
                    stream: IO[bytes] = key.fileobj  # type: ignore[assignment]
                    # Unbuffered pipe: readline takes exactly one line, so select still sees the rest.
                    line = stream.readline()
                    if not line:
                        selector.unregister(stream)
                        continue
                    record = json.loads(line)
                    if "found" in record:
                        found[key.data][record["found"]] = record

        # Close stdin: each probe unregisters and exits on its own.
        for process in probes:
            assert process.stdin is not None
            process.stdin.close()
        for process in probes:
            assert process.wait(timeout=10) == 0

    assert everyone_found_everyone(), {
        host: sorted(host_of[i] for i in peers) for host, peers in found.items()
    }
    for peers in found.values():
        for node_id, record in peers.items():
            address = net.address_of(host_of[node_id])
            assert record["mesh_addr"] == f"{address}:8471"
            assert record["http_addr"] == f"{address}:8470"

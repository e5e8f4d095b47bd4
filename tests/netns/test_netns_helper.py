"""The namespace helper itself: hosts reach each other, and everything is gone afterwards."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.netns import netns
from tests.netns.netns import Bridge, require_netns

pytestmark = pytest.mark.netns

# Accepts one connection and echoes one line back; prints its port first so the client knows it.
SERVER = """
import socket, sys
server = socket.create_server((sys.argv[1], 0))
server.settimeout(20)
print(server.getsockname()[1], flush=True)
connection, _ = server.accept()
connection.sendall(connection.recv(64))
"""

CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as connection:
    connection.sendall(b"hello from " + sys.argv[3].encode())
    print(connection.recv(64).decode(), flush=True)
"""


def namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def test_hosts_reach_each_other_over_tcp() -> None:
    require_netns()
    with Bridge("mnt", 2) as net:
        first, second = net.hosts
        server = net.exec(
            first, [sys.executable, "-c", SERVER, net.address_of(first)], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        assert port.isdigit(), f"server printed {port!r}"
        client = net.exec(
            second,
            [sys.executable, "-c", CLIENT, net.address_of(first), port, second],
            stdout=subprocess.PIPE,
            text=True,
        )
        output, _ = client.communicate(timeout=20)
        assert output.strip() == f"hello from {second}"
        assert server.wait(timeout=20) == 0


def test_hosts_have_multicast_and_stay_out_of_this_namespace() -> None:
    require_netns()
    with Bridge("mnt", 1) as net:
        host = net.hosts[0]
        own = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True, check=True).stdout
        assert net.addresses[0] not in own
        link = subprocess.run(
            ["ip", "-n", host, "link", "show", "eth0"], capture_output=True, text=True, check=True
        )
        assert "MULTICAST" in link.stdout and "state UP" in link.stdout
        routes = subprocess.run(
            ["ip", "-n", host, "route", "show"], capture_output=True, text=True, check=True
        )
        assert "224.0.0.0/4 dev eth0" in routes.stdout


@pytest.mark.skipif(shutil.which("ping") is None, reason="ping is not installed (iputils-ping)")
def test_hosts_ping_each_other() -> None:
    require_netns()
    with Bridge("mnt", 2) as net:
        first, second = net.hosts
        ping = net.exec(
            first, ["ping", "-c", "1", "-W", "2", net.address_of(second)], stdout=subprocess.DEVNULL
        )
        assert ping.wait(timeout=10) == 0


def test_everything_is_deleted_after_use_and_after_failure() -> None:
    require_netns()
    # Only our own names are checked: parallel runs create and delete theirs meanwhile.
    with Bridge("mnt", 2) as net:
        created = {net.bridge_namespace, *net.hosts}
        assert created <= namespaces()
        sleeper = net.exec(net.hosts[0], [sys.executable, "-c", "import time; time.sleep(60)"])
    assert sleeper.returncode is not None
    assert not created & namespaces()

    with pytest.raises(RuntimeError, match="boom"), Bridge("mnt", 2) as net:
        created = {net.bridge_namespace, *net.hosts}
        assert created <= namespaces()
        raise RuntimeError("boom")
    assert not created & namespaces()


def test_failed_setup_deletes_what_it_created(monkeypatch: pytest.MonkeyPatch) -> None:
    require_netns()
    net = Bridge("mnt", 2)
    created = {net.bridge_namespace, *net.hosts}
    real_ip = netns._ip

    def failing_ip(*args: str) -> None:
        if "route" in args:
            raise RuntimeError("simulated failure adding the multicast route")
        real_ip(*args)

    monkeypatch.setattr(netns, "_ip", failing_ip)
    with pytest.raises(RuntimeError, match="simulated"), net:
        pass
    assert not created & namespaces()


def test_names_are_unique_within_a_run() -> None:
    first, second = Bridge("mnt", 2), Bridge("mnt", 2)
    assert not {first.bridge_namespace, *first.hosts} & {second.bridge_namespace, *second.hosts}
    assert all(len(name) < 64 for name in [*first.hosts, first.bridge_namespace])

"""The NAT topology itself (tests/netns/nat.py), with real TCP traffic between its namespaces.

A home host reaches a cloud host and is seen there as the router (masqueraded); no cloud host can
open a connection to a home host, with or without a route; the namespaces and processes go away.

What a NAT flush does to an open connection, as this kernel does it (and the tests below assert):
the router forgets the mapping, and the next packet decides.

- The home side speaks first: with ``nf_conntrack_tcp_loose`` (1, the default) the router picks the
  connection up mid-stream as a new home-to-cloud connection, the forward chain lets it through, and
  masquerade gives it the same source port again since that port is free. The connection goes on
  working in both directions, and the cloud side notices nothing.
- The cloud side speaks first: its segment is addressed to the router itself, where no socket has that
  port, so the router answers with a reset. The cloud side's socket fails (``ConnectionResetError``)
  and the home side never gets the data; when the home side next sends, it goes through a fresh
  mapping to a cloud host that has no such connection any more, and is reset in turn. The failure is
  visible on both sides, never a silent hang.

So a relay that pushes to a home node over the node's own connection loses it on a NAT flush unless
the home node happens to speak first, and the home node must then dial again. A new connection after
the flush works at once.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.agents import wait_for
from tests.netns.nat import NatTopology, require_nat

pytestmark = pytest.mark.netns

PORT = 9000
# A socket operation that should succeed takes milliseconds here; one that should fail is bounded.
SOCKET_TIMEOUT_S = 3.0
PROCESS_TIMEOUT_S = 30.0
# One end of a TCP connection, driven line by line on stdin ("send", "recv"), answering one line
# for each: "sent", "got <bytes>", or "error <exception name>". The server prints its peer first,
# the client its own address; both end at end of input, bounded by their socket timeouts.
PEER = """
import socket, sys
role, address, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
if role == "server":
    server = socket.create_server((address, PORT))
    server.settimeout(20)
    print("listening", flush=True)
    connection, peer = server.accept()
    server.close()
    print("peer", peer[0], flush=True)
else:
    connection = socket.create_connection((address, PORT), timeout=timeout)
    print("connected", connection.getsockname()[0], flush=True)
connection.settimeout(timeout)
for line in sys.stdin:
    try:
        if line.strip() == "send":
            connection.sendall(role.encode())
            print("sent", flush=True)
        else:
            print("got", connection.recv(64).decode() or "(end of stream)", flush=True)
    except OSError as exc:
        print("error", type(exc).__name__, flush=True)
""".replace("PORT", str(PORT))
# Tries to open one connection: prints "connected" or "error <exception name>".
CONNECT = f"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], {PORT}), timeout={SOCKET_TIMEOUT_S}).close()
    print("connected")
except OSError as exc:
    print("error", type(exc).__name__)
"""


class Peer:
    """One end of a connection, running in a namespace of ``net``."""

    def __init__(self, net: NatTopology, host: str, role: str, address: str) -> None:
        self.process = net.exec(
            host,
            [sys.executable, "-c", PEER, role, address, str(SOCKET_TIMEOUT_S)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def line(self) -> str:
        """The next line it prints (its answer to the last command)."""
        assert self.process.stdout is not None
        answer = self.process.stdout.readline().strip()
        assert answer, f"the peer ended (exit {self.process.wait(timeout=PROCESS_TIMEOUT_S)})"
        return answer

    def stop(self) -> None:
        """Kill it now (a listener nobody reached), freeing its port."""
        self.process.kill()
        self.process.wait(timeout=PROCESS_TIMEOUT_S)

    def do(self, command: str) -> str:
        """Send ``command`` ("send" or "recv") and return its answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.line()


@pytest.fixture
def net() -> Iterator[NatTopology]:
    require_nat()
    with NatTopology("mnnat", cloud_hosts=2, home_hosts=1) as topology:
        yield topology


def connect(net: NatTopology, source: str, target: str) -> tuple[Peer, Peer]:
    """A server on ``target`` and a client on ``source`` connected to it."""
    server = Peer(net, target, "server", "0.0.0.0")
    assert server.line() == "listening"
    client = Peer(net, source, "client", net.address_of(target))
    assert client.line() == f"connected {net.address_of(source)}"
    return server, client


def try_connect(net: NatTopology, source: str, target: str) -> str:
    """What one connection attempt from ``source`` to a listener on ``target`` printed."""
    server = Peer(net, target, "server", "0.0.0.0")
    assert server.line() == "listening"
    attempt = net.exec(
        source, [sys.executable, "-c", CONNECT, net.address_of(target)], stdout=subprocess.PIPE, text=True
    )
    output, _ = attempt.communicate(timeout=PROCESS_TIMEOUT_S)
    server.stop()
    return output.strip()


def exchange(server: Peer, client: Peer) -> None:
    """One message each way over an established connection."""
    assert client.do("send") == "sent"
    assert server.do("recv") == "got client"
    assert server.do("send") == "sent"
    assert client.do("recv") == "got server"


def test_home_reaches_cloud_and_is_seen_as_the_router(net: NatTopology) -> None:
    home, cloud = net.hosts_home[0], net.hosts_cloud[0]
    server, client = connect(net, home, cloud)
    assert server.line() == f"peer {net.router_cloud_address}", "the router did not masquerade"
    exchange(server, client)
    # The cloud hosts of one segment still reach each other directly, unmasqueraded.
    server, client = connect(net, net.hosts_cloud[1], cloud)
    assert server.line() == f"peer {net.address_of(net.hosts_cloud[1])}"


def test_cloud_cannot_open_a_connection_home(net: NatTopology) -> None:
    home, cloud = net.hosts_home[0], net.hosts_cloud[0]
    # No route: the cloud host's own kernel refuses at once.
    assert try_connect(net, cloud, home) == "error OSError", "a cloud host had a route home"
    # A route through the router does not help: the forward policy drops the SYN, and the
    # connection attempt times out within its bound.
    subprocess.run(
        ["ip", "-n", cloud, "route", "add", net.home_subnet, "via", net.router_cloud_address],
        check=True,
        timeout=30,
    )
    assert try_connect(net, cloud, home) == "error TimeoutError", net.nat_rules()
    dropped = [line for line in net.nat_rules().splitlines() if line.strip().startswith("counter packets")]
    assert dropped and not dropped[0].strip().startswith("counter packets 0 "), net.nat_rules()
    # The home host can still reach the same cloud host.
    assert try_connect(net, home, cloud) == "connected"


def test_a_nat_flush_keeps_a_connection_whose_home_side_speaks_first(net: NatTopology) -> None:
    loose = subprocess.run(
        ["ip", "netns", "exec", net.router, "cat", "/proc/sys/net/netfilter/nf_conntrack_tcp_loose"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    assert loose == "1", "the documented behaviour assumes conntrack picks connections up mid-stream"
    server, client = connect(net, net.hosts_home[0], net.hosts_cloud[0])
    server.line()
    exchange(server, client)
    assert "ESTABLISHED" in net.connections()
    net.flush_nat()
    assert "ESTABLISHED" not in net.connections()
    # Picked up again as a new home-to-cloud connection with the same masqueraded port.
    exchange(server, client)
    assert "ESTABLISHED" in net.connections(), net.connections()


def test_a_nat_flush_resets_a_connection_whose_cloud_side_speaks_first(net: NatTopology) -> None:
    server, client = connect(net, net.hosts_home[0], net.hosts_cloud[0])
    server.line()
    exchange(server, client)
    net.flush_nat()
    # The router has no mapping for the cloud's segment, takes it as its own, and resets it.
    assert server.do("send") == "sent"
    assert server.do("recv") == "error ConnectionResetError"
    assert client.do("recv") == "error TimeoutError", "the cloud's data reached home after the flush"
    # Home's next segment goes through a fresh mapping to a connection the cloud no longer has.
    assert client.do("send") == "sent"
    assert client.do("recv") == "error ConnectionResetError"
    # A new connection after the flush works at once.
    server, client = connect(net, net.hosts_home[0], net.hosts_cloud[0])
    assert server.line() == f"peer {net.router_cloud_address}"
    exchange(server, client)


def test_cutting_the_home_leg_stops_new_connections_until_restored(net: NatTopology) -> None:
    home, cloud = net.hosts_home[0], net.hosts_cloud[0]
    net.cut_home()
    assert try_connect(net, home, cloud).startswith("error "), "home reached the cloud with its leg down"
    net.restore_home()
    # The leg comes back within moments (the veth's carrier, then the route): wait for it, bounded.
    attempts: list[str] = []
    wait_for(lambda: attempts.append(try_connect(net, home, cloud)) or attempts[-1] == "connected", 15.0,
             message=lambda: f"home never reached the cloud again: {attempts}")  # fmt: skip


def namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def test_everything_is_deleted_after_use_and_after_failure() -> None:
    require_nat()
    # Only our own names are checked: parallel runs create and delete theirs meanwhile.
    with NatTopology("mnnat") as net:
        created = {net.cloud_bridge, net.home_bridge, net.router, *net.hosts_cloud, *net.hosts_home}
        assert created <= namespaces()
        sleeper = net.exec(net.hosts_home[0], [sys.executable, "-c", "import time; time.sleep(60)"])
    assert sleeper.returncode is not None
    assert not created & namespaces()

    with pytest.raises(RuntimeError, match="boom"), NatTopology("mnnat") as net:
        created = {net.cloud_bridge, net.home_bridge, net.router, *net.hosts_cloud, *net.hosts_home}
        raise RuntimeError("boom")
    assert not created & namespaces()

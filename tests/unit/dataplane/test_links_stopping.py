"""A stopping agent's outbound links: requests that still arrive fail as retryable, never with a ZMQError.

Found by the chaos suite's rolling restart (tests/netns/test_netns_chaos_faults.py): HTTP requests
reaching an agent after ``PeerLinks.close`` terminated the ZeroMQ context got a 500, from a
``ZMQError: Operation not supported`` raised while opening a link.
"""

from __future__ import annotations

import errno

import pytest
import zmq

from meshnode.dataplane import links as links_module
from meshnode.dataplane.links import PeerLinks
from meshnode.mesh.envelope import Envelope, Failure
from meshnode.testing import make_call, peer_id
from meshnode.trust.curve import client_keys, node_keys

TOKEN = "a test token of this mesh, long enough"
KEY = node_keys().public.decode()


def links() -> PeerLinks:
    return PeerLinks(
        client=client_keys(TOKEN),
        max_frame_bytes=1 << 20,
        max_in_flight_per_peer=8,
        connect_timeout_s=1.0,
        idle_s=60.0,
    )


async def answers(peer_links: PeerLinks) -> list[Envelope]:
    call = make_call("echo", {"x": 1})
    # Port 1 on loopback: nothing listens there, and nothing must be sent anyway.
    return [envelope async for envelope in peer_links.call(peer_id("n1"), "127.0.0.1:1", KEY, call)]


async def test_a_call_after_close_fails_as_retryable_because_this_node_stops() -> None:
    peer_links = links()
    peer_links.close()
    [answer] = await answers(peer_links)
    assert isinstance(answer, Failure), answer
    assert (answer.kind, answer.retryable) == ("peer_unreachable", True)
    assert "stopping" in answer.message


async def test_a_link_that_cannot_be_opened_fails_as_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    peer_links = links()

    def no_socket(*args: object, **kwargs: object) -> None:
        raise zmq.ZMQError(errno.EMFILE)

    # As when the process has no descriptor left: libzmq refuses the link's socket.
    monkeypatch.setattr(links_module, "PeerLink", no_socket)
    try:
        [answer] = await answers(peer_links)
    finally:
        peer_links.close()
    assert isinstance(answer, Failure), answer
    assert (answer.kind, answer.retryable) == ("peer_unreachable", True)
    assert "127.0.0.1:1" in answer.message

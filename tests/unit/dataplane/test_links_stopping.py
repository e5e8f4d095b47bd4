"""A stopping agent's outbound links, and links that cannot be made: requests fail as retryable.

Found by the chaos suite's rolling restart (tests/netns/test_netns_chaos_faults.py): HTTP requests
reaching an agent after ``PeerLinks.close`` got a 500 (then from ZeroMQ's terminated context).
"""

from __future__ import annotations

from meshnode.dataplane.links import PeerLinks
from meshnode.mesh.envelope import Envelope, Failure
from meshnode.testing import make_call, peer_id
from meshnode.trust.sealed import NodeKey

TOKEN = "a test token of this mesh, long enough"
KEY = NodeKey.fresh().public


def links() -> PeerLinks:
    return PeerLinks(
        token=TOKEN,
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


async def test_a_link_that_cannot_be_made_fails_as_retryable_within_the_connect_timeout() -> None:
    peer_links = links()
    try:
        [answer] = await answers(peer_links)  # port 1: every connect is refused, and retried
    finally:
        peer_links.close()
    assert isinstance(answer, Failure), answer
    assert (answer.kind, answer.retryable) == ("peer_unreachable", True)
    assert "127.0.0.1:1" in answer.message

"""Fakes of the request path, shipped so tests, benchmarks and users can run it without a network.

Each fake has the interface of the real part it stands for and keeps its contract; the tests in
``tests/unit/dataplane`` run the real forwarder over them, and one conformance test runs the same
scenario on ``FakeLinks`` and on the real ``PeerLinks`` and ``DataPlaneServer``, so they cannot drift
apart.

- ``answers.py``: scripted answers of a replica: replies, streams, failures, refusals, hangs, delays
- ``replicas.py``: ``FakeReplica`` and ``FakeReplicas``, in place of ``Replica`` and ``Replicas``
- ``view.py``: ``FakeView``, the gossiped members, built from ``PeerSpec``s of peers and replicas
- ``links.py``: ``FakeLinks``, in place of ``PeerLinks`` with the peers' servers folded in
- ``mesh.py``: ``FakeMesh``, a real ``Forwarder`` wired to the fakes; ``make_call``
- ``changes.py``: ``Changes``, awaiting a condition on a fake's state instead of sleeping
"""

from .answers import JSON, STREAM, Answer, delayed, echoes, fails, gated, hangs, refuses, replies, streams
from .links import FakeLinks, Sent, ServingSide
from .mesh import FakeMesh, make_call
from .replicas import FakeReplica, FakeReplicas
from .view import FakeView, PeerSpec, peer_id

__all__ = [
    "JSON",
    "STREAM",
    "Answer",
    "FakeLinks",
    "FakeMesh",
    "FakeReplica",
    "FakeReplicas",
    "FakeView",
    "PeerSpec",
    "Sent",
    "ServingSide",
    "delayed",
    "echoes",
    "fails",
    "gated",
    "hangs",
    "make_call",
    "peer_id",
    "refuses",
    "replies",
    "streams",
]

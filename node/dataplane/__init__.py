"""The data plane: requests between nodes, over ZeroMQ, apart from gossip.

In the order a request meets them:

- ``forward.py``: ``Forwarder``, asks routing for candidates and carries a request to one, failing over
- ``candidates.py``: ``CandidateSource``, the replicas that could serve a deployment, as routing reads them
- ``links.py``: ``PeerLinks``, one multiplexed DEALER per peer (links out)
- ``peer_link.py``: ``PeerLink``, one such DEALER, its calls, and how long it has been idle
- ``answers.py``: ``Answers``, one call's answers for the task that awaits them (peer links, replicas)
- ``server.py``: ``DataPlaneServer``, the ROUTER where peers' requests arrive (server in)
- ``contexts.py``: the ZeroMQ contexts, whose I/O threads never preempt the event loop that wakes them
- ``frames.py``: ``FrameReader``, a ZeroMQ socket read from the event loop without a future per message
- ``sealed_stream.py``: ``SealedStream``, a sealed link read and written by the event loop, without
  ZeroMQ's I/O threads; ``SealedListener`` answers them (what the data plane moves to, issue 19)

Nodes nobody can dial (docs/edge.md): ``via_relays.py``, calls to such a node through its relays;
``relay.py``, a relay passing them on over the node's own link; ``reverse.py``, the node serving
its replicas over the links it opens to its relays.
"""

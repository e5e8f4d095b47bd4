"""The data plane: requests between nodes, over sealed TCP links, apart from gossip.

In the order a request meets them:

- ``forward.py``: ``Forwarder``, asks routing for candidates and carries a request to one, failing over
- ``candidates.py``: ``CandidateSource``, the replicas that could serve a deployment, as routing reads them
- ``links.py``: ``PeerLinks``, one multiplexed link per peer (links out)
- ``peer_link.py``: ``PeerLink``, one such link, its calls, and how long it has been idle
- ``worker_lanes.py``: ``WorkerLanes``, links straight to a peer's worker of one deployment
- ``dialer.py``: ``Dialer``, a link to one peer that redials after every drop
- ``answers.py``: ``Answers``, one call's answers for the task that awaits them (peer links, replicas);
  ``LastAnswer``, only its last one, for a call that neither streams nor reports progress
- ``deadline_timer.py``: ``DeadlineTimer``, the deadlines of the calls in flight on one loop timer
  (links, replicas)
- ``server.py``: ``DataPlaneServer``, where peers' requests arrive (server in)
- ``sealed_stream.py``: ``SealedStream``, one link, read and written by the event loop (no I/O
  threads), and handed to a worker whole; ``sealed_listener.py``: ``SealedListener`` answers
  them, ``connect`` dials one
- ``frames.py``: ``FrameReader``, a ZeroMQ socket read from the event loop without a future per
  message (the gossip socket's, ``membership/transport.py``)

Nodes nobody can dial (docs/edge.md): ``via_relays.py``, calls to such a node through its relays;
``relay.py``, a relay passing them on over the node's own link; ``reverse.py``, the node serving
its replicas over the links it opens to its relays.
"""

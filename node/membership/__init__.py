"""Membership: the shells that run the SWIM core (``meshnode.mesh.membership``) on real sockets.

- ``runner.py``: ``GossipRunner``, receive -> core.handle -> carry out effects -> sleep until due
- ``transport.py``: ``MembershipTransport``, datagram-like messages over ZeroMQ (never blocks)
- ``relaying.py``: reachability's shell: which way each packet goes (dialed, a route, relays)
- ``self_meta.py``: what this node says about itself in gossip (``NodeMeta``), kept current
- ``discovery.py``: mDNS announcements and browsing (python-zeroconf), a hint for joining
- ``seed_watch.py``: warnings naming each ``--seed`` that has not answered and why, then who did
"""

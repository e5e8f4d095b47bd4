"""Serving: this node's replicas, and its share of leaderless placement.

- ``replica.py``: ``Replica``, supervises one worker process and carries requests to it
- ``deployments.py``: ``Deployments``, runs the autoscaler and placement, starts and stops replicas here
- ``cold_start.py``: ``ColdStarts``, requests held until a replica of their deployment serves
- ``views.py``: what ``GET /v1/deployments`` shows, built from the gossiped view
"""

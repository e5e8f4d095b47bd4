"""The HTTP API every node serves, on uvicorn in the agent's own event loop.

- ``server.py``: builds the uvicorn server from the app and the predict lane
- ``app.py``: ``create_app``, liveness, readiness, ``/v1/mesh``, the one error-to-response handler
- ``predict.py``: ``PredictLane``, ``POST /v1/predict/{deployment}`` (JSON, streams, files)
- ``deployments.py``: ``/v1/deployments``, declare, change, remove, inspect
- ``metrics.py``: ``/metrics`` and Prometheus service discovery
"""

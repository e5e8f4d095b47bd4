"""The HTTP API every node serves, on uvicorn in the agent's own event loop.

- ``server.py``: builds the uvicorn server: the gate, then the predict lane, then the app
- ``corked.py``: uvicorn's HTTP protocol with what a connection writes in one turn of the loop sent
  together (a response's header and body in one ``send``, not two)
- ``gate.py``: ``Gate``, API keys for every request from another machine (``mesh/access.py``)
- ``app.py``: ``create_app``, liveness, readiness, ``/v1/mesh``, the one error-to-response handler
- ``rendered.py``: ``RenderedList``, a JSON list body kept piece by piece, a piece rendered again only
  when what it reads changed; ``mesh_render.py``: the ``/v1/mesh`` body from JSON kept per member
- ``openapi.py``: the OpenAPI document: every route, body and error answer (``openapi_paths.py``:
  the parts FastAPI cannot see); ``api_docs.py``: ``/openapi.json`` and ``/docs``, Swagger UI
  vendored in ``static/swagger/``
- ``predict.py``: ``PredictLane``, ``POST /v1/predict/{deployment}`` (JSON, streams, files)
- ``reply.py``: ``reply_answer``, a replica's final Reply as the HTTP answer's bytes (the lane's)
- ``sse.py``: ``EventStream``, Server-Sent Events with keep-alive comments (predict, OpenAI)
- ``ws.py``: ``GET /v1/ws/predict/{deployment}``, the same request over a WebSocket, with its
  progress reports as events
- ``body.py``: reading JSON bodies: size limit (413), JSON only (400), what the mesh carries (422)
- ``deployments.py``: ``/v1/deployments``, declare, change, remove, inspect
- ``model_store.py``: ``/v1/models/store``, which node holds which model; remove, rescan;
  ``model_pulls.py``: a pull onto this node, started and watched; ``model_pull_metrics.py``: its metrics
- ``doctor.py``: ``/v1/doctor``, what ``meshnode doctor`` asks a node beyond its view
- ``jobs.py``: ``/v1/jobs``, durable async jobs: submit, status, result, cancel, events, listing
- ``keys.py``: ``/v1/keys``, make, list and revoke API keys
- ``keyring.py``: ``/v1/keyring``, the steps of a mesh token rotation
- ``wellknown.py``: ``/.well-known/meshnode/jwks.json``, the public keys that verify webhooks
- ``events.py``: ``GET /v1/events``, the mesh's events as Server-Sent Events (``mesh_events.py``:
  the pure summaries and view-to-view changes it sends)
- ``dashboard.py``: ``GET /``, the live dashboard; its page, script and style are in ``static/``
- ``metrics.py``: ``/metrics``; ``stats.py``: the counters it reads; ``request_metrics.py``: the
  predict lane's per deployment counts and histograms; ``route_metrics.py``: every other route's;
  ``prometheus_targets.py``: ``/v1/prometheus/targets``, Prometheus service discovery of every node
- ``openai/``: the OpenAI-compatible routes (``/v1/models``, embeddings, images, chat, completions),
  one module per kind of request; its ``__init__`` maps the room
"""

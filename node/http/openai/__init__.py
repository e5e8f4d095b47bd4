"""The OpenAI-compatible API on every node (issue 13): the routes, and one module per kind of request.

Along a request's path:

- ``routes.py``: ``add_openai_routes``, the routes on the node's FastAPI app (``server.py`` mounts them)
- ``edge.py``: what every route shares with ``/v1/predict``: reading and validating the body, the
  ``Call`` envelopes with their deadline and ids, ``serve`` (routing, failover, backpressure), the
  ``X-Mesh-Route`` headers, errors in OpenAI's shape
- ``models.py``: ``Catalog``, which deployment a ``model`` names and what it serves; ``GET /v1/models``
- ``embeddings.py``, ``images.py``, ``chat.py``, ``completions.py``: one module per kind, each mapping
  OpenAI's request to the predictor's input and the predictor's output back to OpenAI's answer
- ``textgen.py``: what chat and completions share: sampling parameters, ``n`` choices, usage, and
  the stream of ``chat.completion.chunk`` / ``text_completion`` events ending in ``data: [DONE]``
- ``image_store.py``: images kept for ``response_format: "url"``, behind capability URLs that expire
- ``errors.py``: OpenAI's error body, the statuses and the retry headers the ``openai`` SDKs act on

docs/openai.md is the user's page: every route, the field mapping, the limits.
"""

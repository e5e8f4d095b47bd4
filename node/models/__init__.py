"""Models: the folders of model files this node holds, and getting them from peers.

- ``store.py``: ``ModelStore``, the one table of models held under ``<data dir>/model-store``: scan,
  add (copy a folder in, hashed), remove, install a pulled folder, read one chunk for a peer
- ``hashing.py``: reading a folder into manifest entries (sha256 per file and per chunk), which
  files a source folder may give (links only inside it)
- ``pulls.py``: ``ModelPulls``, getting a model this node lacks from the peers that hold it (one pull
  per model, chunks from several holders in parallel, each hash-checked, resumable); its holders and
  their ``@models`` messages in ``pull_peers.py``, its partial folder in ``partial.py``, its bandwidth
  bound in ``throttle.py``; the schedule is pure logic in ``meshnode.mesh.pull_plan``
- ``chunk_server.py``: ``ChunkServer``, the ``@models`` channel: manifests and chunks for peers pulling
- ``service.py``: ``ModelService``, the store as the agent uses it: in threads, gossiped after each
  change, removal on every holder (``MODEL_STORE_CHANNEL`` on the data plane)
- ``views.py``: what ``GET /v1/models/store`` shows, built from the gossiped view
- ``node_models.py``: ``NodeModels``, the agent's one handle on all of the above, built and closed together

The manifest and its digest are pure logic in ``meshnode.mesh.model_manifest``. docs/models.md
describes the store, its commands and routes, and what is gossiped.
"""

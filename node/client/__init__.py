"""The Python client: ``from meshnode import MeshClient, AsyncMeshClient``.

One core, two faces. Every client method is a plan, written once: a generator that yields the I/O it
needs (``Send``, ``Read``, ``NextLine``, ``Close``, ``Pause``, ``Save``) and is sent what came of it.
Each face only carries plans out with its I/O library, and its public methods are one line each.

- ``base.py``: the core's front: options, the node list, checking arguments, the plan of every method
- ``steps.py``: the steps a plan may ask for (the only I/O), and how a plan is resumed
- ``exchange.py``: one request's way through the mesh (which node, fail over, retry, give up) as a
  plan
- ``answers.py``: decoding answers, results and Server-Sent Events; the plan of a stream's next chunk
- ``job_plans.py``: the plans of the jobs methods (``submit``, ``status``, ``result``, ``cancel``,
  ``wait``, ``jobs``); ``job_view.py``: ``Job``, a job's status as read from a node;
  ``job_watch.py``: following a job's events until it ends, reconnecting or polling
- ``nodes.py``: the nodes a client may send to, best first
- ``errors.py``: the client's error tree under ``ClientError``
- ``tls.py``: which HTTPS certificates a client trusts (``verify``, ``$MESHNODE_CA_CERT``) and how
  a failed TLS handshake is put in words
- ``sync.py``: the blocking face: ``MeshClient``, ``ChunkStream``, ``JobEvents``, and
  ``BlockingDriver`` (httpx.Client)
- ``aio.py``: the asyncio face: ``AsyncMeshClient``, ``AsyncChunkStream``, ``AsyncJobEvents``, and
  ``AsyncDriver`` (httpx.AsyncClient)
"""

"""The ``meshnode`` command line, one module per command group.

- ``main.py``: the ``meshnode`` group, registering each command
- ``join.py``: ``meshnode join``, the agent; ``peers.py``: ``meshnode peers``
- ``token.py``: ``meshnode token``, the mesh's join token; ``keys.py``: ``meshnode keys``, API keys
- ``node_http.py``: how client commands reach a node: ``--node``, ``--ca-cert``, ``--api-key``,
  ``--discover``
- ``params.py``: flag types and checks shared by the commands (host:port, names, defaults)
- ``predict.py``: ``meshnode predict``, and how every command words a failed request
- ``deploy.py``: ``meshnode deploy``, ``undeploy`` and ``deployments``
- ``jobs.py``: ``meshnode jobs submit|status|result|cancel|ls``; ``job_progress.py``, its progress bar
- ``models.py``: ``meshnode models`` (the tiny offline diffusion pipeline)
- ``text_table.py``: the one formatter of terminal tables
- ``demo/``: ``meshnode demo``, a local mesh with demo apps and traffic
"""

from .main import main

__all__ = ["main"]

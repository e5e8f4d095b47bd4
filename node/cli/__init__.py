"""The ``meshnode`` command line, one module per command group.

- ``main.py``: the ``meshnode`` group; ``join`` and ``peers``
- ``params.py``: flag types and checks shared by the commands (host:port, names, defaults)
- ``predict.py``: ``meshnode predict``, and how every command words a failed request
- ``deploy.py``: ``meshnode deploy``, ``undeploy`` and ``deployments``
- ``models.py``: ``meshnode models`` (the tiny offline diffusion pipeline)
- ``text_table.py``: the one formatter of terminal tables
- ``demo/``: ``meshnode demo``, a local mesh with demo apps and traffic
"""

from .main import main

__all__ = ["main"]

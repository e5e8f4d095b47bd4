"""The ``meshnode`` command line, one module per command group.

- ``main.py``: the ``meshnode`` group, registering each command
- ``join.py``: ``meshnode join``, the agent; ``config_file.py``: its flags from a TOML or YAML file and
  the environment; ``join_progress.py``: its status line while it joins; ``peers.py``: ``meshnode peers``
- ``token.py``: ``meshnode token``, the mesh's join token; ``keys.py``: ``meshnode keys``, API keys
- ``node_http.py``: how client commands reach a node: ``--node``, ``--ca-cert``, ``--api-key``,
  ``--discover``
- ``params.py``: flag types and checks shared by the commands (host:port, names, defaults)
- ``predict.py``: ``meshnode predict``, and how every command words a failed request
- ``deploy.py``: ``meshnode deploy``, ``undeploy`` and ``deployments``; ``deploy_wait.py``: ``--wait``
- ``top.py``: ``meshnode top``, the live view (``top_data.py`` its rows, ``top_draw.py`` drawing them,
  ``top_rates.py`` rates from two scrapes of every node's ``/metrics``)
- ``doctor.py``: ``meshnode doctor``; ``doctor_probe.py``, ``doctor_gossip.py``, ``doctor_mdns.py``
  gather, ``doctor_checks.py``, ``doctor_suspicions.py`` and ``doctor_net_checks.py`` are its pure
  checks, ``doctor_facts.py`` their records
- ``waiting.py``: the spinner of a command that waits (``predict`` through a cold start)
- ``jobs.py``: ``meshnode jobs submit|status|result|cancel|ls``; ``job_progress.py``, its progress bar
- ``models.py``: ``meshnode models`` (the store, the tiny offline diffusion pipeline); ``model_pull.py``:
  ``meshnode models pull``, a model from the peers that hold it
- ``text_table.py``: the one formatter of tables: drawn with rich on a terminal, plain text in a pipe
- ``demo/``: ``meshnode demo``, a local mesh with demo apps and traffic
"""

from .main import main

__all__ = ["main"]

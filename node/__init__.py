"""meshnode: a leaderless model-serving mesh.

Every machine runs the same peer agent (``meshnode join``). This module stays light: importing
``meshnode.mesh`` runs it first, so it never imports torch, zmq, fastapi or httpx at import time;
public names are re-exported lazily. Type checkers see the real classes through the
``TYPE_CHECKING`` imports below, which must name every entry of ``_LAZY``
(tests/unit/test_public_api.py checks both).

The agent's top level holds only the wiring and what every room shares; the rest is in rooms:

- ``agent.py``: the peer agent: builds the parts and connects them; ``agent_run.py``: it as a
  process (its loop and signals); ``agent_sockets.py``: its three sockets, bound first
- ``event_loop.py``: how a meshnode process (agent or worker) runs its event loop
- ``config.py``: every knob of the agent, with its reason; ``errors.py``: the one error tree
- ``store.py``: the node's sqlite file (identity, incarnation, deployments, keys)
- ``load.py``: how busy this node is, sampled for gossip; ``addresses.py``: ``host:port`` and binding
- ``logs.py``: log lines, plain or JSON, with the request each is about
- ``__main__.py``: ``python -m meshnode``, the same command line as the console script
- rooms: ``membership/``, ``dataplane/``, ``serving/``, ``models/``, ``http/``, ``client/``,
  ``cli/``, ``trust/``, ``testing/`` (the fakes that ship), each mapped in its ``__init__``
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshnode.client.aio import AsyncMeshClient as AsyncMeshClient
    from meshnode.client.errors import ClientError as ClientError
    from meshnode.client.errors import DeploymentNotFound as DeploymentNotFound
    from meshnode.client.errors import GatewayTimeout as GatewayTimeout
    from meshnode.client.errors import JobFailed as JobFailed
    from meshnode.client.errors import JobGone as JobGone
    from meshnode.client.errors import JobNotFinished as JobNotFinished
    from meshnode.client.errors import JobNotFound as JobNotFound
    from meshnode.client.errors import NoNodeAvailable as NoNodeAvailable
    from meshnode.client.errors import PredictorFailed as PredictorFailed
    from meshnode.client.errors import RequestFailed as RequestFailed
    from meshnode.client.errors import RequestRejected as RequestRejected
    from meshnode.client.errors import RequestTimeout as RequestTimeout
    from meshnode.client.errors import StreamBroken as StreamBroken
    from meshnode.client.errors import TLSError as TLSError
    from meshnode.client.errors import Unauthorized as Unauthorized
    from meshnode.client.errors import Unavailable as Unavailable
    from meshnode.client.job_view import Job as Job
    from meshnode.client.job_view import JobList as JobList
    from meshnode.client.sync import MeshClient as MeshClient
    from meshnode.config import AgentConfig as AgentConfig
    from meshnode.errors import MeshnodeError as MeshnodeError
    from meshnode.inference.predictor import InvalidRequest as InvalidRequest
    from meshnode.inference.predictor import Predictor as Predictor
    from meshnode.mesh.config import MembershipConfig as MembershipConfig
    from meshnode.mesh.metadata import NodeMeta as NodeMeta
    from meshnode.trust.webhook_keys import WebhookVerificationError as WebhookVerificationError
    from meshnode.trust.webhook_keys import verify_webhook as verify_webhook

__version__ = "0.1.0"

# name -> module that defines it; resolved on first attribute access.
_LAZY: dict[str, str] = {
    "AgentConfig": "meshnode.config",
    "AsyncMeshClient": "meshnode.client.aio",
    "ClientError": "meshnode.client.errors",
    "DeploymentNotFound": "meshnode.client.errors",
    "GatewayTimeout": "meshnode.client.errors",
    "Job": "meshnode.client.job_view",
    "JobFailed": "meshnode.client.errors",
    "JobGone": "meshnode.client.errors",
    "JobList": "meshnode.client.job_view",
    "JobNotFinished": "meshnode.client.errors",
    "JobNotFound": "meshnode.client.errors",
    "MeshClient": "meshnode.client.sync",
    "NoNodeAvailable": "meshnode.client.errors",
    "PredictorFailed": "meshnode.client.errors",
    "RequestFailed": "meshnode.client.errors",
    "RequestRejected": "meshnode.client.errors",
    "RequestTimeout": "meshnode.client.errors",
    "StreamBroken": "meshnode.client.errors",
    "TLSError": "meshnode.client.errors",
    "Unauthorized": "meshnode.client.errors",
    "Unavailable": "meshnode.client.errors",
    "MeshnodeError": "meshnode.errors",
    "MembershipConfig": "meshnode.mesh.config",
    "NodeMeta": "meshnode.mesh.metadata",
    "Predictor": "meshnode.inference.predictor",
    "InvalidRequest": "meshnode.inference.predictor",
    "WebhookVerificationError": "meshnode.trust.webhook_keys",
    "verify_webhook": "meshnode.trust.webhook_keys",
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'meshnode' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

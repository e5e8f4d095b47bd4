"""meshnode: a leaderless model-serving mesh.

Every machine runs the same peer agent (``meshnode join``). This module stays light: importing
``meshnode.mesh`` runs it first, so it never imports torch, zmq or fastapi at import time; public
names are re-exported lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; resolved on first attribute access.
_LAZY: dict[str, str] = {
    "AgentConfig": "meshnode.config",
    "AsyncMeshClient": "meshnode.client_async",
    "ClientError": "meshnode.client_errors",
    "DeploymentNotFound": "meshnode.client_errors",
    "GatewayTimeout": "meshnode.client_errors",
    "MeshClient": "meshnode.client",
    "NoNodeAvailable": "meshnode.client_errors",
    "PredictorFailed": "meshnode.client_errors",
    "RequestFailed": "meshnode.client_errors",
    "RequestRejected": "meshnode.client_errors",
    "RequestTimeout": "meshnode.client_errors",
    "StreamBroken": "meshnode.client_errors",
    "Unavailable": "meshnode.client_errors",
    "MeshnodeError": "meshnode.errors",
    "MembershipConfig": "meshnode.mesh.config",
    "NodeMeta": "meshnode.mesh.metadata",
    "Predictor": "meshnode.inference.predictor",
    "InvalidRequest": "meshnode.inference.predictor",
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'meshnode' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

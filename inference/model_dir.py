"""The folder of a replica's model when its deployment names one of the mesh's stores (``spec.model``).

The node pulls the model from its peers before the replica's worker starts (docs/models.md) and names
the folder in ``MODEL_DIR_ENV``. An app that can serve a model from a folder reads ``mesh_model_dir()``
first, before its own settings: what the deployment names wins over what the node was started with.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["MODEL_DIR_ENV", "MODEL_NAME_ENV", "mesh_model_dir", "mesh_model_name"]

MODEL_DIR_ENV = "MESHNODE_MODEL_DIR"
MODEL_NAME_ENV = "MESHNODE_MODEL_NAME"


def mesh_model_dir() -> Path | None:
    """The folder of the model this replica's deployment names, or None when it names none."""
    folder = os.environ.get(MODEL_DIR_ENV)
    return Path(folder) if folder else None


def mesh_model_name() -> str | None:
    """The name of that model in the mesh's stores, or None."""
    return os.environ.get(MODEL_NAME_ENV) or None

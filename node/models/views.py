"""What ``GET /v1/models/store`` shows: which node holds which model, and who is pulling it.

Built from this node's gossiped view (every member's ``NodeMeta.store`` and ``NodeMeta.pulls``), so
a model added on one node shows on every node within a gossip round or two. One row per name and
short digest: two nodes holding different content under one name show as two rows, the conflict in
plain sight. Only present members (alive or suspect) count as holders; a dead node's store is not
somewhere a model can come from.

``local`` is this node's own store with full digests, sizes and file counts, never its folder
paths: they would tell any caller with an ``invoke`` key about the node's filesystem.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..mesh.member import Member
from ..mesh.types import Status
from .store import StoredModel

__all__ = ["local_view", "store_view"]

_PRESENT = (Status.ALIVE, Status.SUSPECT)


def store_view(members: Iterable[Member], local: Iterable[StoredModel]) -> dict[str, Any]:
    """The body of ``GET /v1/models/store``."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(name: str, digest: str) -> dict[str, Any]:
        return rows.setdefault(
            (name, digest), {"name": name, "digest": digest, "bytes": 0, "holders": [], "pulling": []}
        )

    for member in sorted(members, key=lambda m: (m.meta.name, m.node)):
        if member.status not in _PRESENT:
            continue
        for name, entry in member.meta.store.items():
            held = row(name, entry["digest"])
            held["holders"].append(member.meta.name)
            held["bytes"] = max(held["bytes"], entry["bytes"])
        for name, entry in member.meta.pulls.items():
            pulled = row(name, entry["digest"])
            pulled["pulling"].append(
                {"node": member.meta.name, "done": entry["done"], "total": entry["total"]}
            )
            pulled["bytes"] = max(pulled["bytes"], entry["total"])
    return {"models": [rows[key] for key in sorted(rows)], "local": local_view(local)}


def local_view(models: Iterable[StoredModel]) -> list[dict[str, Any]]:
    """This node's store: name, full digest, bytes and file count of each model, by name."""
    return [
        {"name": model.name, "digest": model.digest, "bytes": model.total_bytes, "files": model.file_count}
        for model in sorted(models, key=lambda model: model.name)
    ]

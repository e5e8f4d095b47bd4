"""What the event feed says about the mesh: summaries for a page, and changes between two views.

Pure functions over the bodies of ``GET /v1/mesh`` and ``GET /v1/deployments`` (``events.py`` polls
them): a member cut to what a dashboard draws, a deployment without its full spec, and the replica
and deployment changes between two successive views. Each change carries the new state whole, so a
page that applies it twice, or after a snapshot that already had it, draws the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ReplicaKey",
    "deployment_summary",
    "diff_deployments",
    "diff_replicas",
    "member_summary",
    "replica_states",
]

# (node id, deployment name)
ReplicaKey = tuple[str, str]
_MEMBER_FIELDS = (
    *("id", "name", "status", "http", "tls", "region", "zone"),
    *("device", "load", "models", "incarnation", "reach"),
)
_REPLICA_FIELDS = ("state", "pinned", "error", "queue", "capacity")
# What makes a deployment "changed": its spec and its placement, not its moving averages.
_DEPLOYMENT_FIELDS = (
    *("app", "min_replicas", "max_replicas", "desired", "ready", "unschedulable"),
    *("missing", "replicas", "placement", "note"),
)


def member_summary(member: Mapping[str, Any]) -> dict[str, Any]:
    """A ``/v1/mesh`` member cut to what the dashboard shows (no keys, no data-plane address)."""
    summary = {field: member.get(field) for field in _MEMBER_FIELDS}
    replicas = member.get("replicas") or {}
    summary["replicas"] = {
        name: {field: entry.get(field) for field in _REPLICA_FIELDS} for name, entry in replicas.items()
    }
    return summary


def deployment_summary(view: Mapping[str, Any]) -> dict[str, Any]:
    """A ``/v1/deployments`` entry without its full spec (the page shows counts and reasons)."""
    return {key: value for key, value in view.items() if key != "spec"}


def replica_states(mesh: Mapping[str, Any]) -> dict[ReplicaKey, dict[str, Any]]:
    """Every replica of every member of a ``/v1/mesh`` body: (node, deployment) -> its entry."""
    states: dict[ReplicaKey, dict[str, Any]] = {}
    for member in mesh.get("members", ()):
        for name, entry in (member.get("replicas") or {}).items():
            states[(member["id"], name)] = {
                "node_name": member.get("name", ""),
                **{field: entry.get(field) for field in ("state", "error", "pinned")},
            }
    return states


def diff_replicas(
    before: Mapping[ReplicaKey, Mapping[str, Any]], after: Mapping[ReplicaKey, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One ``replica`` event per replica that appeared, changed state or error, or went away."""
    events = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        old_state = old.get("state") if old else None
        new_state = new.get("state") if new else None
        if old_state == new_state and (old or {}).get("error") == (new or {}).get("error"):
            continue
        node, deployment = key
        events.append(
            {
                "node": node,
                "node_name": (new or old or {}).get("node_name", ""),
                "deployment": deployment,
                "previous": old_state,
                "state": new_state,
                "error": (new or {}).get("error") or "",
            }
        )
    return events


def diff_deployments(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One ``deployment`` event per deployment declared, changed (naming the fields) or removed."""
    events: list[dict[str, Any]] = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if new is None:
            events.append({"name": name, "change": "removed", "fields": [], "deployment": None})
            continue
        if old is None:
            events.append({"name": name, "change": "declared", "fields": [], "deployment": dict(new)})
            continue
        fields = [field for field in _DEPLOYMENT_FIELDS if old.get(field) != new.get(field)]
        if fields:
            event: dict[str, Any] = {
                "name": name,
                "change": "changed",
                "fields": fields,
                "deployment": dict(new),
            }
            if "desired" in fields:  # a scale change, worth its own words in the feed
                event["desired"] = [old.get("desired"), new.get("desired")]
            events.append(event)
    return events

"""``meshnode deploy``, ``undeploy`` and ``deployments``: declare and inspect deployments from a shell.

Each is one HTTP call to any node (``--node``, default the local agent; ``https://`` verified against
``--ca-cert`` when given): ``PUT``, ``DELETE`` and ``GET /v1/deployments``. Flags left out keep the
spec's defaults (``mesh/deployment.py``), so a flag never restates one; a spec the node refuses
prints its one-line reason and exits 1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click
import httpx

from ..mesh.deployment import DEVICE_KINDS, Autoscaling
from .node_http import NodeAccess, access_options, node_option, request_node
from .text_table import format_table

_DEFAULTS = Autoscaling()

__all__ = ["deploy", "deployments", "format_deployments_table", "undeploy"]

TIMEOUT_S = 10.0


@click.command()
@click.argument("name")
@click.argument("app")
@click.option(
    "--min-replicas",
    type=click.IntRange(0),
    default=None,
    help="Replicas kept at least (0: scale to zero) [1].",
)
@click.option("--max-replicas", type=click.IntRange(0), default=None, help="Replicas at most [min].")
@click.option(
    "--device",
    "device_kinds",
    type=click.Choice(DEVICE_KINDS),
    multiple=True,
    help="Device kind allowed to host it; repeatable [any].",
)
@click.option("--min-memory-gb", type=click.FloatRange(0), default=None, help="Memory a host needs.")
@click.option("--accelerator/--no-accelerator", default=None, help="Only nodes with a GPU or MPS.")
@click.option(
    "--target-concurrency",
    type=float,
    default=None,
    help=f"Requests in flight per replica [{_DEFAULTS.target_concurrency:g}].",
)
@click.option(
    "--window",
    "window_s",
    type=float,
    default=None,
    help=f"Demand averaging window, s [{_DEFAULTS.window_s:g}].",
)
@click.option(
    "--scale-up-delay",
    "scale_up_delay_s",
    type=float,
    default=None,
    help=f"Seconds [{_DEFAULTS.scale_up_delay_s:g}].",
)
@click.option(
    "--scale-down-delay",
    "scale_down_delay_s",
    type=float,
    default=None,
    help=f"Seconds [{_DEFAULTS.scale_down_delay_s:g}].",
)
@click.option(
    "--idle-timeout",
    "idle_timeout_s",
    type=float,
    default=None,
    help=f"With --min-replicas 0: to zero after, s [{_DEFAULTS.idle_timeout_s:g}].",
)
@click.option("--backups", type=click.IntRange(0), default=None, help="Warm backups (not routed to) [0].")
@click.option("--spread", type=click.Choice(["zone", "region"]), default=None, help="Spread over zones.")
@node_option
@access_options
def deploy(name: str, app: str, node_url: str, access: NodeAccess, **options: Any) -> None:
    """Declare deployment NAME running APP mesh-wide (or change it); placement picks the nodes."""
    spec = build_spec(app, options)
    response = _call("PUT", node_url, access, f"/v1/deployments/{name}", json=spec)
    view = response.json()
    verb = "declared" if response.status_code == 201 else "updated"
    click.echo(f"{verb} {name}: {view.get('min_replicas')}..{view.get('max_replicas')} replicas of {app}")


@click.command()
@click.argument("name")
@node_option
@access_options
def undeploy(name: str, node_url: str, access: NodeAccess) -> None:
    """Remove deployment NAME mesh-wide; its replicas drain and stop (pinned ones stay)."""
    _call("DELETE", node_url, access, f"/v1/deployments/{name}")
    click.echo(f"removed {name}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw /v1/deployments body.")
@node_option
@access_options
def deployments(as_json: bool, node_url: str, access: NodeAccess) -> None:
    """Show every deployment: desired and actual replicas, where they run, what is missing."""
    body = _call("GET", node_url, access, "/v1/deployments").json()
    click.echo(json.dumps(body, indent=2) if as_json else format_deployments_table(body))


def build_spec(app: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The PUT body from the flags that were given (the rest keep the node's defaults)."""
    spec: dict[str, Any] = {"app": app}
    for key in ("min_replicas", "max_replicas", "backups", "spread"):
        if options.get(key) is not None:
            spec[key] = options[key]
    resources: dict[str, Any] = {}
    if options.get("device_kinds"):
        resources["device_kinds"] = list(options["device_kinds"])
    if options.get("min_memory_gb") is not None:
        resources["min_memory_gb"] = options["min_memory_gb"]
    if options.get("accelerator") is not None:
        resources["accelerator"] = options["accelerator"]
    autoscaling = {
        key: options[key]
        for key in (
            "target_concurrency",
            "window_s",
            "scale_up_delay_s",
            "scale_down_delay_s",
            "idle_timeout_s",
        )
        if options.get(key) is not None
    }
    if resources:
        spec["resources"] = resources
    if autoscaling:
        spec["autoscaling"] = autoscaling
    return spec


def format_deployments_table(body: Mapping[str, Any]) -> str:
    """Render a ``GET /v1/deployments`` body: one row per deployment, then what is missing."""
    items = [item for item in body.get("deployments", []) if isinstance(item, Mapping)]
    if not items:
        return "no deployments"
    # PINNED sits between the bounds and DESIRED because it is the other input: DESIRED is the
    # autoscaler's count within MIN..MAX, or the pinned replicas when there are more of them.
    header = ("NAME", "APP", "MIN", "MAX", "PINNED", "DESIRED", "READY", "REPLICAS")
    rows = [
        (
            str(item.get("name")),
            str(item.get("app")),
            str(item.get("min_replicas")),
            str(item.get("max_replicas")),
            str(item.get("pinned", "-")),
            str(item.get("desired")),
            str(item.get("ready")),
            _replicas_summary(item.get("replicas")),
        )
        for item in items
    ]
    lines = format_table(header, rows)
    for item in items:
        reason = item.get("unschedulable") or item.get("missing")
        if reason:
            lines.append(f"{item.get('name')}: {reason}")
    # A note explains the numbers (why DESIRED is above MAX) in words shared by every deployment in
    # that case, so it is said once for all of them.
    notes: dict[str, list[str]] = {}
    for item in items:
        if item.get("note"):
            notes.setdefault(str(item["note"]), []).append(str(item.get("name")))
    lines += [f"{', '.join(names)}: {note}" for note, names in notes.items()]
    return "\n".join(lines)


def _replicas_summary(replicas: object) -> str:
    if not isinstance(replicas, Sequence) or not replicas:
        return "-"
    parts = []
    for replica in replicas:
        if isinstance(replica, Mapping):
            pin = " pinned" if replica.get("pinned") else ""
            parts.append(f"{replica.get('node')} ({replica.get('status')}{pin})")
    return ", ".join(parts)


def _call(method: str, node_url: str, access: NodeAccess, path: str, **kwargs: Any) -> httpx.Response:
    return request_node(method, node_url, path, access, timeout_s=TIMEOUT_S, **kwargs)

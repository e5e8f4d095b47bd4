"""``meshnode deploy``, ``undeploy`` and ``deployments``: declare and inspect deployments from a shell.

Each is one HTTP call to any node (``--node``, default the local agent; ``https://`` verified against
``--ca-cert`` when given): ``PUT``, ``DELETE`` and ``GET /v1/deployments``. Flags left out keep the
spec's defaults (``mesh/deployment.py``), so a flag never restates one; a spec the node refuses
prints its one-line reason and exits 1. ``deploy --wait`` then follows the replicas until enough are
ready (``deploy_wait.py``); ``--json`` prints the node's answer instead of words. The deployments
table (``deployments_view``) is drawn as every CLI table is (``text_table.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click
import httpx
import yaml

from ..mesh.deployment import DEVICE_KINDS, Autoscaling
from .deploy_wait import WaitDisplay, WaitTimedOut, wait_ready
from .node_http import NodeAccess, access_options, node_option, request_node
from .text_table import plain, show, state_style, styled, table

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.text import Text

_DEFAULTS = Autoscaling()

__all__ = ["deploy", "deployments", "deployments_view", "format_deployments_table", "undeploy"]

TIMEOUT_S = 10.0
# How long `deploy --wait` waits by default: a first start may download or load a large model.
WAIT_TIMEOUT_S = 300.0
# How often `deploy --wait` asks: replicas change state in seconds, and an answer is from memory.
WAIT_POLL_S = 0.5


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
@click.option(
    "--prewarm/--no-prewarm",
    default=None,
    help="Load the next replica early when demand's trend says it will be wanted [no].",
)
@click.option("--backups", type=click.IntRange(0), default=None, help="Warm backups (not routed to) [0].")
@click.option("--spread", type=click.Choice(["zone", "region"]), default=None, help="Spread over zones.")
@click.option("--model", default=None, help="A model of the mesh's stores, pulled by hosts that lack it.")
@click.option(
    "--moderation",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A JSON or YAML file: the spec's moderation section (docs/apps.md).",
)
@click.option("--wait", is_flag=True, help="Wait until its replicas are ready, showing them start.")
@click.option(
    "--timeout",
    "wait_timeout_s",
    type=click.FloatRange(0, min_open=True),
    default=WAIT_TIMEOUT_S,
    show_default=True,
    help="With --wait: seconds to wait before exiting 1.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the deployment's view (after --wait: the last).")
@node_option
@access_options
def deploy(
    name: str,
    app: str,
    wait: bool,
    wait_timeout_s: float,
    as_json: bool,
    node_url: str,
    access: NodeAccess,
    **options: Any,
) -> None:
    """Declare deployment NAME running APP mesh-wide (or change it); placement picks the nodes."""
    spec = build_spec(app, options)
    path = f"/v1/deployments/{quote(name, safe='')}"
    response = _call("PUT", node_url, access, path, json=spec)
    view = response.json()
    verb = "declared" if response.status_code == 201 else "updated"
    said = f"{verb} {name}: {view.get('min_replicas')}..{view.get('max_replicas')} replicas of {app}"
    if not wait:
        click.echo(json.dumps(view, indent=2) if as_json else said)
        return
    click.echo(said, err=as_json)  # with --json, standard output is the JSON alone
    _wait(name, lambda: _call("GET", node_url, access, path).json(), wait_timeout_s, as_json)


def _wait(name: str, fetch: Callable[[], dict[str, Any]], timeout_s: float, as_json: bool) -> None:
    """Follow the deployment until it is ready (``deploy_wait.py``); say so, or exit 1 (130 on Ctrl-C)."""
    last: dict[str, Any] = {}

    def poll() -> Mapping[str, Any]:
        last.clear()
        last.update(fetch())
        return last

    started = time.monotonic()
    try:
        with WaitDisplay(time.monotonic) as display:
            progress = wait_ready(
                poll,
                timeout_s=timeout_s,
                poll_s=WAIT_POLL_S,
                clock=time.monotonic,
                sleep=time.sleep,
                show=display,
            )
    except WaitTimedOut as exc:
        if as_json and last:
            click.echo(json.dumps(last, indent=2))
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        click.echo(f"stopped waiting; {name} is declared and comes up on its own", err=True)
        raise SystemExit(130) from None
    if as_json:
        click.echo(json.dumps(last, indent=2))
        return
    took = time.monotonic() - started
    hosts = ", ".join(r.node for r in progress.replicas if r.status == "ready") or "none needed yet"
    click.echo(f"{name} ready: {progress.ready} of {progress.target} replicas ({hosts}) in {took:.1f} s")


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the node's answer as JSON.")
@node_option
@access_options
def undeploy(name: str, as_json: bool, node_url: str, access: NodeAccess) -> None:
    """Remove deployment NAME mesh-wide; its replicas drain and stop (pinned ones stay)."""
    response = _call("DELETE", node_url, access, f"/v1/deployments/{quote(name, safe='')}")
    if as_json:
        click.echo(json.dumps(_json_or({"name": name, "removed": True}, response), indent=2))
    else:
        click.echo(f"removed {name}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw /v1/deployments body.")
@node_option
@access_options
def deployments(as_json: bool, node_url: str, access: NodeAccess) -> None:
    """Show every deployment: desired and actual replicas, where they run, what is missing."""
    body = _call("GET", node_url, access, "/v1/deployments").json()
    if as_json:
        click.echo(json.dumps(body, indent=2))
    else:
        show(deployments_view(body))


def read_section(path: Path) -> Any:
    """A spec section from a JSON or YAML file (YAML is a superset of JSON); the node validates it."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--moderation") from exc


def build_spec(app: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The PUT body from the flags that were given (the rest keep the node's defaults)."""
    spec: dict[str, Any] = {"app": app}
    for key in ("min_replicas", "max_replicas", "backups", "spread", "model"):
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
            "prewarm",
        )
        if options.get(key) is not None
    }
    if options.get("moderation") is not None:
        spec["moderation"] = read_section(options["moderation"])
    if resources:
        spec["resources"] = resources
    if autoscaling:
        spec["autoscaling"] = autoscaling
    return spec


def format_deployments_table(body: Mapping[str, Any]) -> str:
    """A ``GET /v1/deployments`` body as plain text: one row per deployment, then what is missing."""
    return plain(deployments_view(body))


def deployments_view(body: Mapping[str, Any]) -> RenderableType:
    """A ``GET /v1/deployments`` body drawn: one row per deployment, then what is missing."""
    from rich.console import Group

    items = [item for item in body.get("deployments", []) if isinstance(item, Mapping)]
    if not items:
        return styled("no deployments")
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
            styled(item.get("ready"), _ready_style(item)),
            replicas_summary(item.get("replicas")),
        )
        for item in items
    ]
    # On a narrow terminal the app and the bounds go first; the counts and replicas stay.
    lines: list[RenderableType] = [table(header, rows, wrap={1, 7}, right={2, 3, 4, 5, 6}, drop=(1, 4, 2, 3))]
    for item in items:
        reason = item.get("unschedulable") or item.get("missing")
        if reason:
            lines.append(styled(f"{item.get('name')}: {reason}", "yellow"))
    # A note explains the numbers (why DESIRED is above MAX) in words shared by every deployment in
    # that case, so it is said once for all of them.
    notes: dict[str, list[str]] = {}
    for item in items:
        if item.get("note"):
            notes.setdefault(str(item["note"]), []).append(str(item.get("name")))
    lines += [styled(f"{', '.join(names)}: {note}", "dim") for note, names in notes.items()]
    return Group(*lines)


def replicas_summary(replicas: object) -> Text:
    """``n0 (ready pinned), n1 (starting)``, each state in its colour."""
    from rich.text import Text

    summary = Text()
    for replica in replicas if isinstance(replicas, Sequence) else ():
        if isinstance(replica, Mapping):
            if summary:
                summary.append(", ")
            pin = " pinned" if replica.get("pinned") else ""
            summary.append(f"{replica.get('node')} (")
            summary.append(str(replica.get("status")), state_style(replica.get("status")))
            summary.append(f"{pin})")
    return summary if summary else Text("-")


def _ready_style(item: Mapping[str, Any]) -> str:
    """Green when every desired replica is ready, yellow while some are not."""
    ready, desired = item.get("ready"), item.get("desired")
    if not isinstance(ready, int) or not isinstance(desired, int):
        return ""
    return "green" if ready >= desired else "yellow"


def _json_or(fallback: dict[str, Any], response: httpx.Response) -> Any:
    """The answer's JSON, or `fallback` for an answer without a body."""
    try:
        return response.json()
    except ValueError:
        return fallback


def _call(method: str, node_url: str, access: NodeAccess, path: str, **kwargs: Any) -> httpx.Response:
    return request_node(method, node_url, path, access, timeout_s=TIMEOUT_S, **kwargs)

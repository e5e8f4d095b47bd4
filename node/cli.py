"""The ``meshnode`` command line: ``join`` runs an agent, ``peers`` shows a node's view, ``demo`` runs a
local mesh.

Every default comes from ``AgentConfig`` (no default is written twice), and every bad value ends with
exit code 2 and one line naming the flag, never a traceback. Heavy modules (the agent, zeroconf) are
imported inside the commands so ``meshnode --help`` stays instant.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import httpx

from . import __version__
from .cli_deploy import deploy, deployments, undeploy
from .cli_models import models
from .cli_params import Deployment, HostPort, IPAddress, agent_default, check_name, join_host_port
from .cli_predict import error_message, predict
from .config import DEFAULT_NODE_URL, AgentConfig
from .errors import MeshnodeError
from .mesh.config import PROFILES
from .text_table import format_table

if TYPE_CHECKING:
    from .demo_traffic import Traffic

__all__ = ["format_peers_table", "main"]

# A node answers /v1/mesh from memory; 5 s only ever expires for a hung or unreachable node.
PEERS_TIMEOUT_S = 5.0
# Long enough for mDNS announcements of every node on a quiet LAN to arrive.
DISCOVER_TIMEOUT_S = 2.0
# The demo's agents start in parallel on a possibly slow, shared machine.
DEMO_FORM_TIMEOUT_S = 60.0
DEMO_REFRESH_S = 2.0
DEMO_BASE_PORT = 18470

_LOG_LEVELS = ("debug", "info", "warning", "error")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshnode")
def main() -> None:
    """meshnode: a leaderless model-serving mesh; every machine runs the same peer agent."""


_HTTP_DEFAULT = join_host_port(agent_default("http_host"), agent_default("http_port"))
_MESH_DEFAULT = join_host_port(agent_default("mesh_host"), agent_default("mesh_port"))
_DATA_DEFAULT = join_host_port(agent_default("data_host"), agent_default("data_port"))


@main.command()
@click.option("--name", default=socket.gethostname, show_default="host name", callback=check_name)
@click.option(
    "--http",
    "http_addr",
    type=HostPort(),
    default=_HTTP_DEFAULT,
    show_default=True,
    help="HTTP API bind address.",
)
@click.option(
    "--mesh",
    "mesh_addr",
    type=HostPort(),
    default=_MESH_DEFAULT,
    show_default=True,
    help="Membership (gossip) bind address.",
)
@click.option(
    "--data",
    "data_addr",
    type=HostPort(),
    default=_DATA_DEFAULT,
    show_default=True,
    help="Data-plane bind address (requests between nodes); port 0 picks a free one.",
)
@click.option(
    "--seed",
    "seeds",
    type=HostPort(seed=True),
    multiple=True,
    help="Mesh address of a node to join; repeatable.",
)
@click.option(
    "--mdns/--no-mdns",
    default=agent_default("mdns"),
    show_default=True,
    help="Find and announce nodes on the LAN by mDNS.",
)
@click.option(
    "--interface",
    "interfaces",
    type=IPAddress(),
    multiple=True,
    help="Interface address for mDNS and the advertised address; repeatable.",
)
@click.option("--region", default=agent_default("region"), help="Locality label: region.")
@click.option("--zone", default=agent_default("zone"), help="Locality label: zone within the region.")
@click.option(
    "--profile",
    type=click.Choice(PROFILES),
    default=agent_default("profile"),
    show_default=True,
    help="Membership timings: lan (memberlist defaults) or local (fast, one machine).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    show_default="$MESHNODE_HOME or ~/.meshnode",
    help="Where the node keeps its id and state.",
)
@click.option(
    "--deploy",
    "deploy",
    type=Deployment(),
    multiple=True,
    help="Pin a replica of deployment NAME running APP on this node; repeatable.",
)
@click.option(
    "--mesh-id",
    default=agent_default("mesh_id"),
    show_default=True,
    help="Only nodes with the same mesh id talk to each other.",
)
@click.option(
    "--log-level", type=click.Choice(_LOG_LEVELS, case_sensitive=False), default="info", show_default=True
)
@click.pass_context
def join(
    ctx: click.Context,
    name: str,
    http_addr: tuple[str, int],
    mesh_addr: tuple[str, int],
    data_addr: tuple[str, int],
    seeds: tuple[tuple[str, int], ...],
    mdns: bool,
    interfaces: tuple[str, ...],
    region: str,
    zone: str,
    profile: str,
    data_dir: Path | None,
    deploy: tuple[str, ...],
    mesh_id: str,
    log_level: str,
) -> None:
    """Run this machine's agent and join the mesh (until Ctrl-C or SIGTERM)."""
    try:
        config = AgentConfig(
            name=name,
            http_host=http_addr[0],
            http_port=http_addr[1],
            mesh_host=mesh_addr[0],
            mesh_port=mesh_addr[1],
            data_host=data_addr[0],
            data_port=data_addr[1],
            seeds=tuple(join_host_port(host, port) for host, port in seeds),
            mdns=mdns,
            interfaces=interfaces,
            region=region,
            zone=zone,
            profile=profile,
            mesh_id=mesh_id,
            deploy=deploy,
        )
        if data_dir is not None:
            # Replaced only when given, so AgentConfig's default ($MESHNODE_HOME) decides otherwise.
            config = dataclasses.replace(config, data_dir=data_dir)
    except ValueError as exc:
        _usage_exit(ctx, str(exc))
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .agent import run_agent

    try:
        code = run_agent(config)
    except (MeshnodeError, OSError) as exc:
        # Startup failures such as a port in use are the user's to fix, not a crash to report.
        raise click.ClickException(str(exc)) from exc
    ctx.exit(code)


main.add_command(predict)
main.add_command(models)
main.add_command(deploy)
main.add_command(undeploy)
main.add_command(deployments)


def _usage_exit(ctx: click.Context, message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    ctx.exit(2)


@main.command()
@click.option(
    "--node",
    "node_url",
    metavar="URL",
    default=None,
    show_default=DEFAULT_NODE_URL,
    help="Any node's HTTP address.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw /v1/mesh body.")
@click.option("--discover", is_flag=True, help="Without --node, find a node by mDNS on --interface.")
@click.option(
    "--interface",
    "interfaces",
    type=IPAddress(),
    multiple=True,
    help="Interface address to browse mDNS on (with --discover); repeatable.",
)
@click.option("--mesh-id", default=agent_default("mesh_id"), show_default=True, help="Mesh to discover.")
def peers(
    node_url: str | None, as_json: bool, discover: bool, interfaces: tuple[str, ...], mesh_id: str
) -> None:
    """Show the members of the mesh as one node sees them."""
    if node_url is None:
        node_url = _discover_node(interfaces, mesh_id) if discover else DEFAULT_NODE_URL
    view = fetch_mesh(node_url)
    click.echo(json.dumps(view, indent=2) if as_json else format_peers_table(view))


def _discover_node(interfaces: Sequence[str], mesh_id: str) -> str:
    if not interfaces:
        raise click.UsageError("--discover needs at least one --interface to browse mDNS on")
    from .discovery import browse_once

    try:
        found = asyncio.run(browse_once(list(interfaces), mesh_id, DISCOVER_TIMEOUT_S))
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc
    if not found:
        raise click.ClickException(
            f"no node of mesh {mesh_id!r} answered mDNS on {', '.join(interfaces)} "
            f"within {DISCOVER_TIMEOUT_S:g} s"
        )
    return f"http://{found[0].http_addr}"


def fetch_mesh(node_url: str, timeout_s: float = PEERS_TIMEOUT_S) -> dict[str, Any]:
    """GET ``/v1/mesh`` from a node; a ``ClickException`` naming the URL if that fails."""
    base = node_url.rstrip("/")
    if "://" not in base:
        base = f"http://{base}"
    url = f"{base}/v1/mesh"
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach a meshnode at {base}: {exc or type(exc).__name__}") from exc
    if response.status_code != 200:
        raise click.ClickException(f"{url} answered {response.status_code}: {error_message(response)}")
    try:
        view = response.json()
    except ValueError as exc:
        raise click.ClickException(f"{url} did not answer JSON; is it a meshnode?") from exc
    if not isinstance(view, dict) or not isinstance(view.get("members"), list):
        raise click.ClickException(f"{url} answered an unexpected body; is it a meshnode?")
    return view


# -- the peers table, shared by `peers` and `demo` --------------------------------------------


def format_peers_table(view: Mapping[str, Any]) -> str:
    """Render a ``/v1/mesh`` body as a table, this node first and marked with ``*``."""
    self_id = view.get("self")
    members = [member for member in view.get("members", []) if isinstance(member, Mapping)]
    members.sort(key=lambda m: (m.get("id") != self_id, str(m.get("name", "")), str(m.get("id", ""))))
    header = ("", "NAME", "ID", "STATUS", "HTTP", "DEVICE", "LOAD", "MODELS")
    rows = [
        (
            "*" if member.get("id") == self_id else "",
            str(member.get("name") or "-"),
            str(member.get("id") or "-")[:8],
            str(member.get("status") or "-"),
            str(member.get("http") or "-"),
            _device_summary(member.get("device")),
            _load_summary(member.get("load")),
            _models_summary(member.get("models")),
        )
        for member in members
    ]
    lines = format_table(header, rows)
    return "\n".join(lines)


def _device_summary(device: object) -> str:
    if not isinstance(device, Mapping):
        return "-"
    listed = device.get("accelerators")
    accelerators = [item for item in listed if isinstance(item, Mapping)] if isinstance(listed, list) else []
    if accelerators:
        name = str(accelerators[0].get("name") or accelerators[0].get("kind") or "accelerator")
        return name if len(accelerators) == 1 else f"{len(accelerators)}x {name}"
    kind, cores, memory = device.get("kind"), device.get("cores"), device.get("memory")
    parts = [str(kind)] if isinstance(kind, str) and kind else []
    if isinstance(cores, int):
        parts.append(f"{cores}c")
    if isinstance(memory, int | float):
        parts.append(f"{memory / 2**30:.1f}G")
    return " ".join(parts) or "-"


def _load_summary(load: object) -> str:
    if not isinstance(load, Mapping):
        return "-"
    parts = []
    cpu, in_flight = load.get("cpu"), load.get("in_flight")
    if isinstance(cpu, int | float):
        parts.append(f"{cpu:.0f}%")
    if isinstance(in_flight, int):
        parts.append(f"{in_flight} in flight")
    return " ".join(parts) or "-"


def _models_summary(models: object, shown: int = 3) -> str:
    if not isinstance(models, list | tuple) or not models:
        return "-"
    names = [str(model) for model in models]
    more = f" +{len(names) - shown}" if len(names) > shown else ""
    return ",".join(names[:shown]) + more


# -- demo -------------------------------------------------------------------------------------


def _report_traffic(traffic: Traffic) -> None:
    served = ", ".join(f"{name} {count}" for name, count in sorted(traffic.served.items()))
    click.echo(
        f"{traffic.total} echo requests sent to the survivors during the kill and restart: "
        f"{len(traffic.failures)} failed (served by: {served})"
    )
    for failure in traffic.failures[:5]:
        click.echo(f"  failed: {failure}")


@main.command()
@click.option("--nodes", type=click.IntRange(1, 32), default=3, show_default=True, help="Agents to start.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop this many seconds after the mesh formed (default: run until Ctrl-C).",
)
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65000),
    default=DEMO_BASE_PORT,
    show_default=True,
    help="First port to try; free ones above it are used.",
)
@click.option(
    "--failover/--no-failover",
    default=True,
    show_default=True,
    help="Once formed, SIGKILL one agent, show the others detect it, restart it and show it rejoin.",
)
@click.option(
    "--apps/--no-apps", default=True, show_default=True, help="Deploy the demo apps and send samples."
)
@click.option(
    "--image",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("meshnode-demo.png"),
    show_default=True,
    help="Where to save the text-to-image sample.",
)
def demo(nodes: int, duration: float | None, base_port: int, failover: bool, apps: bool, image: Path) -> None:
    """Run a local mesh of agents on this machine and show it forming."""
    from . import demo_apps, demo_placement, demo_traffic
    from .demo import DemoError, DemoMesh, sigterm_as_interrupt

    try:
        deploy = demo_apps.plan(nodes) if apps else {}
        with sigterm_as_interrupt(), DemoMesh(nodes, base_port, log=click.echo, deploy=deploy) as mesh:
            took_s = mesh.wait_formed(DEMO_FORM_TIMEOUT_S)
            click.echo(format_peers_table(mesh.view()))
            click.echo(f"mesh of {nodes} formed in {took_s:.1f} s")
            if apps:
                demo_apps.run_samples([node.url for node in mesh.nodes], image.resolve(), click.echo)
                hosts = {
                    mesh.nodes[i].name
                    for i, specs in deploy.items()
                    if any(s.startswith("echo=") for s in specs)
                }
                mesh.wait_until(
                    lambda: demo_traffic.ready_replicas(mesh.view()) >= hosts,
                    DEMO_FORM_TIMEOUT_S,
                    "echo replicas",
                )
                demo_traffic.show_routing({node.name: node.url for node in mesh.nodes}, 12, click.echo)
                demo_placement.declare([node.url for node in mesh.nodes], DEMO_FORM_TIMEOUT_S, click.echo)
                demo_placement.show([node.url for node in mesh.nodes], DEMO_FORM_TIMEOUT_S, click.echo)
            if failover and nodes >= 2:
                victim = mesh.nodes[-1].name
                survivors = [node.url for node in mesh.nodes[:-1]]
                with demo_traffic.Traffic(survivors if apps else []) as traffic:
                    if apps:
                        mesh.wait_until(lambda: traffic.total >= 20, DEMO_FORM_TIMEOUT_S, "traffic to start")
                    click.echo(
                        f"\nkill -9 {victim} mid-traffic: the others must notice on their own (SWIM)..."
                    )
                    report = mesh.crash_and_rejoin(nodes - 1, DEMO_FORM_TIMEOUT_S)
                if apps:
                    _report_traffic(traffic)
                click.echo(f"every survivor marked {victim} dead {report.dead_after_s:.1f} s after SIGKILL")
                click.echo(
                    f"restarted {victim} (pid {report.restarted_pid}) on its data dir: back alive "
                    f"everywhere in {report.rejoined_after_s:.1f} s (process start included), same id, "
                    f"incarnation {report.incarnation_before} -> {report.incarnation_after}"
                )
                click.echo(format_peers_table(mesh.view()))
                if apps:
                    click.echo(
                        f"\n{demo_placement.NAME!r} after the kill and restart (placement re-converged):"
                    )
                    demo_placement.show([node.url for node in mesh.nodes], DEMO_FORM_TIMEOUT_S, click.echo)
            click.echo(f"refreshing every {DEMO_REFRESH_S:g} s")
            deadline = None if duration is None else time.monotonic() + duration
            while deadline is None or time.monotonic() + DEMO_REFRESH_S <= deadline:
                time.sleep(DEMO_REFRESH_S)  # the display's cadence, not a condition being polled
                mesh.check_running()
                click.clear()  # does nothing when stdout is not a terminal
                click.echo(f"\n{mesh.nodes[0].name}'s view at {time.strftime('%H:%M:%S')} (Ctrl-C stops)")
                click.echo(format_peers_table(mesh.view()))
            if deadline is not None:
                time.sleep(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        pass  # Ctrl-C (or SIGTERM) is how a demo without --duration ends
    except (DemoError, demo_apps.DemoAppError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("demo stopped")

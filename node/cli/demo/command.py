"""The ``meshnode demo`` command: a local mesh, the demo apps, routing, placement and a kill -9."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..peers import format_peers_table
from ..waiting import Waiting

if TYPE_CHECKING:
    from .traffic import Traffic

__all__ = ["demo"]

# The demo's agents start in parallel on a possibly slow, shared machine.
DEMO_FORM_TIMEOUT_S = 60.0
DEMO_REFRESH_S = 2.0
DEMO_BASE_PORT = 18470


def _report_traffic(traffic: Traffic) -> None:
    served = ", ".join(f"{name} {count}" for name, count in sorted(traffic.served.items()))
    click.echo(
        f"{traffic.total} echo requests sent to the survivors during the kill and restart: "
        f"{len(traffic.failures)} failed (served by: {served})"
    )
    for failure in traffic.failures[:5]:
        click.echo(f"  failed: {failure}")


@click.command()
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
    from . import apps as demo_apps
    from . import placement as demo_placement
    from . import traffic as demo_traffic
    from .live import live_view
    from .mesh import DemoError, DemoMesh, sigterm_as_interrupt

    try:
        deploy = demo_apps.plan(nodes) if apps else {}
        with sigterm_as_interrupt(), DemoMesh(nodes, base_port, log=click.echo, deploy=deploy) as mesh:
            # Every wait shows a spinner on a terminal's stderr, saying what it waits for.
            with Waiting(f"starting {nodes} agents") as waiting:
                took_s = mesh.wait_formed(DEMO_FORM_TIMEOUT_S, waiting.update)
            click.echo(format_peers_table(mesh.view()))
            click.echo(f"mesh of {nodes} formed in {took_s:.1f} s")
            if apps:
                urls = [node.url for node in mesh.nodes]
                with Waiting("loading apps") as waiting:
                    demo_apps.wait_ready(urls, click.echo, waiting.update)
                demo_apps.run_samples(urls, image.resolve(), click.echo)
                hosts = {
                    mesh.nodes[i].name
                    for i, specs in deploy.items()
                    if any(s.startswith("echo=") for s in specs)
                }
                with Waiting(f"waiting for the echo replicas on {', '.join(sorted(hosts))} to be ready"):
                    mesh.wait_until(
                        lambda: demo_traffic.ready_replicas(mesh.view()) >= hosts,
                        DEMO_FORM_TIMEOUT_S,
                        "echo replicas",
                    )
                demo_traffic.show_routing({node.name: node.url for node in mesh.nodes}, 12, click.echo)
                with Waiting(f"waiting until placement serves {demo_placement.NAME!r} on two nodes"):
                    demo_placement.declare(urls, DEMO_FORM_TIMEOUT_S, click.echo)
                    demo_placement.show(urls, DEMO_FORM_TIMEOUT_S, click.echo)
            if failover and nodes >= 2:
                victim = mesh.nodes[-1].name
                survivors = [node.url for node in mesh.nodes[:-1]]
                with demo_traffic.Traffic(survivors if apps else []) as traffic:
                    if apps:
                        mesh.wait_until(lambda: traffic.total >= 20, DEMO_FORM_TIMEOUT_S, "traffic to start")
                    click.echo(
                        f"\nkill -9 {victim} mid-traffic: the others must notice on their own (SWIM)..."
                    )
                    with Waiting(f"killed {victim}") as waiting:
                        report = mesh.crash_and_rejoin(nodes - 1, DEMO_FORM_TIMEOUT_S, waiting.update)
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
                    # Restarted replicas load for a while: the table waits for them (bounded).
                    with Waiting("waiting for the restarted replicas to be ready"):
                        demo_placement.show_reconverged(urls, DEMO_FORM_TIMEOUT_S, click.echo)
            deadline = None if duration is None else time.monotonic() + duration
            terminal = sys.stdout.isatty()
            live_view(mesh, mesh.nodes[0].name, DEMO_REFRESH_S, deadline, terminal=terminal)
    except KeyboardInterrupt:
        pass  # Ctrl-C (or SIGTERM) is how a demo without --duration ends
    except (DemoError, demo_apps.DemoAppError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("demo stopped")

"""``meshnode top``: a live view of the mesh in the terminal, redrawn in place every ``--interval``.

Each refresh reads ``GET /v1/mesh`` and ``GET /v1/deployments`` from one node and draws them
(``top_view.py``: nodes, deployments, rates, latencies). When that node stops answering, the view
says so in red and reads another live member it knew of (``fallbacks``), and goes back to the asked
node as soon as it answers again; with no member answering it keeps the last view, marked with its
time, and keeps trying. Ctrl-C ends it with status 0.

Output: on a terminal, the live view (rich ``Live``). ``--once``, and any standard output that is
not a terminal, print one frame and exit (plain text in a pipe). ``--json`` prints the data instead:
one object with ``--once``, else one line of JSON per refresh (JSON Lines) until interrupted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import click

from ..config import DEFAULT_NODE_URL
from .node_http import NodeAccess, access_options, request_node
from .params import IPAddress, NodeURL, agent_default
from .peers import discover_node, fetch_mesh
from .text_table import show
from .top_view import Frame, TopData, render, summarize, to_json

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["LiveView", "Reader", "fallbacks", "frames", "next_frame", "top"]

# A node answers both calls from memory; longer means it is hung or unreachable.
READ_TIMEOUT_S = 3.0
# Other members tried, in turn, while the asked node does not answer.
MAX_FALLBACKS = 3


@click.command()
@click.option(
    "--node",
    "node_url",
    type=NodeURL(),
    default=None,
    show_default=DEFAULT_NODE_URL,
    help="Any node's HTTP address (https://HOST:PORT for a node with a certificate).",
)
@access_options
@click.option(
    "--interval",
    "interval_s",
    type=click.FloatRange(0.2, 3600),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option("--once", is_flag=True, help="Print one frame and exit (what a pipe gets anyway).")
@click.option("--json", "as_json", is_flag=True, help="Print the data as JSON (a line per refresh).")
@click.option("--discover", is_flag=True, help="Without --node, find a node by mDNS on --interface.")
@click.option(
    "--interface",
    "interfaces",
    type=IPAddress(),
    multiple=True,
    help="Interface address to browse mDNS on (with --discover); repeatable.",
)
@click.option("--mesh-id", default=agent_default("mesh_id"), show_default=True, help="Mesh to discover.")
def top(
    node_url: str | None,
    access: NodeAccess,
    interval_s: float,
    once: bool,
    as_json: bool,
    discover: bool,
    interfaces: tuple[str, ...],
    mesh_id: str,
) -> None:
    """Watch the mesh live: nodes, deployments, request rates and latencies."""
    if node_url is None:
        node_url = discover_node(interfaces, mesh_id) if discover else DEFAULT_NODE_URL
    reader = Reader(node_url, access, min(READ_TIMEOUT_S, max(1.0, interval_s)))
    if once or (not as_json and not sys.stdout.isatty()):
        frame = next_frame(None, node_url, reader.read, time.time(), None)
        if frame.data is None:
            raise click.ClickException(frame.error or "no answer")
        if as_json:
            click.echo(json.dumps(to_json(frame), indent=2))
        else:
            show(render(frame))
        return
    # Ctrl-C is how a live view ends (status 0); a closed pipe (`| head`) ends a JSON stream.
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        if as_json:
            for frame in frames(node_url, reader.read, interval_s):
                click.echo(json.dumps(to_json(frame)))
                sys.stdout.flush()
        else:
            with LiveView() as view:
                for frame in frames(node_url, reader.read, interval_s):
                    view.show(frame)


Read = Callable[[], tuple[str, TopData, tuple[str, ...]]]


class Reader:
    """Reads the mesh from the asked node, or while it fails, from other members it listed."""

    def __init__(self, asked: str, access: NodeAccess, timeout_s: float) -> None:
        self.asked = asked
        self._access = access
        self._timeout_s = timeout_s
        self._known: list[str] = []

    def read(self) -> tuple[str, TopData, tuple[str, ...]]:
        """(the URL that answered, its data, notes); a ClickException with the asked node's error."""
        try:
            return self.asked, self._read_from(self.asked), ()
        except click.ClickException as exc:
            failure = exc
        for url in self._known:
            with contextlib.suppress(click.ClickException):
                data = self._read_from(url)
                return url, data, (f"{self.asked} does not answer ({failure.format_message()})",)
        raise failure

    def _read_from(self, url: str) -> TopData:
        mesh = fetch_mesh(url, self._timeout_s, access=self._access)
        response = request_node("GET", url, "/v1/deployments", self._access, timeout_s=self._timeout_s)
        try:
            deployments = response.json()
        except ValueError as exc:
            raise click.ClickException(f"{url} did not answer JSON; is it a meshnode?") from exc
        if not isinstance(deployments, dict):
            raise click.ClickException(f"{url} answered an unexpected body; is it a meshnode?")
        if url == self.asked:
            self._known = fallbacks(mesh, url)
        return summarize(mesh, deployments)


def fallbacks(mesh: Mapping[str, Any], asked: str, limit: int = MAX_FALLBACKS) -> list[str]:
    """URLs of other alive members a view lists, to read while the asked node does not answer.

    An address another machine cannot dial (unspecified, such as ``0.0.0.0``) is left out.
    """
    urls = []
    members = mesh.get("members")
    for member in members if isinstance(members, list) else []:
        if not isinstance(member, Mapping) or member.get("id") == mesh.get("self"):
            continue
        http = member.get("http")
        if member.get("status") != "alive" or not isinstance(http, str) or not http:
            continue
        host = http.rsplit(":", 1)[0].strip("[]")
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).is_unspecified:
                continue
        url = f"{'https' if member.get('tls') else 'http'}://{http}"
        if url != asked.rstrip("/"):
            urls.append(url)
    return urls[:limit]


def next_frame(previous: Frame | None, asked: str, read: Read, now: float, interval_s: float | None) -> Frame:
    """The frame after one read: new data, or the previous data with the failure."""
    try:
        answered_by, data, notes = read()
    except click.ClickException as exc:
        return Frame(
            asked=asked,
            answered_by=previous.answered_by if previous else None,
            data=previous.data if previous else None,
            at=previous.at if previous else now,
            error=exc.format_message(),
            interval_s=interval_s,
        )
    return Frame(asked, answered_by, data, now, None, interval_s, notes)


def frames(asked: str, read: Read, interval_s: float) -> Iterator[Frame]:
    """A frame now and one every `interval_s`, forever (the display's cadence, not a polled condition)."""
    frame: Frame | None = None
    while True:
        started = time.monotonic()
        frame = next_frame(frame, asked, read, time.time(), interval_s)
        yield frame
        time.sleep(max(0.0, interval_s - (time.monotonic() - started)))


class LiveView:
    """The frame redrawn in place on the terminal while inside it; the last one stays on exit."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.live import Live

        # Redrawn only when a frame arrives: nothing moves in between, so no refresh thread.
        self._live = Live(
            console=console or Console(highlight=False), auto_refresh=False, vertical_overflow="ellipsis"
        )

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def show(self, frame: Frame) -> None:
        """Draw `frame` over the previous one."""
        self._live.update(render(frame), refresh=True)

    def __exit__(self, *exc_info: object) -> None:
        self._live.stop()

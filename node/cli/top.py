"""``meshnode top``: a live view of the mesh in the terminal, redrawn in place every ``--interval``.

Each refresh reads ``GET /v1/mesh`` and ``GET /v1/deployments`` from one node, and ``GET /metrics``
from every live member (in parallel) for the request counters that rates are measured from
(``top_rates.py``); ``top_data.py`` turns the answers into rows, ``top_draw.py`` draws them. When
the asked node stops answering, the view says so and reads another live member it knew of
(``fallbacks``), going back to the asked node as soon as it answers; with no member answering it
keeps the last view, marked with its time, in red, and keeps trying. Ctrl-C ends it with status 0.

Output: on a terminal, the live view (rich ``Live``). ``--once``, and any standard output that is
not a terminal, print one frame and exit (plain text in a pipe), after sampling the counters twice
one ``--interval`` apart, as ``vmstat 2 2`` does, so that its rates are measured. ``--json`` prints
the data instead: one object with ``--once``, else one line of JSON per refresh (JSON Lines).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import click

from ..config import DEFAULT_NODE_URL
from .node_http import NodeAccess, access_options, discover_options, request_node
from .params import NodeURL
from .peers import discover_node, fetch_mesh
from .text_table import show
from .top_data import Frame, TopData, summarize, to_json
from .top_draw import render
from .top_rates import Counters, measure, parse

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "LiveView",
    "Reader",
    "fallbacks",
    "frames",
    "member_url",
    "next_frame",
    "scrape_targets",
    "top",
]

# A node answers both calls from memory; longer means it is hung or unreachable.
READ_TIMEOUT_S = 3.0
# Other members tried, in turn, while the asked node does not answer.
MAX_FALLBACKS = 3
# Scrapes of /metrics in flight at once, and nodes scraped per refresh: a view of a mesh larger than
# this measures the rates of its first nodes by name (a terminal shows no more rows anyway).
MAX_SCRAPES = 16
MAX_SCRAPED_NODES = 64


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
@discover_options
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
        time.sleep(interval_s)  # a second sample, for rates measured over the interval
        second = next_frame(frame, node_url, reader.read, time.time(), None)
        frame = second if second.error is None else frame
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
    """Reads the mesh from the asked node (or while it fails, another member) and every node's counters."""

    def __init__(
        self, asked: str, access: NodeAccess, timeout_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Read from `asked`; `clock` (monotonic seconds) times each scrape of the counters."""
        self.asked = asked
        self._access = access
        self._timeout_s = timeout_s
        self._clock = clock
        self._known: list[str] = []
        self._counters: dict[str, Counters] = {}

    def read(self) -> tuple[str, TopData, tuple[str, ...]]:
        """(the URL that answered, its data, notes); a ClickException with the asked node's error."""
        url, mesh, deployments, notes = self._views()
        counters, missed = self._scrape(mesh, url)
        measured = measure(self._counters, counters)
        self._counters = counters
        if missed:
            notes += (f"rates leave out {', '.join(missed)}: their /metrics did not answer",)
        return url, summarize(mesh, deployments, measured), notes

    def _views(self) -> tuple[str, dict[str, Any], dict[str, Any], tuple[str, ...]]:
        try:
            return (self.asked, *self._views_of(self.asked), ())
        except click.ClickException as exc:
            failure = exc
        for url in self._known:
            with contextlib.suppress(click.ClickException):
                mesh, deployments = self._views_of(url)
                return url, mesh, deployments, (f"{self.asked} does not answer ({failure.format_message()})",)
        raise failure

    def _views_of(self, url: str) -> tuple[dict[str, Any], dict[str, Any]]:
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
        return mesh, deployments

    def _scrape(self, mesh: Mapping[str, Any], answered_by: str) -> tuple[dict[str, Counters], list[str]]:
        """Every live member's request counters (by node id), and the names of those unread."""
        targets = scrape_targets(mesh, answered_by)
        if not targets:
            return {}, []

        def scrape(url: str) -> Counters | None:
            try:
                response = request_node("GET", url, "/metrics", self._access, timeout_s=self._timeout_s)
                return parse(response.text, self._clock())
            except (click.ClickException, ValueError):
                return None

        # In parallel: one slow node must not hold up the frame by N timeouts.
        with ThreadPoolExecutor(max_workers=min(MAX_SCRAPES, len(targets))) as pool:
            scraped = dict(zip(targets, pool.map(scrape, [url for url, _ in targets.values()]), strict=True))
        found = {node: counters for node, counters in scraped.items() if counters is not None}
        missed = sorted(targets[node][1] for node, counters in scraped.items() if counters is None)
        return found, missed


def member_url(member: Mapping[str, Any]) -> str | None:
    """The URL a member's advertised HTTP address is reached at, or None if another machine cannot dial it."""
    http = member.get("http")
    if not isinstance(http, str) or not http:
        return None
    host = http.rsplit(":", 1)[0].strip("[]")
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_unspecified:
            return None
    return f"{'https' if member.get('tls') else 'http'}://{http}"


def fallbacks(mesh: Mapping[str, Any], asked: str, limit: int = MAX_FALLBACKS) -> list[str]:
    """URLs of other alive members a view lists, to read while the asked node does not answer."""
    urls = [
        url
        for member in _members(mesh)
        if member.get("id") != mesh.get("self") and member.get("status") == "alive"
        if (url := member_url(member)) is not None and url != asked.rstrip("/")
    ]
    return urls[:limit]


def scrape_targets(mesh: Mapping[str, Any], answered_by: str) -> dict[str, tuple[str, str]]:
    """Node id -> (URL of its /metrics, name) for every live member; the answering node at its URL."""
    targets = {}
    for member in _members(mesh):
        node_id = str(member.get("id") or "")
        if not node_id or member.get("status") not in ("alive", "suspect"):
            continue
        url = answered_by if node_id == mesh.get("self") else member_url(member)
        if url is not None:
            targets[node_id] = (url, str(member.get("name") or node_id[:8]))
    return dict(list(targets.items())[:MAX_SCRAPED_NODES])


def _members(mesh: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    members = mesh.get("members")
    return [m for m in (members if isinstance(members, list) else []) if isinstance(m, Mapping)]


def next_frame(previous: Frame | None, asked: str, read: Read, now: float, interval_s: float | None) -> Frame:
    """The frame after one read: new data, or the previous data with the failure."""
    try:
        answered_by, data, notes = read()
    except click.ClickException as exc:
        return Frame(
            asked=asked,
            answered_by=previous.answered_by if previous else None,
            data=previous.data if previous else None,
            # Kept data shows when it arrived; with none, the time is the attempt's.
            at=previous.at if previous is not None and previous.data is not None else now,
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

"""The demo's live view: the first node's view of the mesh, refreshed until the demo ends.

In a terminal the table is redrawn in place every ``refresh_s``. Anywhere else (a pipe, a file, CI)
redrawing would append a whole table every refresh (hundreds of lines in minutes), so the table is
printed once and then one timestamped line per change (``peers.peer_changes``), as ``kubectl get
--watch`` and ``docker events`` do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import click

from ..peers import format_peers_table, peer_changes

__all__ = ["LiveMesh", "live_view"]


class LiveMesh(Protocol):
    """What the live view needs from the demo's mesh (``DemoMesh``)."""

    def check_running(self) -> None:
        """Raise if an agent has exited."""
        ...

    def view(self, index: int = 0) -> dict[str, Any]:
        """One agent's ``/v1/mesh`` body."""
        ...


def live_view(
    mesh: LiveMesh,
    name: str,
    refresh_s: float,
    deadline: float | None,
    *,
    terminal: bool,
    say: Callable[[str], Any] = click.echo,
) -> None:
    """Show `mesh` as node `name` sees it until `deadline` (monotonic; None: until interrupted)."""
    if terminal:
        say(f"refreshing every {refresh_s:g} s")
    else:
        say(f"watching every {refresh_s:g} s; not a terminal, so after this table only changes are printed")
        say(f"\n{name}'s view at {time.strftime('%H:%M:%S')} (Ctrl-C stops)")
        shown = mesh.view()
        say(format_peers_table(shown))
    while deadline is None or time.monotonic() + refresh_s <= deadline:
        time.sleep(refresh_s)  # the display's cadence, not a condition being polled
        mesh.check_running()
        view = mesh.view()
        if terminal:
            click.clear()
            say(f"\n{name}'s view at {time.strftime('%H:%M:%S')} (Ctrl-C stops)")
            say(format_peers_table(view))
            continue
        for line in peer_changes(shown, view):
            say(f"{time.strftime('%H:%M:%S')} {line}")
        shown = view
    if deadline is not None:
        time.sleep(max(0.0, deadline - time.monotonic()))

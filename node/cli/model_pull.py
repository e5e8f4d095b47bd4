"""``meshnode models pull NAME [--wait]``: get a model onto a node from the peers that hold it.

It asks the node (``--node``) to pull (``POST /v1/models/store/{name}/pull``, an ``admin`` route from
another machine); the node does the work, so the command may end while the pull goes on. With
``--wait`` it polls ``GET .../pull`` and shows the bytes held until the model is installed (exit 0)
or the pull failed (exit 1, with the node's reason). Registered on the ``models`` group in
``main.py``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from .node_http import NodeAccess, access_options, node_option, request_node

__all__ = ["pull"]

TIMEOUT_S = 10.0
# How often --wait asks: the answer is from the node's memory, and a chunk takes a fraction of a second.
POLL_S = 0.5


@click.command("pull")
@click.argument("name")
@click.option(
    "--wait", is_flag=True, help="Wait until the model is installed on the node (or the pull failed)."
)
@click.option(
    "--timeout", "timeout_s", type=float, default=3600.0, show_default=True, help="Seconds --wait waits."
)
@click.option("--json", "as_json", is_flag=True, help="Print the node's answer as JSON.")
@node_option
@access_options
def pull(name: str, wait: bool, timeout_s: float, as_json: bool, node_url: str, access: NodeAccess) -> None:
    """Pull model NAME onto the node from the peers that hold it."""
    path = f"/v1/models/store/{name}/pull"
    state: dict[str, Any] = request_node("POST", node_url, path, access, timeout_s=TIMEOUT_S).json()
    deadline = time.monotonic() + timeout_s
    shown = ""
    while wait and state.get("status") == "pulling":
        if not as_json:
            line = _describe(state)
            if line != shown:
                click.echo(line, err=True)
                shown = line
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"{name} is still being pulled after {timeout_s:g} s: {_describe(state)}"
            )
        time.sleep(POLL_S)
        state = request_node("GET", node_url, path, access, timeout_s=TIMEOUT_S).json()
    if as_json:
        click.echo(json.dumps(state, indent=2))
    else:
        click.echo(_describe(state))
    if state.get("status") == "failed":
        raise SystemExit(1)


def _describe(state: dict[str, Any]) -> str:
    name = state.get("name")
    match state.get("status"):
        case "held":
            return f"{name}: held ({_size(state.get('bytes', 0))}, digest {str(state.get('digest'))[:16]})"
        case "pulling":
            progress = state.get("progress") or {}
            done, total = int(progress.get("done", 0)), int(progress.get("total", 0))
            share = f" ({done / total:.0%})" if total else ""
            peers = ", ".join(progress.get("peers", [])) or "-"
            return f"{name}: pulling {_size(done)} of {_size(total)}{share} from {peers}"
        case "failed":
            return f"{name}: the pull failed: {state.get('error')}"
    return f"{name}: not on this node"


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB"

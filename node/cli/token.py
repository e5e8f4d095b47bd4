"""``meshnode token``: print the mesh's join token, as ``meshnode join`` finds it (or a new one).

The token goes alone to standard output, so ``TOKEN=$(meshnode token)`` works; where it came from
and how another machine joins go to standard error. ``--json`` prints ``{"token", "source", "path",
"key_id"}`` instead (``key_id``: the fingerprint nodes show in ``GET /v1/mesh`` as ``key_ids``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..config import default_data_dir
from ..errors import ConfigError
from ..trust.keyring import key_id
from ..trust.token import TOKEN_ENV, TokenSource, check_token, make_token, resolve_token
from .node_http import NodeAccess, access_options, node_option, request_node

__all__ = ["token"]

TIMEOUT_S = 10.0
# How often a rotation looks whether every node reached a step: a gossip round or so.
POLL_S = 0.25


@click.group(invoke_without_command=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    show_default="$MESHNODE_HOME or ~/.meshnode",
    help="The node's data dir, whose token file comes first.",
)
@click.option("--new", "new", is_flag=True, help="Print a fresh token and keep it nowhere (for a new mesh).")
@click.option("--json", "as_json", is_flag=True, help="Print the token, where it came from and its key id.")
@click.pass_context
def token(ctx: click.Context, data_dir: Path | None, new: bool, as_json: bool) -> None:
    """Print this mesh's join token (made and kept in the meshnode home if there is none yet)."""
    if ctx.invoked_subcommand is not None:
        return
    if new:
        made = make_token()
        click.echo(_token_json(made, "new", None) if as_json else made)
        return
    home = default_data_dir()
    try:
        found = resolve_token(
            token=None, token_file=None, environ=os.environ, data_dir=data_dir or home, home=home, create=True
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    assert found is not None  # create=True
    if as_json:
        path = None if found.path is None else str(found.path)
        click.echo(_token_json(found.value, found.source.name.lower(), path))
        return
    where = f"${TOKEN_ENV}" if found.source is TokenSource.ENV else str(found.path)
    made = "made and kept in" if found.source is TokenSource.CREATED else "from"
    click.echo(f"meshnode: the mesh token, {made} {where}. Another machine joins with:", err=True)
    click.echo(
        "    meshnode join --seed HOST:PORT --token TOKEN   (or --token-file, or $MESHNODE_TOKEN)", err=True
    )
    click.echo(found.value)


@token.command()
@click.option(
    "--to", "new_token", default=None, metavar="TOKEN", help="The new token [default: a fresh one]."
)
@click.option(
    "--step-timeout",
    type=click.FloatRange(1, 3600),
    default=120.0,
    show_default=True,
    help="Seconds every live node has to reach each step.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new token and each step's time as JSON.")
@node_option
@access_options
def rotate(
    new_token: str | None, step_timeout: float, as_json: bool, node_url: str, access: NodeAccess
) -> None:
    """Replace the mesh's token on every node with no downtime; print the new one.

    Three steps, each waited for on every live node: install the new token (all still seal with the
    old one), make it primary, remove the old ones. A node down meanwhile rejoins with --token NEW.
    """
    new = make_token() if new_token is None else new_token
    try:
        check_token(new, "--to")
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from exc
    new_id = key_id(new).hex()
    before = _call("GET", node_url, "/v1/keyring", access)["key_ids"]
    steps: list[tuple[str, dict[str, str], Callable[[list[str]], bool]]] = [
        ("install", {"op": "install", "token": new}, lambda ids: new_id in ids),
        ("use", {"op": "use", "key_id": new_id}, lambda ids: ids[:1] == [new_id]),
    ]
    for old in before:
        if old != new_id:
            steps.append((f"remove {old}", {"op": "remove", "key_id": old}, _without(old)))
    timings = []
    for name, body, reached in steps:
        _call("POST", node_url, "/v1/keyring", access, json=body)
        took = _wait_every_node(node_url, access, reached, step_timeout)
        click.echo(f"{name}: every live node there in {took:.1f} s", err=True)
        timings.append({"step": name, "seconds": round(took, 3)})
    click.echo("the mesh's token is now the one below; start new nodes with it (--token)", err=True)
    if as_json:
        click.echo(json.dumps({"token": new, "key_id": new_id, "steps": timings}, indent=2))
    else:
        click.echo(new)


def _token_json(value: str, source: str, path: str | None) -> str:
    return json.dumps(
        {"token": value, "source": source, "path": path, "key_id": key_id(value).hex()}, indent=2
    )


def _call(method: str, node_url: str, path: str, access: NodeAccess, **kwargs: Any) -> dict[str, Any]:
    body: dict[str, Any] = request_node(method, node_url, path, access, timeout_s=TIMEOUT_S, **kwargs).json()
    return body


def _wait_every_node(
    node_url: str, access: NodeAccess, reached: Callable[[list[str]], bool], timeout_s: float
) -> float:
    """Seconds until every alive or suspect member's key fingerprints pass `reached`."""
    started = time.monotonic()
    while True:
        members = _call("GET", node_url, "/v1/mesh", access)["members"]
        behind = [
            m["name"] for m in members if m["status"] in ("alive", "suspect") and not reached(m["key_ids"])
        ]
        if not behind:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise click.ClickException(
                f"{', '.join(behind)} did not reach this step within {timeout_s:g} s; the rotation "
                "stopped here, safely: run it again (with --to the same token) once they are back"
            )
        time.sleep(POLL_S)


def _without(old: str) -> Callable[[list[str]], bool]:
    return lambda ids: old not in ids

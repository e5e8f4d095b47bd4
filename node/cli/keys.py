"""``meshnode keys``: make, list and revoke the mesh's API keys (one HTTP call to any node).

A key is shown once, when made; nodes keep only its digest. Managing keys needs the admin scope,
which a command on the node's own machine (loopback) has without a key. ``--json`` on each prints
the node's answer: the new key with its id and scope, the list, or the revocation.
"""

from __future__ import annotations

import datetime
import json

import click

from .node_http import NodeAccess, access_options, node_option, request_node
from .text_table import show, styled, table

__all__ = ["keys"]

TIMEOUT_S = 10.0


@click.group()
def keys() -> None:
    """Make, list and revoke API keys (clients on other machines need one)."""


@keys.command("create")
@click.option(
    "--scope",
    type=click.Choice(["invoke", "admin"]),
    required=True,
    help="invoke: predict and read; admin: also declare deployments and manage keys.",
)
@click.option("--name", default="", help="A label to tell keys apart (who or what uses it).")
@click.option("--json", "as_json", is_flag=True, help="Print the node's answer: the key, its id and scope.")
@node_option
@access_options
def create(scope: str, name: str, as_json: bool, node_url: str, access: NodeAccess) -> None:
    """Make a key and print it (only now: it is kept nowhere in clear)."""
    body = request_node(
        "POST", node_url, "/v1/keys", access, timeout_s=TIMEOUT_S, json={"scope": scope, "name": name}
    ).json()
    click.echo(f"made key {body['id']} ({body['scope']}); it is shown this once:", err=True)
    click.echo(json.dumps(body, indent=2) if as_json else body["key"])


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the raw /v1/keys body.")
@node_option
@access_options
def list_keys(as_json: bool, node_url: str, access: NodeAccess) -> None:
    """List every key (never a secret)."""
    body = request_node("GET", node_url, "/v1/keys", access, timeout_s=TIMEOUT_S).json()
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    rows = [
        (
            key["id"],
            key["name"] or "-",
            key["scope"],
            _utc(key["created_ms"]),
            styled("revoked", "dim") if key["revoked"] else styled("active", "green"),
        )
        for key in body["keys"]
    ]
    show(table(("ID", "NAME", "SCOPE", "CREATED (UTC)", "STATE"), rows, wrap={1}, drop=(3,)))


@keys.command("revoke")
@click.argument("key_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the node's answer as JSON.")
@node_option
@access_options
def revoke(key_id: str, as_json: bool, node_url: str, access: NodeAccess) -> None:
    """Revoke key ID on every node, for good."""
    response = request_node("DELETE", node_url, f"/v1/keys/{key_id}", access, timeout_s=TIMEOUT_S)
    click.echo(json.dumps(response.json(), indent=2) if as_json else f"revoked key {key_id}")


def _utc(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M")

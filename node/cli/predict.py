"""``meshnode predict``: send one request to a deployment through any node, with the Python client.

JSON in (an argument, ``-`` for standard input, or none for ``{}``); the answer printed as JSON, the
chunks of a stream printed as they arrive (one line each: JSON, or the text itself), or a file answer
written to ``--output``. Where the answer came from (``X-Mesh-Route``) and its request id go to
standard error, so standard output stays the answer alone.

Nodes: ``--node URL`` (repeatable: the client fails over between them and to the other live nodes
the mesh names), ``http://127.0.0.1:8470`` when none is given, or ``--discover`` to find the mesh by
mDNS on ``--interface`` (default: this machine's LAN address, as an agent started with defaults
announces on) for ``--mesh-id``. ``https://`` nodes are verified against the public CAs, or only
``--ca-cert FILE`` (``$MESHNODE_CA_CERT``) for a private CA. An HTTP error prints ``STATUS: message``
and exits with 1.
"""

from __future__ import annotations

import json
import mimetypes
import sys
from pathlib import Path
from typing import Any

import click

from ..client.errors import ClientError
from ..client.sync import MeshClient
from .node_http import MeshEntry, entry_options

__all__ = ["accept_for", "parse_body", "predict"]


@click.command()
@click.argument("deployment")
@click.argument("body", required=False, default=None, metavar="[JSON]")
@click.option("--stream", is_flag=True, help='Stream the answer (adds "stream": true to the body).')
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Ask for a file answer (Accept from the extension, e.g. .png) and write it here.",
)
@entry_options
@click.option("--hint", default=None, help="Routing hint (X-Mesh-Hint): prefer replicas that hold it.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0, 3600, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds the request may take in all, failovers included.",
)
def predict(
    deployment: str,
    body: str | None,
    stream: bool,
    output: Path | None,
    mesh: MeshEntry,
    hint: str | None,
    timeout_s: float,
) -> None:
    """Run one request on DEPLOYMENT anywhere in the mesh."""
    request = parse_body(body)
    if stream and output is not None:
        raise click.UsageError("--stream and --output do not go together")
    try:
        with mesh.client(timeout=timeout_s, hint=hint) as client:
            if stream:
                _print_stream(client, deployment, request)
            elif output is not None:
                _write_file(client, deployment, request, output)
            else:
                result = client.call(deployment, request)
                _report_route(result.route, result.request_id)
                click.echo(json.dumps(result.data, indent=2))
    except ClientError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:  # a bad --interface, or --output not writable
        raise click.ClickException(str(exc)) from exc


def _print_stream(client: MeshClient, deployment: str, request: dict[str, Any]) -> None:
    with client.stream(deployment, request) as chunks:
        _report_route(chunks.route, chunks.request_id)
        for chunk in chunks:
            click.echo(chunk if isinstance(chunk, str) else json.dumps(chunk))
            sys.stdout.flush()


def _write_file(client: MeshClient, deployment: str, request: dict[str, Any], output: Path) -> None:
    result = client.call(deployment, request, accept=accept_for(output))
    _report_route(result.route, result.request_id)
    # A predictor that answered JSON where a file was asked for: its JSON is what gets written.
    content = result.data if isinstance(result.data, bytes) else json.dumps(result.data).encode()
    output.write_bytes(content)
    click.echo(f"wrote {output} ({len(content)} bytes)", err=True)


def parse_body(body: str | None) -> dict[str, Any]:
    """The JSON object of a ``[JSON]`` argument (``-``: standard input; none: ``{}``), or a usage error."""
    if body is None:
        return {}
    text = sys.stdin.read() if body == "-" else body
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="JSON") from exc
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object", param_hint="JSON")
    return parsed


def accept_for(output: Path) -> str:
    """The media type to ask for, from a file name's extension."""
    return mimetypes.guess_type(output.name)[0] or "application/octet-stream"


def _report_route(route: tuple[str, ...], request_id: str) -> None:
    click.echo(f"served by {','.join(route) or '?'} (request {request_id or '?'})", err=True)

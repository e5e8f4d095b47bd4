"""``meshnode predict``: send one request to a deployment through any node.

JSON in (an argument, ``-`` for standard input, or none for ``{}``); the answer printed as JSON, the
chunks of a stream printed as they arrive, or a file answer written to ``--output``. Where the answer
came from (``X-Mesh-Route``) and its request id go to standard error, so standard output stays the
answer alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import httpx

from .config import DEFAULT_NODE_URL


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
@click.option("--node", "node_url", metavar="URL", default=DEFAULT_NODE_URL, show_default=True)
@click.option(
    "--timeout", "timeout_s", type=click.FloatRange(0, 3600, min_open=True), default=60.0, show_default=True
)
def predict(
    deployment: str, body: str | None, stream: bool, output: Path | None, node_url: str, timeout_s: float
) -> None:
    """Run one request on DEPLOYMENT anywhere in the mesh."""
    request = _parse_body(body)
    if stream:
        request["stream"] = True
    headers = {"X-Request-Timeout": f"{timeout_s:g}"}
    if output is not None:
        headers["Accept"] = _accept_for(output)
    url = f"{node_url.rstrip('/')}/v1/predict/{deployment}"
    try:
        with httpx.stream("POST", url, json=request, headers=headers, timeout=timeout_s + 5) as response:
            if response.status_code != 200:
                response.read()
                raise click.ClickException(f"{response.status_code}: {error_message(response)}")
            _report_route(response)
            if stream:
                for line in response.iter_lines():
                    if line:
                        click.echo(line)
                        sys.stdout.flush()
            elif output is not None:
                output.write_bytes(response.read())
                click.echo(f"wrote {output} ({output.stat().st_size} bytes)", err=True)
            else:
                click.echo(json.dumps(json.loads(response.read()), indent=2))
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {node_url}: {exc or type(exc).__name__}") from exc


def _parse_body(body: str | None) -> dict[str, Any]:
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


def _accept_for(output: Path) -> str:
    import mimetypes

    return mimetypes.guess_type(output.name)[0] or "application/octet-stream"


def _report_route(response: httpx.Response) -> None:
    route = response.headers.get("X-Mesh-Route", "?")
    click.echo(f"served by {route} (request {response.headers.get('X-Request-Id', '?')})", err=True)


def error_message(response: httpx.Response) -> str:
    """The message of a meshnode JSON error, or the start of the body."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase

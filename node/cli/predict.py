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

Waiting: a node holds a request while a replica cold-starts, and answers 503 (loading, not ready)
or 429 (every replica busy) with ``Retry-After``. Such an answer is waited out and the request sent
again (``retry_pause``), within ``--timeout``, unless ``--no-retry``. Meanwhile a spinner on standard
error says what is awaited (``waiting.py``; on a terminal only, a line per retry elsewhere).
``--json`` prints the answer with where it ran: ``{"data", "route", "request_id", "node"}``, or with
``--stream`` each chunk as one line of JSON.
"""

from __future__ import annotations

import json
import mimetypes
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..client.answers import Result
from ..client.errors import ClientError, Unavailable
from ..client.exchange import JSON_TYPE
from ..client.sync import ChunkStream
from .node_http import MeshEntry, entry_options
from .waiting import Waiting

__all__ = ["accept_for", "parse_body", "predict", "retry_pause"]

# A 503 or 429 without Retry-After is tried again after this long (the node's own default).
DEFAULT_RETRY_AFTER_S = 1.0


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
    help="Seconds the request may take in all, failovers and retries included.",
)
@click.option(
    "--retry/--no-retry",
    default=True,
    show_default=True,
    help="Wait out 503 (loading) and 429 (busy) answers within --timeout, and send again.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the answer with its route and request id.")
def predict(
    deployment: str,
    body: str | None,
    stream: bool,
    output: Path | None,
    mesh: MeshEntry,
    hint: str | None,
    timeout_s: float,
    retry: bool,
    as_json: bool,
) -> None:
    """Run one request on DEPLOYMENT anywhere in the mesh."""
    request = parse_body(body)
    if stream and output is not None:
        raise click.UsageError("--stream and --output do not go together")
    deadline = time.monotonic() + timeout_s
    accept = accept_for(output) if output is not None else JSON_TYPE
    try:
        with mesh.client(timeout=timeout_s, hint=hint) as client:

            def send(left_s: float) -> ChunkStream | Result:
                if stream:
                    return client.stream(deployment, request, timeout=left_s)
                return client.call(deployment, request, accept=accept, timeout=left_s)

            with Waiting(f"{deployment}: waiting for the answer") as waiting:
                answer = _sending(send, deployment, deadline, waiting, retry=retry)
            if isinstance(answer, ChunkStream):
                _print_stream(answer, as_json)
            elif output is not None:
                _write_file(answer, output, as_json)
            else:
                _report_route(answer.route, answer.request_id)
                click.echo(json.dumps(_described(answer) if as_json else answer.data, indent=2))
    except ClientError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:  # a bad --interface, or --output not writable
        raise click.ClickException(str(exc)) from exc


def retry_pause(error: ClientError, now: float, deadline: float) -> float | None:
    """Seconds to wait before sending again after `error`, or None to give up with it.

    Only a 503 (not ready: loading, cold start, no replica yet) or a 429 (every replica busy) is
    worth another try, after its Retry-After, and only when there is still time after the pause.
    """
    if not isinstance(error, Unavailable):
        return None
    pause = error.retry_after_s if error.retry_after_s is not None else DEFAULT_RETRY_AFTER_S
    return pause if now + pause < deadline else None


def _sending(
    send: Callable[[float], ChunkStream | Result],
    deployment: str,
    deadline: float,
    waiting: Waiting,
    *,
    retry: bool,
) -> ChunkStream | Result:
    """``send(seconds left)`` until it answers; 503 and 429 waited out (``retry_pause``) if `retry`."""
    while True:
        try:
            return send(max(deadline - time.monotonic(), 0.001))
        except Unavailable as exc:
            pause = retry_pause(exc, time.monotonic(), deadline) if retry else None
            if pause is None:
                raise
            waiting.note(f"{deployment}: {exc}; trying again in {pause:g} s")
            waiting.update(f"{deployment}: {exc.message}; trying again")
            time.sleep(pause)  # the node's Retry-After: how long it asked us to stay away
            waiting.update(f"{deployment}: waiting for the answer")


def _print_stream(chunks: ChunkStream, as_json: bool) -> None:
    with chunks:
        _report_route(chunks.route, chunks.request_id)
        for chunk in chunks:
            click.echo(json.dumps(chunk) if as_json or not isinstance(chunk, str) else chunk)
            sys.stdout.flush()


def _write_file(result: Result, output: Path, as_json: bool) -> None:
    _report_route(result.route, result.request_id)
    # A predictor that answered JSON where a file was asked for: its JSON is what gets written.
    content = result.data if isinstance(result.data, bytes) else json.dumps(result.data).encode()
    output.write_bytes(content)
    click.echo(f"wrote {output} ({len(content)} bytes)", err=True)
    if as_json:
        where = {key: value for key, value in _described(result).items() if key != "data"}
        click.echo(json.dumps({"output": str(output), "bytes": len(content), **where}, indent=2))


def _described(result: Result) -> dict[str, Any]:
    """The answer with where it ran, for ``--json``."""
    return {
        "data": result.data,
        "content_type": result.content_type,
        "route": list(result.route),
        "request_id": result.request_id,
        "node": result.node,
    }


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

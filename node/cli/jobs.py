"""``meshnode jobs``: run a request as a job the mesh keeps, and follow, fetch, cancel or list jobs.

    meshnode jobs submit DEPLOYMENT [JSON] [--wait] [--output FILE] [--webhook URL] [--idempotency-key K]
    meshnode jobs status ID               the job's status, as JSON
    meshnode jobs result ID [--wait] [--output FILE]
    meshnode jobs cancel ID [--json]
    meshnode jobs ls [--deployment D] [--status S] [--limit N] [--cursor C | --all] [--json]

Each goes through the Python client (``MeshClient``: ``submit``, ``status``, ``wait``...), entering
the mesh as ``meshnode predict`` does (``--node URL`` repeatable, or ``--discover``; ``--api-key``,
``--ca-cert``); a job id is valid on every node. ``submit`` prints the job's id, so a script can keep
it (``id=$(meshnode jobs submit ...)``); with ``--wait`` it prints the answer instead, as predict
would. While waiting, a progress bar on standard error when it is a terminal (``job_progress.py``).
The answer is printed as JSON, or a file answer written to ``--output`` (or to standard output when
that is not a terminal). ``--json`` (submit, cancel, ls) prints the jobs' status JSON, as ``status``
always does; ``status`` takes it too, so every command that prints data takes ``--json``.

Exit codes: 0; 1 for an error, in one ``Error:`` line: the job failed (its error), was cancelled or
has expired, is unknown, or has not ended (``result`` without ``--wait``); 2 for a usage error; 130
when waiting was interrupted (Ctrl-C): the job goes on in the mesh.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..client.errors import ClientError, JobNotFinished
from ..client.job_plans import MAX_LISTED
from ..client.job_view import JOB_STATES, Job, state_in_words
from ..client.sync import MeshClient
from ..mesh.jobs import JOB_ID_PATTERN
from .job_progress import JobProgress
from .node_http import MeshEntry, entry_options
from .params import agent_default
from .predict import accept_for, parse_body
from .text_table import FitTable, plain, show, state_style, styled, table

__all__ = ["format_jobs_table", "jobs", "jobs_table"]

# What a node gives a job that names no deadline (X-Request-Timeout), for --timeout's help.
_NODE_TIMEOUT_S = agent_default("request_timeout_s")
# Exit status of a command whose wait was interrupted (128 + SIGINT, as a shell reports it).
INTERRUPTED_EXIT = 130

_output_option = click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the answer to this file (submit: ask for a file answer, Accept from the extension).",
)
_wait_option = click.option(
    "--wait", "wait", is_flag=True, help="Wait for the job to end (progress on stderr)."
)


class _JobIdCommand(click.Command):
    """A command taking a job ID, which may start with "-" (ids are base64url): such an ID is no option."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Move an ID that looks like an option behind ``--``, unless it is an option's value."""
        options = [param for param in self.params if isinstance(param, click.Option)]
        valued = {name for option in options if not option.is_flag for name in option.opts}
        for index, arg in enumerate(args):
            if arg == "--":
                break
            follows_option = index > 0 and args[index - 1] in valued
            if arg.startswith("-") and JOB_ID_PATTERN.fullmatch(arg) and not follows_option:
                args = [*args[:index], *args[index + 1 :], "--", arg]
                break
        return super().parse_args(ctx, args)


@click.group()
def jobs() -> None:
    """Run requests as jobs the mesh keeps, and follow, fetch, cancel or list them."""


@jobs.command("submit")
@click.argument("deployment")
@click.argument("body", required=False, default=None, metavar="[JSON]")
@_wait_option
@_output_option
@click.option("--webhook", default=None, metavar="URL", help="POST the job's end here, signed.")
@click.option("--idempotency-key", default=None, metavar="KEY", help="Submit at most one job per key.")
@click.option("--hint", default=None, help="Routing hint (X-Mesh-Hint): prefer replicas that hold it.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0, 3600, min_open=True),
    default=None,
    help=f"Seconds the job may run once started [default: the node's, {_NODE_TIMEOUT_S:g}].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the job's status JSON, not only its id.")
@entry_options
def submit(
    deployment: str,
    body: str | None,
    wait: bool,
    output: Path | None,
    webhook: str | None,
    idempotency_key: str | None,
    hint: str | None,
    timeout_s: float | None,
    as_json: bool,
    mesh: MeshEntry,
) -> None:
    """Queue a request on DEPLOYMENT as a job; print its id (or, with --wait, its answer)."""
    request = parse_body(body)
    accept = accept_for(output) if output is not None else "application/json"
    with _errors(), mesh.client() as client:
        try:
            job = client.submit(
                deployment,
                request,
                idempotency_key=idempotency_key,
                webhook=webhook,
                accept=accept,
                hint=hint,
                timeout=timeout_s,
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        again = " (the same key named it before)" if job.replayed else ""
        click.echo(f"job {job.id} {state_in_words(job)}{again}", err=True)
        if not (wait or output is not None):
            click.echo(json.dumps(job.raw, indent=2) if as_json else job.id)
            return
        _print_answer(_wait_for(client, job.id), output)


@jobs.command("status", cls=_JobIdCommand)
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the status JSON (what status always prints).")
@entry_options
def status(job_id: str, as_json: bool, mesh: MeshEntry) -> None:
    """Print where job ID is (queued, running, how it ended) as JSON."""
    with _errors(), mesh.client() as client:
        click.echo(json.dumps(client.status(job_id).raw, indent=2))


@jobs.command("result", cls=_JobIdCommand)
@click.argument("job_id", metavar="ID")
@_wait_option
@_output_option
@entry_options
def result(job_id: str, wait: bool, output: Path | None, mesh: MeshEntry) -> None:
    """Print the answer of job ID (with --wait, once it ends)."""
    with _errors(), mesh.client() as client:
        try:
            answer = _wait_for(client, job_id) if wait else client.result(job_id)
        except JobNotFinished as exc:
            where = state_in_words(exc.job)
            raise click.ClickException(
                f"job {job_id} has not ended: {where}; add --wait to wait for it"
            ) from exc
        _print_answer(answer, output)


@jobs.command("cancel", cls=_JobIdCommand)
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the job's status JSON after the cancel.")
@entry_options
def cancel(job_id: str, as_json: bool, mesh: MeshEntry) -> None:
    """Cancel job ID: a queued one at once, a running one stops as its predictor is cancelled."""
    with _errors(), mesh.client() as client:
        job = client.cancel(job_id)
    if as_json:
        click.echo(json.dumps(job.raw, indent=2))
    elif job.status == "cancelled":
        click.echo(f"cancelled job {job.id}")
    elif job.done:
        click.echo(f"job {job.id} had already ended: {job.status}")
    else:
        click.echo(f"asked job {job.id} to stop: it was {state_in_words(job)}")


@jobs.command("ls")
@click.option("--deployment", default=None, help="Only the jobs of this deployment.")
@click.option(
    "--status", "state", type=click.Choice(JOB_STATES), default=None, help="Only jobs in this status."
)
@click.option(
    "--limit", type=click.IntRange(1, MAX_LISTED), default=100, show_default=True, help="At most this many."
)
@click.option("--cursor", default=None, help="Start after the page that gave this next_cursor.")
@click.option("--all", "every", is_flag=True, help="Read every page (--limit jobs each) to the last.")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs' status JSON, with next_cursor.")
@entry_options
def list_jobs(
    deployment: str | None,
    state: str | None,
    limit: int,
    cursor: str | None,
    every: bool,
    as_json: bool,
    mesh: MeshEntry,
) -> None:
    """List the mesh's jobs, newest first, a page at a time."""
    found: list[Job] = []
    with _errors(), mesh.client() as client:
        page = client.jobs(deployment, state, limit, cursor)
        found += page
        while every and page.next_cursor is not None:
            page = client.jobs(deployment, state, limit, page.next_cursor)
            found += page
    if as_json:
        listed = {"jobs": [job.raw for job in found], "next_cursor": page.next_cursor}
        click.echo(json.dumps(listed, indent=2))
        return
    show(jobs_table(found))
    if page.next_cursor is not None:
        click.echo(f"more jobs follow: meshnode jobs ls --cursor {page.next_cursor} (or --all)", err=True)


def format_jobs_table(found: list[Job]) -> str:
    """Jobs as a plain-text table (``jobs_table``)."""
    return plain(jobs_table(found))


def jobs_table(found: list[Job]) -> FitTable:
    """Jobs as a table: id, deployment, where each is, the node, attempts, created (UTC)."""
    header = ("ID", "DEPLOYMENT", "STATUS", "NODE", "ATTEMPTS", "CREATED (UTC)")
    rows = [
        (
            job.id,
            job.deployment,
            styled(
                state_in_words(job) if job.error is None else f"failed ({job.error.type})",
                state_style(job.status),
            ),
            job.node or "-",
            f"{job.attempts}/{job.max_attempts}",
            datetime.datetime.fromtimestamp(job.created_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        )
        for job in found
    ]
    # On a narrow terminal: the attempts, node and time go first; the id is what commands take.
    return table(header, rows, drop=(4, 3, 5))


def _wait_for(client: MeshClient, job_id: str) -> Any:
    """The job's answer once it ends, its progress drawn meanwhile; Ctrl-C stops the wait alone."""
    try:
        with JobProgress() as progress:
            answer = client.wait(job_id, on_progress=progress.update)
    except KeyboardInterrupt:
        click.echo(f"stopped waiting; job {job_id} goes on (meshnode jobs result {job_id} --wait)", err=True)
        sys.exit(INTERRUPTED_EXIT)
    return answer


def _print_answer(answer: Any, output: Path | None) -> None:
    """The answer as predict prints it: JSON on stdout, or a file written whole where it belongs."""
    if output is not None:
        # A predictor that answered JSON where a file was asked for: its JSON is what gets written.
        content = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        output.write_bytes(content)
        click.echo(f"wrote {output} ({len(content)} bytes)", err=True)
    elif isinstance(answer, bytes):
        if sys.stdout.isatty():
            raise click.ClickException(f"the answer is a file ({len(answer)} bytes): give --output FILE")
        sys.stdout.buffer.write(answer)
        sys.stdout.flush()
    else:
        click.echo(json.dumps(answer, indent=2))


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turns a client error (or an unwritable file) into one ``Error:`` line and exit status 1."""
    try:
        yield
    except (ClientError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc

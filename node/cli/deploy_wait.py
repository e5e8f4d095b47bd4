"""``meshnode deploy --wait``: watch a deployment's replicas become ready, then exit 0 (or 1 at the timeout).

The command polls ``GET /v1/deployments/NAME`` on its node. What one answer means is pure
(``progress_of``): the replicas placement chose and their states (placed, starting, ready,
standby, failed with its error), the reason nothing can host it, and whether the wait is over
(``target``). ``wait_ready`` is the loop, with the clock, the sleep and the display passed in;
``WaitDisplay`` draws it on standard error: a live panel on a terminal, one line per change
anywhere else (a log shows each replica's steps once, never a redrawn frame).

The wait is over once ``min(desired, max(min_replicas, 1))`` replicas are ready: every replica the
mesh wants now, but no more than the declared minimum (the autoscaler may want more under load,
and those are not the deployment coming up), and at least one. A deployment that scales to zero
and wants none is ready at once: its first request starts a replica.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import click

from .text_table import state_style, styled

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.live import Live
    from rich.spinner import Spinner

__all__ = [
    "ReplicaLine",
    "WaitDisplay",
    "WaitProgress",
    "WaitTimedOut",
    "progress_of",
    "reason_of",
    "wait_ready",
]

# A replica placement chose whose node has not said anything about it yet.
PLACED = "placed"
# How the node words a deployment that is only short of ready replicas (``serving/views.py``).
_COUNTED = re.compile(r"\d+ of \d+ ready\b")


@dataclass(frozen=True)
class ReplicaLine:
    """One replica as the wait shows it: its node, its state, and what went wrong there."""

    node: str
    status: str
    pinned: bool = False
    error: str | None = None
    # While ``loading`` (pulling its model): the share it has. Not a change worth a line of its own.
    progress: float | None = field(default=None, compare=False)

    def words(self) -> str:
        """``n1 starting``, ``n0 ready (pinned)``, ``n2 failed: ImportError...``."""
        pin = " (pinned)" if self.pinned else ""
        error = f": {self.error}" if self.error else ""
        return f"{self.node} {self.state()}{pin}{error}"

    def state(self) -> str:
        """The status, with how far a replica loading its model is (``loading 40%``)."""
        if self.status == "loading" and self.progress is not None:
            return f"loading {self.progress:.0%}"
        return self.status


@dataclass(frozen=True)
class WaitProgress:
    """Where a deployment is on its way up, from one ``GET /v1/deployments/NAME`` answer."""

    name: str
    ready: int
    desired: int
    target: int
    replicas: tuple[ReplicaLine, ...]
    # Why no node may host it (placement's words), else why it is short, else None.
    reason: str | None

    @property
    def done(self) -> bool:
        """Whether enough replicas are ready to stop waiting."""
        return self.ready >= self.target

    def summary(self) -> str:
        """One line: ``echo: 1 of 2 ready``, and the reason when placement gave one."""
        counted = f"{self.name}: {self.ready} of {self.target} ready"
        if self.desired != self.target:
            counted += f" ({self.desired} desired)"
        return counted + (f"; {self.reason}" if self.reason and not self.done else "")


class WaitTimedOut(Exception):
    """The deployment was not ready in time; ``progress`` is the last answer seen, if any."""

    def __init__(self, message: str, progress: WaitProgress | None) -> None:
        super().__init__(message)
        self.progress = progress


def target(view: Mapping[str, Any]) -> int:
    """Ready replicas that end the wait: ``min(desired, max(min_replicas, 1))`` (module docstring)."""
    desired = _count(view.get("desired"))
    return min(desired, max(_count(view.get("min_replicas")), 1))


def progress_of(view: Mapping[str, Any]) -> WaitProgress:
    """What one ``GET /v1/deployments/NAME`` body says about the wait."""
    listed = view.get("replicas")
    replicas = [
        ReplicaLine(
            str(item.get("node") or "?"),
            str(item.get("status") or "?"),
            bool(item.get("pinned")),
            str(item["error"]) if item.get("error") else None,
            _share(item.get("progress")),
        )
        for item in (listed if isinstance(listed, list) else [])
        if isinstance(item, Mapping)
    ]
    # Hosts placement chose that do not list a replica yet: the wait shows them from the start.
    placement = view.get("placement")
    hosts = placement.get("hosts") if isinstance(placement, Mapping) else None
    named = {replica.node for replica in replicas}
    for host in hosts if isinstance(hosts, list) else []:
        if str(host) not in named:
            replicas.append(ReplicaLine(str(host), PLACED))
    reason = reason_of(view)
    return WaitProgress(
        name=str(view.get("name") or "?"),
        ready=_count(view.get("ready")),
        desired=_count(view.get("desired")),
        target=target(view),
        replicas=tuple(sorted(replicas, key=lambda replica: replica.node)),
        reason=reason,
    )


def reason_of(view: Mapping[str, Any]) -> str | None:
    """Why a deployment cannot be placed or is short, in the node's words, unless they only count.

    "1 of 2 ready; 1 starting" is left out: a display shows the count and the replicas already.
    """
    reason = view.get("unschedulable") or view.get("missing")
    if not reason or _COUNTED.match(str(reason)):
        return None
    return str(reason)


def _share(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    return None


def changes(before: WaitProgress | None, after: WaitProgress) -> list[str]:
    """One line per replica that appeared, changed state or went, and per new reason."""
    old = {replica.node: replica for replica in before.replicas} if before else {}
    new = {replica.node: replica for replica in after.replicas}
    lines = [replica.words() for node, replica in new.items() if old.get(node) != replica]
    lines += [f"{node} gone" for node in old if node not in new]
    if after.reason and (before is None or before.reason != after.reason) and not after.done:
        lines.append(after.reason)
    return [f"{after.name}: {line}" for line in lines]


def wait_ready(
    poll: Callable[[], Mapping[str, Any]],
    *,
    timeout_s: float,
    poll_s: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    show: Callable[[WaitProgress | None, str | None], None],
) -> WaitProgress:
    """Poll until the deployment is ready (its progress) or ``timeout_s`` passed (``WaitTimedOut``).

    ``poll`` returns one answer or raises ``click.ClickException`` (a node that does not answer is
    asked again: it may be restarting); ``show`` hears each answer, or the last one and the error.
    """
    deadline = clock() + timeout_s
    last: WaitProgress | None = None
    while True:
        try:
            last = progress_of(poll())
            show(last, None)
        except click.ClickException as exc:
            show(last, exc.format_message())
        if last is not None and last.done:
            return last
        if clock() + poll_s > deadline:
            where = last.summary() if last is not None else "no answer from the node"
            pending = [r.words() for r in last.replicas if r.status != "ready"] if last else []
            detail = f" ({'; '.join(pending)})" if pending else ""
            raise WaitTimedOut(f"not ready after {timeout_s:g} s: {where}{detail}", last)
        sleep(poll_s)


# The mark before a replica: done, broken, or (anything else) on its way.
_MARKS = {"ready": ("✓", "green"), "failed": ("✗", "bold red"), "standby": ("○", "cyan")}


def render(
    progress: WaitProgress | None, error: str | None, elapsed_s: float, spinner: Spinner | None = None
) -> RenderableType:
    """The wait as shown: the count (beside `spinner` when given), a line per replica, any error."""
    from rich.console import Group
    from rich.table import Table

    headline = progress.summary() if progress is not None else "waiting for the deployment's view"
    headline += f"  {elapsed_s:.0f} s"
    top: RenderableType = styled(headline, "bold")
    if spinner is not None:
        spinner.update(text=top)
        top = spinner
    rows = Table.grid(padding=(0, 1))
    rows.add_column(no_wrap=True)
    rows.add_column(no_wrap=True)
    rows.add_column(overflow="fold")
    for replica in progress.replicas if progress is not None else ():
        mark, style = _MARKS.get(replica.status, ("…", "yellow"))
        state = replica.state() + (" (pinned)" if replica.pinned else "")
        state += f": {replica.error}" if replica.error else ""
        rows.add_row(
            styled(mark, style), styled(replica.node, "bold"), styled(state, state_style(replica.status))
        )
    parts: list[RenderableType] = [top, rows]
    if error:
        parts.append(styled(error, "red"))
    return Group(*parts)


class WaitDisplay:
    """Shows the wait on standard error: a live panel on a terminal, change lines elsewhere."""

    def __init__(self, clock: Callable[[], float], *, terminal: bool | None = None) -> None:
        self._clock = clock
        self._started = clock()
        self._terminal = sys.stderr.isatty() if terminal is None else terminal
        self._live: Live | None = None
        self._spinner: Spinner | None = None
        self._shown: WaitProgress | None = None
        self._error: str | None = None

    def __enter__(self) -> Self:
        if self._terminal:
            # Imported here: only a waiting command needs rich's live display.
            from rich.console import Console
            from rich.live import Live
            from rich.spinner import Spinner

            self._spinner = Spinner("dots")
            self._live = Live(
                render(None, None, 0.0, self._spinner),
                console=Console(stderr=True),
                transient=True,
                refresh_per_second=8,
            )
            self._live.start()
        return self

    def __call__(self, progress: WaitProgress | None, error: str | None) -> None:
        """Show one answer (or the last one and why the newest failed)."""
        if self._live is not None:
            self._live.update(render(progress, error, self._clock() - self._started, self._spinner))
        else:
            if progress is not None:
                for line in changes(self._shown, progress):
                    click.echo(line, err=True)
            if error and error != self._error:
                click.echo(error, err=True)
        self._shown, self._error = progress or self._shown, error

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

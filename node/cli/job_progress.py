"""The progress bar of ``meshnode jobs ... --wait``: where the job is, on standard error.

While queued it says how many jobs are ahead; while running it fills a bar when the predictor reports
``step`` of ``total``, and pulses otherwise; a spinner and the time waited run beside it. It is drawn
with rich, only when standard error is a terminal (piped or in a log, a bar is noise), and is gone
once the wait ends, leaving standard output to the answer. ``shown`` is the pure part: what the bar
says for a status.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self

from ..client.job_view import Job, state_in_words

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["JobProgress", "Shown", "shown"]


@dataclass(frozen=True)
class Shown:
    """What the bar shows for one status: its words, and ``step`` of ``total`` when they are known."""

    text: str
    step: int | None = None
    total: int | None = None


def shown(job: Job) -> Shown:
    """What the bar shows while ``job`` is where its status says."""
    text = f"job {job.id[:8]} {state_in_words(job)}"
    if job.status == "running" and job.progress is not None and job.progress.total > 0:
        return Shown(text, min(job.progress.step, job.progress.total), job.progress.total)
    if job.done:
        return Shown(text, 1, 1)
    return Shown(text)  # no total: rich pulses the bar


class JobProgress:
    """A context manager that draws the bar while inside it; ``update`` with each new status."""

    def __init__(self, *, enabled: bool | None = None) -> None:
        """Draw only if ``enabled`` (default: when standard error is a terminal)."""
        self._enabled = sys.stderr.isatty() if enabled is None else enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Self:
        if self._enabled:
            # Imported here: rich takes a while to import, and only a waiting command needs it.
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[steps]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("waiting", total=None, steps="")
        return self

    def update(self, job: Job) -> None:
        """Show where ``job`` is now."""
        if self._progress is None or self._task is None:
            return
        now = shown(job)
        steps = "" if now.total is None or job.done else f"{now.step}/{now.total}"
        self._progress.update(
            self._task, description=now.text, completed=now.step or 0, total=now.total, steps=steps
        )

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

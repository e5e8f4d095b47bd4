"""A spinner on standard error while a command waits, so a person never stares at a silent terminal.

``Waiting`` shows what is awaited and for how long (``echo: waiting for the answer  12 s``) beside a
spinner, redrawn by rich's refresh thread while the command blocks in a call. It draws only when
standard error is a terminal (in a pipe or a log a spinner is noise: ``note`` lines are printed
there instead), only once the wait has lasted ``delay_s`` (a quick answer never flashes one), and
is gone when the wait ends, leaving standard output to the answer.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self

import click

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.live import Live

__all__ = ["Waiting"]

# Shorter waits draw nothing: an answer in half a second needs no spinner.
DELAY_S = 0.5


class Waiting:
    """A context manager that shows ``text`` and the time waited beside a spinner (module docstring)."""

    def __init__(
        self,
        text: str,
        *,
        delay_s: float = DELAY_S,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Show `text` after `delay_s`, only if `enabled` (default: when standard error is a terminal)."""
        self.text = text
        self._delay_s = delay_s
        self._enabled = sys.stderr.isatty() if enabled is None else enabled
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._live: Live | None = None
        self._closed = False

    def __enter__(self) -> Self:
        self._started = self._clock()
        if self._enabled:
            if self._delay_s <= 0:
                self._start()
            else:
                self._timer = threading.Timer(self._delay_s, self._start)
                self._timer.daemon = True
                self._timer.start()
        return self

    def update(self, text: str) -> None:
        """Say what is awaited now (the time waited runs on)."""
        self.text = text

    def note(self, line: str) -> None:
        """A line that stays: printed above the spinner on a terminal, alone on standard error elsewhere."""
        with self._lock:
            if self._live is not None:
                self._live.console.print(line, markup=False, highlight=False)
                return
        click.echo(line, err=True)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        yield Text(f"{self.text}  {self._clock() - self._started:.0f} s")

    def _start(self) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.spinner import Spinner

        with self._lock:
            if self._closed:
                return
            self._live = Live(
                Spinner("dots", text=self),
                console=Console(stderr=True, highlight=False),
                transient=True,
                refresh_per_second=8,
            )
            self._live.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            if self._live is not None:
                self._live.stop()
                self._live = None

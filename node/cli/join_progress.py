"""What ``meshnode join`` shows on a terminal while the agent joins: a status line under its log.

The agent already tells its story in its log: ``node NAME (ID) up: http ADDR, ...`` once it serves,
``member NAME (ID): old -> alive`` as peers come and go, and a warning per seed that has not
answered. ``JoinProgress`` folds those records into one line, a pure function of the records seen;
``ProgressHandler`` is the shell: a logging handler that prints every record as the plain text
handler would, above a rich spinner that shows the line (rich's own thread redraws it, so the
agent's event loop only pays for the print it would make anyway). Once the node serves and has a
peer (or was given no seed to wait for), the spinner goes and one line says so:
``joined: 2 peers; serving on http://10.0.0.5:8470``.

Only on a terminal, with ``--log-format text``: anywhere else the log lines alone say the same.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..logs import TEXT_FORMAT, RequestIdFilter

if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status

__all__ = ["JoinProgress", "ProgressHandler"]

# The agent's own lines (node/agent.py, node/membership/seed_watch.py) this reads.
_AGENT_LOGGER = "meshnode.agent"
_SEED_LOGGER = "meshnode.membership.seed_watch"
_UP = re.compile(r" up: http (\S+?),")
_MEMBER_LINE = "member %s (%s): %s -> %s"


@dataclass(frozen=True)
class JoinProgress:
    """How far joining went, as the agent's log told it."""

    seeds: tuple[str, ...]
    mdns: bool
    scheme: str = "http"
    serving: str = ""  # the advertised HTTP address, once the node is up
    peers: frozenset[str] = field(default_factory=frozenset)  # ids of live peers
    seed_news: str = ""  # why the last seed warning said no seed answered

    def seen(self, record: logging.LogRecord) -> JoinProgress:
        """The progress after `record` (itself when the record says nothing about joining)."""
        if record.name == _AGENT_LOGGER:
            if record.msg == _MEMBER_LINE and isinstance(record.args, tuple) and len(record.args) == 4:
                node, status = str(record.args[1]), str(record.args[3])
                peers = self.peers | {node} if status == "alive" else self.peers - {node}
                return replace(self, peers=peers)
            up = _UP.search(record.getMessage())
            if up is not None and not self.serving:
                return replace(self, serving=up.group(1))
        elif record.name == _SEED_LOGGER and record.levelno >= logging.WARNING:
            return replace(self, seed_news=record.getMessage().split(" No answer", 1)[0])
        return self

    @property
    def done(self) -> bool:
        """Serving, and joined or with no seed to wait for (mDNS may find peers any time)."""
        return bool(self.serving) and (bool(self.peers) or not self.seeds)

    def line(self) -> str:
        """The status line."""
        if not self.serving:
            return "starting the agent"
        serving = f"serving on {self.scheme}://{self.serving}"
        count = f"{len(self.peers)} peer{'' if len(self.peers) == 1 else 's'}"
        if self.peers:
            return f"joined: {count}; {serving}"
        if self.seeds:
            news = f" ({self.seed_news})" if self.seed_news else ""
            return f"joining: 0 peers; seeds tried: {', '.join(self.seeds)}{news}; {serving}"
        how = "looking for peers by mDNS" if self.mdns else "alone: no --seed and no mDNS"
        return f"{serving}; {how}"


class ProgressHandler(logging.Handler):
    """Prints log records above a spinner showing ``JoinProgress``; just prints once joined."""

    def __init__(self, progress: JoinProgress, console: Console) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(TEXT_FORMAT))
        self.addFilter(RequestIdFilter())
        self._progress = progress
        self._console = console
        self._status: Status | None = None

    def start(self) -> None:
        """Show the spinner."""
        self._status = self._console.status(self._progress.line(), spinner="dots")
        self._status.start()

    def emit(self, record: logging.LogRecord) -> None:
        """Print the record; move the status line on."""
        from rich.text import Text

        try:
            self._console.print(Text(self.format(record)), soft_wrap=True)
            progress = self._progress.seen(record)
            if progress == self._progress:
                return
            self._progress = progress
            if self._status is None:
                return
            if progress.done:
                self.stop()
                self._console.print(Text(progress.line(), style="bold green"), soft_wrap=True)
            else:
                self._status.update(progress.line())
        except Exception:
            self.handleError(record)

    # Not in close(): uvicorn's logging.config.dictConfig closes every handler there is, this one
    # included, while the agent starts; the handler goes on printing after that, as a StreamHandler.
    def stop(self) -> None:
        """Take the spinner away (at the end of joining, or when the agent exits)."""
        if self._status is not None:
            self._status.stop()
            self._status = None

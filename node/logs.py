"""The agent's log lines: plain text for people, JSON for machines, and the request each line is about.

``meshnode join --log-format json`` writes one JSON object per line: ``ts`` (ISO 8601, UTC, ms),
``level``, ``logger``, ``message``, ``node`` (the node's name), ``request_id`` when a request caused
the line, and ``exception`` (the traceback) when there is one.

Which request a line belongs to is a ``ContextVar``, set once where a request enters a node: the
HTTP entry (``http/app.py``'s ``request_id_of``, which the predict lane, the FastAPI middleware and
the WebSocket route all call) and the data-plane server, where a forwarded request arrives with its
id in the ``Call`` envelope. asyncio copies the context into every task created from there, so lines
of the forwarder, the replica supervisor and the cold-start queue carry the id with no argument
passed around; other requests' tasks never see it. The cost is one ``ContextVar.set`` per request
and, per line written, one ``get`` in a handler filter.

Limits: a task that outlives the request that created it (the dashboard's event-feed watcher, made
by the first stream) keeps that request's id. Workers (replica subprocesses) write text to their own
log file per replica, without request ids: its last line is read as the setup error.
"""

from __future__ import annotations

import datetime
import json
import logging
from contextvars import ContextVar
from typing import IO, Literal, get_args

__all__ = [
    "LOG_FORMATS",
    "TEXT_FORMAT",
    "JsonFormatter",
    "LogFormat",
    "RequestIdFilter",
    "configure_logging",
    "current_request_id",
    "log_handler",
    "set_request_id",
]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)
# Tests and operators' scripts read this shape (" ERROR " between the clock and the logger).
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_REQUEST_ID: ContextVar[str | None] = ContextVar("meshnode_request_id", default=None)


def set_request_id(request_id: str) -> None:
    """Mark the current task (and the tasks it creates from now on) as working for this request."""
    _REQUEST_ID.set(request_id)


def current_request_id() -> str | None:
    """The id of the request the current task works for; None outside a request."""
    return _REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Stamps each record with ``request_id`` while it is still in the thread and task that logged it.

    A filter rather than the formatter's own lookup, so a handler that formats later or elsewhere
    (a queue) still sees the request of the line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Always passes the record on; only adds the attribute."""
        if not hasattr(record, "request_id"):
            record.request_id = _REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (the module docstring lists the keys)."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self._node = node

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON; a multi-line message stays on one line, escaped."""
        entry: dict[str, object] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "node": self._node,
        }
        request_id = getattr(record, "request_id", None)
        if request_id is None:
            request_id = _REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            # Formatted once and kept, as logging.Formatter does, for every other handler.
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_handler(log_format: LogFormat, node: str, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing to `stream` (stderr) in `log_format`, each line stamped with its request."""
    handler = logging.StreamHandler(stream)
    formatter = JsonFormatter(node) if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(level: str, handler: logging.Handler) -> bool:
    """Send the process's logs at `level` and above to `handler`; True when done.

    As ``logging.basicConfig``: a process whose root logger already has a handler (an embedding
    program, pytest) keeps its own, and this does nothing.
    """
    root = logging.getLogger()
    if root.handlers:
        return False
    root.addHandler(handler)
    root.setLevel(level.upper())
    return True

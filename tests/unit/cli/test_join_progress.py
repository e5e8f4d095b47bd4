"""The status line of ``meshnode join`` on a terminal, folded from the agent's own log records."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from meshnode.cli.join_progress import JoinProgress, ProgressHandler

UP = (
    "node %s (%s) up: %s, incarnation %d, event loop %s",
    ("n1", "ab12cd34", "http 10.0.0.5:8470, mesh 10.0.0.5:8471, data 10.0.0.5:40000", 1, "uvloop"),
)


def record(
    name: str, msg: str, args: tuple[object, ...] = (), level: int = logging.INFO
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def up() -> logging.LogRecord:
    return record("meshnode.agent", *UP)


def member(node: str, status: str) -> logging.LogRecord:
    return record("meshnode.agent", "member %s (%s): %s -> %s", (f"name-{node}", node, "None", status))


def seed_warning() -> logging.LogRecord:
    message = "seed 10.0.0.1:8471: nothing listens on port 8471. No answer from 10.0.0.1:8471 after 3 s; ..."
    return record("meshnode.membership.seed_watch", "%s", (message,), logging.WARNING)


def fold(progress: JoinProgress, *records: logging.LogRecord) -> JoinProgress:
    for one in records:
        progress = progress.seen(one)
    return progress


def test_joining_through_seeds_until_a_peer_is_alive() -> None:
    progress = JoinProgress(("10.0.0.1:8471",), mdns=False)
    assert progress.line() == "starting the agent" and not progress.done
    progress = fold(progress, up())
    assert progress.line() == "joining: 0 peers; seeds tried: 10.0.0.1:8471; serving on http://10.0.0.5:8470"
    progress = fold(progress, seed_warning())
    assert "seeds tried: 10.0.0.1:8471 (seed 10.0.0.1:8471: nothing listens on port 8471.)" in progress.line()
    assert not progress.done
    progress = fold(progress, member("p1", "alive"), member("p2", "alive"), member("p2", "dead"))
    assert progress.done
    assert progress.line() == "joined: 1 peer; serving on http://10.0.0.5:8470"


def test_without_seeds_serving_is_done_and_says_how_peers_come() -> None:
    by_mdns = fold(JoinProgress((), mdns=True, scheme="https"), up())
    assert by_mdns.done
    assert by_mdns.line() == "serving on https://10.0.0.5:8470; looking for peers by mDNS"
    alone = fold(JoinProgress((), mdns=False), up())
    assert alone.line() == "serving on http://10.0.0.5:8470; alone: no --seed and no mDNS"


def test_other_records_change_nothing() -> None:
    progress = JoinProgress(("10.0.0.1:8471",), mdns=False)
    others = [
        record("meshnode.agent", "node %s stopped", ("ab12",)),
        record("uvicorn", "member %s (%s): %s -> %s"),
    ]
    assert fold(progress, *others) == progress


def test_the_handler_prints_every_line_and_says_when_joined() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, highlight=False, color_system=None)
    handler = ProgressHandler(JoinProgress(("10.0.0.1:8471",), mdns=False), console)
    handler.start()
    try:
        for one in (up(), record("meshnode.x", "unrelated [bold]line[/]"), member("p1", "alive")):
            handler.handle(one)
    finally:
        handler.stop()
    text = out.getvalue()
    assert "INFO meshnode.x: unrelated [bold]line[/]" in text  # no rich markup read from log text
    assert "joined: 1 peer; serving on http://10.0.0.5:8470" in text

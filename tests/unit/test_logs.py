"""Log lines as text or JSON, each stamped with the request that caused it (``meshnode.logs``)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from meshnode.http.app import request_id_of
from meshnode.logs import (
    JsonFormatter,
    configure_logging,
    current_request_id,
    log_handler,
    set_request_id,
)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own whose lines go to a JSON handler into a string."""
    stream = io.StringIO()
    logger = logging.getLogger("meshnode.test_logs")
    handler = log_handler("json", "node-a", stream)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_its_fields_and_no_request_outside_one(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured

    async def outside() -> None:  # a task of its own: a fresh context, as the agent's own tasks
        logger.info("two\nlines %s", "here")

    asyncio.run(outside())
    [line] = lines(stream)
    assert set(line) == {"ts", "level", "logger", "message", "node"}
    assert (line["level"], line["logger"], line["node"]) == ("info", "meshnode.test_logs", "node-a")
    assert line["message"] == "two\nlines here"
    assert str(line["ts"]).endswith("+00:00") and "T" in str(line["ts"])
    assert len(stream.getvalue().splitlines()) == 1


def test_the_exception_goes_into_its_line(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it failed")
    [line] = lines(stream)
    assert line["level"] == "error"
    assert "Traceback" in str(line["exception"]) and "ValueError: boom" in str(line["exception"])


def test_concurrent_requests_each_stamp_their_own_lines_and_the_tasks_they_start(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured

    async def request(rid: str, step: asyncio.Event, other: asyncio.Event) -> None:
        set_request_id(rid)
        logger.info("entered")
        other.set()
        await step.wait()  # the other request runs in between

        async def hop() -> None:
            logger.info("in a task the request started")

        await asyncio.create_task(hop())

    async def main() -> None:
        first, second = asyncio.Event(), asyncio.Event()
        await asyncio.gather(request("r1", first, second), request("r2", second, first))
        logger.info("after both")
        assert current_request_id() is None

    asyncio.run(main())
    stamped = [(line["message"], line.get("request_id")) for line in lines(stream)]
    assert sorted(stamped, key=str) == sorted(
        [
            ("entered", "r1"),
            ("entered", "r2"),
            ("in a task the request started", "r1"),
            ("in a task the request started", "r2"),
            ("after both", None),
        ],
        key=str,
    )


def test_the_http_entry_sets_the_request_of_its_task() -> None:
    async def entry() -> tuple[str, str | None]:
        scope = {"type": "http", "headers": [(b"x-request-id", b"abc-123")]}
        return request_id_of(scope), current_request_id()

    assert asyncio.run(entry()) == ("abc-123", "abc-123")


def test_text_lines_keep_their_shape() -> None:
    stream = io.StringIO()
    handler = log_handler("text", "node-a", stream)
    record = logging.LogRecord("meshnode.x", logging.ERROR, __file__, 1, "bad %s", ("thing",), None)
    handler.handle(record)
    assert " ERROR meshnode.x: bad thing" in stream.getvalue()


def test_json_formatter_alone_reads_the_request_of_the_task() -> None:
    async def in_request() -> str:
        set_request_id("r9")
        record = logging.LogRecord("meshnode.x", logging.INFO, __file__, 1, "hi", None, None)
        return JsonFormatter("n").format(record)

    assert json.loads(asyncio.run(in_request()))["request_id"] == "r9"


def test_configure_logging_leaves_a_configured_process_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    handler = log_handler("json", "n", io.StringIO())
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])
    assert configure_logging("info", handler) is False
    assert handler not in root.handlers
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    assert configure_logging("debug", handler) is True
    assert root.handlers == [handler] and root.level == logging.DEBUG

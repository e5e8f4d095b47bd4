"""The demo apps, called directly: Echo and Stream answer, stream and validate their input."""

from __future__ import annotations

import contextlib
import itertools
import time
from typing import Any

import pytest

from meshnode.apps.echo import Echo
from meshnode.apps.stream import Stream


def test_echo_returns_the_body() -> None:
    body = {"text": "hello", "n": [1, 2]}
    assert Echo().predict(body) == {"echo": body}
    assert Echo().predict({}, "application/json") == {"echo": {}}


def test_echo_waits_delay_s_first() -> None:
    started = time.monotonic()
    assert Echo().predict({"delay_s": 0.05}) == {"echo": {"delay_s": 0.05}}
    assert time.monotonic() - started >= 0.05


@pytest.mark.parametrize("delay", [-1, 301, "1", True, None, [1]])
def test_echo_rejects_bad_delay(delay: Any) -> None:
    with pytest.raises(ValueError, match=r"delay_s must be a number of seconds in 0\.\.300"):
        Echo().predict({"delay_s": delay})


EXPECTED = [f"Answer for life is: {i}" for i in range(1, 6)]


async def test_stream_yields_five_pieces() -> None:
    pieces = [piece async for piece in Stream().async_predict({"text": "life", "interval_s": 0})]
    assert pieces == EXPECTED


async def test_stream_pieces_arrive_interval_apart() -> None:
    arrivals = []
    async for _ in Stream().async_predict({"text": "x", "interval_s": 0.02}):
        arrivals.append(time.monotonic())
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert len(gaps) == 4
    assert min(gaps) >= 0.02


def test_stream_predict_joins_the_pieces() -> None:
    assert Stream().predict({"text": "life", "interval_s": 0}) == "\n".join(EXPECTED)


async def test_stream_default_question() -> None:
    async with contextlib.aclosing(Stream().async_predict({"interval_s": 0})) as pieces:
        first = await anext(pieces)
    assert first == "Answer for [Empty question] is: 1"


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"interval_s": -0.1}, "interval_s must be a number of seconds in 0..60"),
        ({"interval_s": 61}, "interval_s must be"),
        ({"interval_s": "1"}, "interval_s must be"),
        ({"interval_s": False}, "interval_s must be"),
        ({"text": 5, "interval_s": 0}, "text must be a string"),
    ],
)
async def test_stream_rejects_bad_input(body: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        Stream().predict(body)
    with pytest.raises(ValueError, match=complaint):
        await anext(Stream().async_predict(body))

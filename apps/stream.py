"""Stream: an answer that arrives in pieces, as a language model writes tokens (FedML's example).

It shows ``async_predict``, an async generator: the node calls it when the body has
``"stream": true`` and sends each yielded piece to the client as soon as it exists (Server-Sent
Events with ``Accept: text/event-stream``, otherwise a chunked body). Without ``"stream"`` the same
answer comes from ``predict``, all at once, after the same total time.

Run it on one node and watch the pieces arrive a second apart::

    meshnode join --deploy stream=apps/stream.py:Stream
    curl -sN -X POST localhost:8470/v1/predict/stream -H 'accept: text/event-stream' \\
        -H 'content-type: application/json' -d '{"text": "life", "stream": true}'
    meshnode predict stream '{"text": "life", "interval_s": 0.2}' --stream
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

from meshnode.inference.predictor import InvalidRequest, Predictor, Request

PIECES = 5
DEFAULT_INTERVAL_S = 1.0
MAX_INTERVAL_S = 60.0


class Stream(Predictor):
    """Five answers, ``interval_s`` apart."""

    # Streams spend their time waiting, not computing: let many run at once.
    max_concurrency = 16

    def predict(self, request: Request, header: str | None = None) -> str:
        """The five pieces joined by newlines, after the time a stream of them would take."""
        text, interval_s = _parse(request)
        time.sleep(interval_s * (PIECES - 1))
        return "\n".join(_piece(text, i) for i in range(1, PIECES + 1))

    async def async_predict(self, request: Request) -> AsyncGenerator[str, None]:
        """Yield each piece as soon as it is ready."""
        text, interval_s = _parse(request)
        for i in range(1, PIECES + 1):
            if i > 1:
                await asyncio.sleep(interval_s)
            yield _piece(text, i)


def _parse(request: Request) -> tuple[str, float]:
    text = request.get("text", "[Empty question]")
    if not isinstance(text, str):
        raise InvalidRequest(f"text must be a string, not {type(text).__name__}")
    interval_s = request.get("interval_s", DEFAULT_INTERVAL_S)
    if (
        isinstance(interval_s, bool)
        or not isinstance(interval_s, int | float)
        or not 0 <= interval_s <= MAX_INTERVAL_S
    ):
        raise InvalidRequest(
            f"interval_s must be a number of seconds in 0..{MAX_INTERVAL_S:g}, not {interval_s!r}"
        )
    return text, float(interval_s)


def _piece(text: str, i: int) -> str:
    return f"Answer for {text} is: {i}"

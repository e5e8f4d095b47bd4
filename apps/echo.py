"""Echo: the smallest app. It answers every request with the request itself.

It shows the predictor shape (``predict(request, header)`` returning JSON) and nothing else, which
makes it the app for trying out routing, failover and load: ``"delay_s"`` makes a request take that
long, so a slow replica, a deadline or a saturated node is easy to produce on purpose.

Run it on one node and call it::

    meshnode join --deploy echo=apps/echo.py:Echo
    curl -s -X POST localhost:8470/v1/predict/echo -H 'content-type: application/json' \\
        -d '{"text": "hello", "delay_s": 0.5}'
    # {"echo": {"text": "hello", "delay_s": 0.5}}
"""

from __future__ import annotations

import time
from typing import Any

from meshnode.inference.predictor import InvalidRequest, Predictor, Request

MAX_DELAY_S = 300.0


class Echo(Predictor):
    """Returns ``{"echo": request}``, after sleeping ``request["delay_s"]`` seconds if given."""

    # A sleeping request holds no CPU, so many delayed requests may wait side by side.
    max_concurrency = 16

    def predict(self, request: Request, header: str | None = None) -> Any:
        """Echo the request body back."""
        delay_s = request.get("delay_s", 0)
        if (
            isinstance(delay_s, bool)
            or not isinstance(delay_s, int | float)
            or not 0 <= delay_s <= MAX_DELAY_S
        ):
            raise InvalidRequest(
                f"delay_s must be a number of seconds in 0..{MAX_DELAY_S:g}, not {delay_s!r}"
            )
        if delay_s:
            time.sleep(delay_s)
        return {"echo": request}

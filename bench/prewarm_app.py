"""The model of the pre-warm benchmark (``bench/prewarm.py``): slow to load, two requests at a time.

``setup()`` takes ``MESHNODE_BENCH_SETUP_S`` seconds (a model's load), and a request takes its
``"s"`` seconds; a replica runs two at once and queues the rest, so its latency grows with the load
until another replica serves.
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from meshnode.inference.predictor import Predictor


class SlowModel(Predictor):
    """Loads slowly, then serves two requests at a time."""

    max_concurrency: ClassVar[int] = 2

    def setup(self) -> None:
        time.sleep(float(os.environ.get("MESHNODE_BENCH_SETUP_S", "5")))

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        time.sleep(float(request.get("s", 0.3)))
        return {"done": True}

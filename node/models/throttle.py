"""The bandwidth bound of model transfers on this node: an asyncio shell on ``mesh/token_bucket.py``.

One ``Throttle`` is shared by every pull of the node (``pulls.py`` takes a chunk's bytes before it
asks for them), and another by every chunk this node serves to pullers (``chunk_server.py`` takes
each piece's bytes before it reads and sends it), both at ``AgentConfig.model_pull_bytes_per_s``:
however many pulls run or peers pull from here, model bytes move at most that fast in each
direction, so serving traffic keeps its share of the link and the CPU. A rate of 0 is no bound.
"""

from __future__ import annotations

import asyncio

from ..mesh.token_bucket import TokenBucket

__all__ = ["BURST_S", "Throttle"]

# The bucket holds a tenth of a second's bytes: a pull that starts moves at once, without a
# second's worth of bytes arriving in one burst.
BURST_S = 0.1


class Throttle:
    """Waits so that the bytes taken through it move at most `bytes_per_s` (0: no bound).

    At most `burst_bytes` move at once after a pause (default: ``BURST_S`` of the rate). The chunk
    server takes a piece at a time with a burst of one piece, so what it sends is paced evenly.
    """

    def __init__(self, bytes_per_s: float, *, burst_bytes: float | None = None) -> None:
        self.bytes_per_s = bytes_per_s
        self._burst = bytes_per_s * BURST_S if burst_bytes is None else burst_bytes
        self._bucket: TokenBucket | None = None  # made on first use, on the running loop's clock
        self.waited_s = 0.0  # time spent waiting, for /metrics

    async def take(self, amount: int) -> None:
        """Return once `amount` bytes may move."""
        if self.bytes_per_s <= 0:
            return
        now = asyncio.get_running_loop().time()
        if self._bucket is None:
            self._bucket = TokenBucket(self.bytes_per_s, self._burst, now)
        delay = self._bucket.reserve(amount, now)
        if delay > 0:
            self.waited_s += delay
            await asyncio.sleep(delay)

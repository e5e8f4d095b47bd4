"""Cold starts: requests held until a replica of their deployment serves, instead of failed.

When a request finds no ready replica but one is coming (starting, or about to be started because
the deployment scaled to zero), the node it reached holds it here: at most ``queue_size`` per
deployment, each until a replica serves or its own deadline passes (then 503 with Retry-After), or
until nothing is coming any more (every replica failed to start: 503 at once with the error).
The count held is demand the autoscalers must see, so the first one held and the last one released
are announced (``on_demand``): the agent gossips ``waiting`` in its metadata. A request for a name
this node has not heard of waits ``unknown_grace_s`` for its declaration to arrive before the 404.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable

from ..errors import MeshnodeError, NotFound, NotReady, Overloaded
from ..mesh import replica_view
from ..mesh.placement import Plan
from ..mesh.replica_view import Prospect

__all__ = ["ColdStarts", "refusal_of"]


def refusal_of(
    prospect: Prospect, name: str, failure: Callable[[], str], plan: Plan | None
) -> MeshnodeError | None:
    """Why a request for `name` cannot wait for a replica, given what is coming; None when it may.

    `failure` says why its replicas failed to start (read only then), `plan` is the last placement's.
    """
    match prospect:
        case Prospect.COMING | Prospect.SCALING_UP:
            return None
        case Prospect.FAILED_TO_START:
            return NotReady(failure(), retry_after_s=replica_view.FAILED_RETRY_AFTER_S)
        case Prospect.UNKNOWN:
            return NotFound(f"no deployment named {name!r} in the mesh")
        case Prospect.PINNED_ONLY:
            return NotReady(
                f"{name} runs only where it is pinned, and no pinned replica is running", retry_after_s=5.0
            )
        case Prospect.UNSCHEDULABLE:
            reason = plan.unschedulable if plan is not None else None
            return NotReady(f"{name} is unschedulable: {reason}", retry_after_s=30.0)


class ColdStarts:
    """Requests waiting here per deployment, and the wake-up when the view changes."""

    def __init__(
        self,
        *,
        queue_size: int,
        unknown_grace_s: float = 0.0,
        serving: Callable[[str], bool],
        refusal: Callable[[str], MeshnodeError | None],
        on_demand: Callable[[], None],
    ) -> None:
        self.waiting: collections.Counter[str] = collections.Counter()
        self._queue_size = queue_size
        self._unknown_grace_s = unknown_grace_s
        self._serving = serving
        self._refusal = refusal
        self._on_demand = on_demand
        self._changed = asyncio.Event()

    def view_changed(self) -> None:
        """Something in the view changed: every waiter looks again."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, name: str, deadline: float) -> None:
        """Hold a request until some replica of `name` serves; raise why it cannot wait or did not."""
        if self._serving(name):
            return
        loop = asyncio.get_running_loop()
        await self._known(name, min(deadline, loop.time() + self._unknown_grace_s))
        if self._serving(name):
            return
        refusal = self._refusal(name)
        if refusal is not None:
            raise refusal  # nothing is coming: unknown, pinned elsewhere only, or unschedulable
        if self.waiting[name] >= self._queue_size:
            raise Overloaded(
                f"{self.waiting[name]} requests already wait here for {name} to start", retry_after_s=2.0
            )
        self.waiting[name] += 1
        if self.waiting[name] == 1:
            self._on_demand()
        try:
            while not self._serving(name):
                if (refusal := self._refusal(name)) is not None:
                    raise refusal  # what it waited for failed to start (or went away): say why now
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise NotReady(
                        f"no replica of {name} became ready within the request's deadline", retry_after_s=2.0
                    )
                await self._next_change(remaining)
        finally:
            self.waiting[name] -= 1
            if self.waiting[name] <= 0:
                del self.waiting[name]
                self._on_demand()

    async def _known(self, name: str, until: float) -> None:
        """Wait until `name` is known here, at most until `until`.

        A deployment declared on another node a moment ago reaches this one by gossip within a few
        rounds; a request for it in between waits for the record rather than getting a 404.
        """
        loop = asyncio.get_running_loop()
        while isinstance(refusal := self._refusal(name), NotFound):
            if loop.time() >= until:
                raise refusal
            await self._next_change(until - loop.time())

    async def _next_change(self, timeout_s: float) -> None:
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(timeout_s, 0.0)):
                await changed.wait()

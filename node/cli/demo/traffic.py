"""The demo's traffic: requests sent to every node, who served them, and a kill -9 under load.

``show_routing`` sends the same number of echo requests to each agent and prints a table: one row
per node the request was sent to, one column per node that served it (``X-Mesh-Route``). A node
without an echo replica forwards every request; one with a replica serves its own when idle.

``Traffic`` keeps a few client threads sending echo requests to chosen nodes while the demo kills an
agent that hosts a replica; afterwards it reports how many requests ran and how many failed (the
point: none, since requests that never got an answer fail over to the other replica).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

__all__ = ["Traffic", "ready_replicas", "show_routing"]

DEPLOYMENT = "echo"
CLIENT_THREADS = 4
# A bound on each thread's loop, so the traffic always ends even if stop() were never called.
MAX_REQUESTS_PER_THREAD = 100_000


def ready_replicas(view: Mapping[str, Any], deployment: str = DEPLOYMENT) -> set[str]:
    """Names of the alive nodes whose replica of `deployment` is ready, in a ``/v1/mesh`` body."""
    return {
        member["name"]
        for member in view.get("members", [])
        if member.get("status") == "alive"
        and member.get("replicas", {}).get(deployment, {}).get("state") == "ready"
    }


def show_routing(nodes: Mapping[str, str], per_node: int, say: Callable[[str], Any]) -> None:
    """Send `per_node` echo requests to each node (name -> URL); print who served them."""
    served: dict[str, collections.Counter[str]] = {}
    with httpx.Client(timeout=30.0) as client:
        for name, url in nodes.items():
            counts: collections.Counter[str] = collections.Counter()
            for i in range(per_node):
                response = client.post(f"{url}/v1/predict/{DEPLOYMENT}", json={"n": i})
                counts[
                    _served_by(response) if response.status_code == 200 else f"HTTP {response.status_code}"
                ] += 1
            served[name] = counts
    columns = sorted({column for counts in served.values() for column in counts})
    width = max(len(name) for name in [*nodes, *columns, "sent to"]) + 2
    say(f"\n{per_node} echo requests sent to each node; who served them (X-Mesh-Route):")
    say("sent to".ljust(width) + "".join(column.rjust(width) for column in columns))
    for name, counts in served.items():
        say(name.ljust(width) + "".join(str(counts.get(column, 0)).rjust(width) for column in columns))


class Traffic:
    """Client threads sending echo requests round robin to `urls` until stopped."""

    def __init__(self, urls: Sequence[str], threads: int = CLIENT_THREADS) -> None:
        self._urls = list(urls)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        self.served: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def total(self) -> int:
        """Requests finished so far, failed ones included."""
        with self._lock:
            return sum(self.served.values()) + len(self.failures)

    def stop(self) -> None:
        """Stop sending and wait for the requests in flight."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60.0)

    def _run(self, offset: int) -> None:
        with httpx.Client(timeout=30.0) as client:
            for i in range(MAX_REQUESTS_PER_THREAD):
                if self._stop.is_set():
                    return
                url = self._urls[(offset + i) % len(self._urls)]
                try:
                    response = client.post(f"{url}/v1/predict/{DEPLOYMENT}", json={"i": i})
                except httpx.HTTPError as exc:
                    outcome, ok = f"{url}: {type(exc).__name__}", False
                else:
                    ok = response.status_code == 200
                    outcome = _served_by(response) if ok else f"{url}: HTTP {response.status_code}"
                with self._lock:
                    if ok:
                        self.served[outcome] += 1
                    else:
                        self.failures.append(outcome)


def _served_by(response: httpx.Response) -> str:
    return response.headers.get("X-Mesh-Route", "?").split(",")[-1]

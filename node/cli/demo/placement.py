"""The demo's placement show: one deployment declared once, placed by every node alike.

``declare`` sends ``PUT /v1/deployments/placed`` (two replicas of the echo app) to the first node and
waits until the last node sees both replicas serving; ``show`` prints where they run, as every node
computed it without a leader (``meshnode deployments``'s table).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from ..deploy import format_deployments_table
from .apps import DemoAppError

NAME = "placed"
SPEC = {"app": "meshnode.apps.echo:Echo", "min_replicas": 2, "max_replicas": 2}


def declare(urls: Sequence[str], timeout_s: float, say: Callable[[str], Any]) -> None:
    """Declare the deployment on the first node; wait until the last one sees it served twice."""
    with httpx.Client(timeout=10.0) as client:
        response = client.put(f"{urls[0]}/v1/deployments/{NAME}", json=SPEC)
        if response.status_code not in (200, 201):
            raise DemoAppError(f"PUT /v1/deployments/{NAME} answered {response.status_code}: {response.text}")
        say(f"\ndeclared {NAME!r} ({SPEC['min_replicas']} replicas of echo) on one node, naming no host...")
        view = wait_served(client, urls[-1], timeout_s)
        say(f"placement chose {', '.join(sorted(view['placement']['hosts']))} (every node computed the same)")


def show(urls: Sequence[str], timeout_s: float, say: Callable[[str], Any]) -> None:
    """Wait until the deployment is fully served again, then print the deployments table."""
    with httpx.Client(timeout=10.0) as client:
        wait_served(client, urls[0], timeout_s)
        say(format_deployments_table(client.get(f"{urls[0]}/v1/deployments").json()))


def wait_served(client: httpx.Client, url: str, timeout_s: float) -> dict[str, Any]:
    """The deployment's view at `url` once it has as many ready replicas as it wants."""
    deadline = time.monotonic() + timeout_s
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(f"{url}/v1/deployments/{NAME}")
        if response.status_code == 200:
            view = response.json()
            if view["ready"] >= SPEC["min_replicas"] and view["missing"] is None:
                return view
        time.sleep(0.2)  # polling a remote condition
    raise DemoAppError(
        f"{NAME!r} was not served by {SPEC['min_replicas']} replicas in {timeout_s:g} s: {view}"
    )

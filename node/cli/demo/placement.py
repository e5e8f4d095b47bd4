"""The demo's placement show: one deployment declared once, placed by every node alike.

``declare`` sends ``PUT /v1/deployments/placed`` (two replicas of the echo app) to the first node and
waits until the last node sees both replicas serving; ``show`` prints where they run, as every node
computed it without a leader (``meshnode deployments``'s table). ``show_reconverged`` prints the
table after the kill and restart, and says placement re-converged only when that table shows every
replica ready (``unsettled`` says what is not).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
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


def show_reconverged(urls: Sequence[str], timeout_s: float, say: Callable[[str], Any]) -> bool:
    """Print the table once every replica in it is ready, or after `timeout_s` with what is not."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=10.0) as client:
        while True:
            body, pending = _deployments(client, urls[0])
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.2)  # polling a remote condition
    if pending:
        say(f"\nafter the kill and restart, not re-converged within {timeout_s:g} s: {'; '.join(pending)}")
    else:
        say("\nafter the kill and restart, placement re-converged (every replica ready):")
    say(format_deployments_table(body))
    return not pending


def _deployments(client: httpx.Client, url: str) -> tuple[dict[str, Any], list[str]]:
    """A node's ``GET /v1/deployments`` body and what in it is unsettled (or why there is none)."""
    try:
        response = client.get(f"{url}/v1/deployments")
        body = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        return {}, [f"cannot read {url}/v1/deployments: {exc}"]
    if not isinstance(body, dict):
        return {}, [f"{url}/v1/deployments answered {response.status_code}"]
    return body, unsettled(body)


def unsettled(body: Mapping[str, Any]) -> list[str]:
    """What keeps a ``GET /v1/deployments`` body from showing every replica ready, per deployment."""
    pending = []
    for item in body.get("deployments", []):
        replicas = item.get("replicas") or []
        waiting = [f"{r.get('node')} {r.get('status')}" for r in replicas if r.get("status") != "ready"]
        if waiting:
            pending.append(f"{item.get('name')} on {', '.join(waiting)}")
        elif item.get("ready", 0) != item.get("desired", 0):
            # Fewer: a replacement still coming; more: a stand-in not yet drained after the restart.
            pending.append(f"{item.get('name')}: {item.get('ready')} ready of {item.get('desired')} desired")
    return pending


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

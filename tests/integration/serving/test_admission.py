"""Admission under deadlines with a real agent: the replica takes what it can finish in time and refuses
the rest at once (``mesh/queueing.py``), so an admitted request is not late and a refused one does not
wait for its 504.

One agent hosts ``apps/echo.py`` (16 requests at once). Each request sleeps ``SERVICE_S``, and its
deadline leaves room for two waves of 16 but not three: the first 16 start at once, the next 16 queue
and finish in time, and the rest are refused with 429, ``Retry-After`` and the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from tests.integration.agents import Mesh, wait_for

SLOTS = 16
SERVICE_S = 1.0
# Two waves and the margin fit (2.1 s); three do not (3.1 s).
DEADLINE_S = 2.4
REQUESTS = 3 * SLOTS
FORM_TIMEOUT_S = 90.0


async def burst(url: str) -> list[tuple[int, float, httpx.Response]]:
    """REQUESTS requests sent together: (status, seconds until answered, response) each."""
    limits = httpx.Limits(max_connections=REQUESTS)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:

        async def one() -> tuple[int, float, httpx.Response]:
            sent = time.monotonic()
            response = await client.post(
                url, json={"delay_s": SERVICE_S}, headers={"X-Request-Timeout": str(DEADLINE_S)}
            )
            return response.status_code, time.monotonic() - sent, response

        return await asyncio.gather(*(one() for _ in range(REQUESTS)))


def test_a_replica_admits_what_it_can_finish_by_the_deadline_and_refuses_the_rest_at_once(
    start_mesh: Callable[..., Mesh],
) -> None:
    mesh = start_mesh(1, extra_args={0: ["--deploy", "echo=meshnode.apps.echo:Echo"]})
    agent = mesh.agents[0]
    url = f"{agent.url}/v1/predict/echo"
    # One request alone measures the service time (its whole time in the replica is service); the
    # first may come while the replica still starts (503).
    first: list[httpx.Response] = []

    def served_alone() -> bool:
        agent.check_running()
        first.append(httpx.post(url, json={"delay_s": SERVICE_S}, timeout=30))
        return first[-1].status_code != 503

    wait_for(served_alone, FORM_TIMEOUT_S, message=agent.describe)
    assert first[-1].status_code == 200, first[-1].text

    answers = asyncio.run(burst(url))

    statuses = [status for status, _, _ in answers]
    assert 504 not in statuses, "an admitted request missed its deadline"
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= 2 * SLOTS, statuses
    refused = [(took, response) for status, took, response in answers if status == 429]
    assert refused, "nothing was refused: the third wave would have missed its deadline"
    for took, response in refused:
        assert took < SERVICE_S, f"a refusal took {took:.2f} s: it waited instead of failing fast"
        assert int(response.headers["retry-after"]) >= 1
        assert "after its deadline" in response.json()["error"]["message"]

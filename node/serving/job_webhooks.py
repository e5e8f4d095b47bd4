"""One try of a job's webhook: the signed POST, and the delivery state it leads to.

When a job with a webhook ends, its record gets ``Delivery(state="pending")``. The job's runner (the
first live node of its ranking, ``mesh/job_policy.py``) tries it when due, one try at a time, and
writes the outcome into the record like any other change, so the copies on the other holders know
how far delivery got: when the runner dies, the next in rank carries on from the same try count and
the same due time. Delivery is at least once: a node that dies after the receiver took a try but
before the outcome reached the copies leaves the next node to send it again; receivers deduplicate
by ``webhook-id`` (the job id), as Standard Webhooks expects.

The POST (``docs/jobs.md``): a JSON body ``{"id", "deployment", "status", "created_at",
"finished_at", "result" (for a JSON answer) or "result_url" (for a file), "error"}``, signed
headers from ``trust/webhook_keys.py``, no redirects followed, each try bounded by the schedule's
``timeout_s``. The waits between tries come from ``mesh/webhook_schedule.py``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..config import AgentConfig
from ..mesh.jobs import Delivery, JobRecord
from ..mesh.webhook_schedule import WebhookSchedule, next_delay_s, outcome
from ..trust.rotation import Rotation
from ..trust.webhook_keys import sign_webhook

__all__ = ["WebhookSender", "webhook_body", "webhook_sender"]

log = logging.getLogger(__name__)

Sign = Callable[[str, int, bytes], dict[str, str]]
# What a try's outcome notes say at most (the receiver's status, or the network error's first words).
_NOTE_CHARS = 200


class WebhookSender:
    """Sends job webhooks, signed with the mesh's key."""

    def __init__(self, sign: Sign, schedule: WebhookSchedule, result_url: Callable[[JobRecord], str]) -> None:
        self._sign = sign
        self.schedule = schedule
        self._result_url = result_url
        self._rng = random.Random()
        self._client = httpx.AsyncClient(timeout=schedule.timeout_s, follow_redirects=False)

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()

    async def try_once(self, record: JobRecord, now_ms: Callable[[], int]) -> Delivery:
        """POST `record`'s webhook once; the delivery state after that try."""
        assert record.webhook is not None and record.delivery is not None
        body = json.dumps(webhook_body(record, self._result_url(record)), separators=(",", ":")).encode()
        headers = {"content-type": "application/json", **self._sign(record.id, int(time.time()), body)}
        status: int | None = None
        retry_after_s: float | None = None
        try:
            answer = await self._client.post(record.webhook, content=body, headers=headers)
            status = answer.status_code
            retry_after_s = _seconds(answer.headers.get("retry-after"))
            note = f"HTTP {status}"
        except httpx.HTTPError as exc:
            note = f"{type(exc).__name__}: {exc}"[:_NOTE_CHARS]
        tries = record.delivery.tries + 1
        match outcome(status):
            case "delivered":
                return Delivery(tries, 0, "delivered", note)
            case "gone":
                return Delivery(tries, 0, "gave_up", f"{note}: the receiver wants no more")
        delay = next_delay_s(tries, self._rng, self.schedule, retry_after_s=retry_after_s)
        if delay is None:
            log.warning("job %s: webhook gave up after %d tries (%s)", record.id, tries, note)
            return Delivery(tries, 0, "gave_up", note)
        return Delivery(tries, now_ms() + int(delay * 1000), "pending", note)


def webhook_body(record: JobRecord, result_url: str) -> dict[str, Any]:
    """What a webhook POST says about an ended job."""
    body: dict[str, Any] = {
        "id": record.id,
        "deployment": record.deployment,
        "status": record.status.value,
        "created_at": record.created_ms / 1000,
        "finished_at": None if record.finished_ms is None else record.finished_ms / 1000,
    }
    result = record.result
    if result is not None and result.content_type == "application/json" and result.stored is None:
        body["result"] = json.loads(result.data)
    elif result is not None:
        body["result_url"] = result_url
    if record.error is not None:
        body["error"] = {"type": record.error.type, "message": record.error.message}
    return body


def _seconds(value: str | None) -> float | None:
    """A Retry-After in seconds (the HTTP-date form is rare from webhook receivers: ignored)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def webhook_sender(config: AgentConfig, rotation: Rotation, http_addr: str) -> WebhookSender:
    """The node's webhook sender: signed with the mesh's current primary token's key."""
    scheme = "https" if config.tls_cert is not None else "http"
    schedule = WebhookSchedule(first_delay_s=config.job_webhook_first_delay_s)
    return WebhookSender(
        lambda job_id, timestamp_s, body: sign_webhook(rotation.tokens, job_id, timestamp_s, body),
        schedule,
        lambda record: f"{scheme}://{http_addr}/v1/jobs/{record.id}/result",
    )

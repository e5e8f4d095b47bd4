"""A closed-loop load generator for the chaos suite; stdlib only, so it starts fast inside a namespace.

    python tests/netns/loadgen.py --url http://10.250.7.1:8470 [--url ...] --path /v1/predict/echo \\
        --concurrency 4 --seconds 20 [--max-requests N] [--body JSON] [--key KEY] [--retries 3]

Each of ``--concurrency`` threads keeps one keep-alive connection (``http.client``) and sends one
request after another (``--think-s`` apart, if given), bounded by ``--seconds`` and
``--max-requests`` together. A request carries its sequence number in the body (``{"seq": n,
...}``) and an echo answer must give the body back, so a mixed-up answer counts as a failure too.
Retries are what a careful client does, and only for requests that never ran: a 429 or 503 with
``Retry-After`` (waited for, capped by ``--max-backoff-s``), or a connection refused or closed
before any answer (tried on the next ``--url`` at once). A timeout is never retried: the request
may have run.

Prints one JSON object when done: ``requests``, ``by_status`` (``"timeout"`` and ``"error"`` for no
answer), ``retried`` (requests that needed more than one attempt), ``attempts``, latencies in ms
(``p50``, ``p99``, ``max``, of the whole request, retries included; ``refused_max_ms`` over the 429s
and 503s returned), ``refused_without_retry_after``, ``routes`` (``X-Mesh-Route`` -> count) and the
first ``failures`` with their bodies. SIGTERM ends the run early (requests in flight finish).
``--ready-file`` is created once the first request answered, so a harness can inject its fault
while load flows.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import threading
import time
import urllib.parse
from collections import Counter
from typing import Any

# Enough failures to diagnose a run without flooding the harness's assertion message.
MAX_FAILURES_KEPT = 20
MAX_BODY_CHARS = 300
REFUSALS = (429, 503)


class Run:
    """What every thread adds to, under one lock."""

    def __init__(self, arguments: argparse.Namespace) -> None:
        self.arguments = arguments
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.deadline = self.started + arguments.seconds
        self.next_seq = 0
        self.by_status: Counter[str] = Counter()
        self.routes: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.refused_latencies: list[float] = []
        self.refused_without_retry_after = 0
        self.retried = 0
        self.attempts = 0
        self.failures: list[dict[str, Any]] = []
        self.answered_once = False

    def stop(self) -> None:
        """End the run now: no new request starts, those in flight finish."""
        with self.lock:
            self.deadline = time.monotonic()

    def take(self) -> int | None:
        """The next sequence number, or None once the run is over (time or count)."""
        with self.lock:
            if time.monotonic() >= self.deadline or self.next_seq >= self.arguments.max_requests:
                return None
            self.next_seq += 1
            return self.next_seq - 1

    def record(self, outcome: dict[str, Any], latency_s: float, attempts: int) -> None:
        """Count one finished request."""
        status = outcome["status"]
        with self.lock:
            self.by_status[str(status)] += 1
            self.latencies.append(latency_s)
            self.attempts += attempts
            self.retried += attempts > 1
            if outcome.get("route"):
                self.routes[outcome["route"]] += 1
            if status in REFUSALS:
                self.refused_latencies.append(latency_s)
                self.refused_without_retry_after += not outcome.get("retry_after")
            if status != 200 and len(self.failures) < MAX_FAILURES_KEPT:
                at_s = round(time.monotonic() - self.started - latency_s, 3)
                self.failures.append({**outcome, "at_s": at_s, "latency_ms": round(latency_s * 1000, 1)})
        if not self.answered_once and self.arguments.ready_file:
            self.answered_once = True
            open(self.arguments.ready_file, "w").close()

    def summary(self) -> dict[str, Any]:
        """The JSON this script prints."""
        ordered = sorted(self.latencies)

        def percentile(fraction: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 1)

        return {
            "requests": len(ordered),
            "by_status": dict(self.by_status),
            "retried": self.retried,
            "attempts": self.attempts,
            "p50_ms": percentile(0.50),
            "p99_ms": percentile(0.99),
            "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
            "refused_max_ms": round(max(self.refused_latencies) * 1000, 1)
            if self.refused_latencies
            else None,
            "refused_without_retry_after": self.refused_without_retry_after,
            "routes": dict(self.routes),
            "seconds": round(time.monotonic() - self.started, 2),
            "failures": self.failures,
        }


class Worker:
    """One thread's keep-alive connection, moved to the next URL when a node does not answer."""

    def __init__(self, run: Run, index: int) -> None:
        self.run = run
        self.urls = [urllib.parse.urlsplit(url) for url in run.arguments.url]
        self.position = index % len(self.urls)
        self.connection: http.client.HTTPConnection | None = None

    def loop(self) -> None:
        """Send requests until the run is over."""
        try:
            while (seq := self.run.take()) is not None:
                began = time.monotonic()
                outcome, attempts = self.request(seq)
                self.run.record(outcome, time.monotonic() - began, attempts)
                if self.run.arguments.think_s:
                    # A paced client: a pause between an answer and the next request.
                    time.sleep(self.run.arguments.think_s)
        finally:
            self.close()

    def request(self, seq: int) -> tuple[dict[str, Any], int]:
        """One request, with its retries; the final outcome and the attempts it took."""
        arguments = self.run.arguments
        body = {**json.loads(arguments.body), "seq": seq}
        payload = json.dumps(body).encode()
        attempt = 0
        while True:
            attempt += 1
            outcome = self.attempt(payload)
            retry = attempt <= arguments.retries and (
                outcome["status"] == "refused-connection"
                or (outcome["status"] in REFUSALS and outcome.get("retry_after"))
            )
            if not retry:
                break
            if outcome["status"] == "refused-connection":
                self.position = (self.position + 1) % len(self.urls)
            else:
                wait_s = min(float(outcome["retry_after"]), arguments.max_backoff_s)
                time.sleep(max(0.0, min(wait_s, self.run.deadline + arguments.timeout - time.monotonic())))
        if outcome["status"] == "refused-connection":
            outcome["status"] = "error"
        if outcome["status"] == 200 and arguments.expect_echo and outcome.pop("echo") != {"echo": body}:
            outcome["status"] = "wrong-body"
        outcome.pop("echo", None)
        return outcome, attempt

    def attempt(self, payload: bytes) -> dict[str, Any]:
        """Send once; a status, or ``timeout`` / ``refused-connection`` when no answer came."""
        arguments = self.run.arguments
        target = self.urls[self.position]
        headers = {"Content-Type": "application/json", "X-Request-Timeout": str(arguments.deadline)}
        if arguments.key:
            headers["Authorization"] = f"Bearer {arguments.key}"
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection(target.netloc, timeout=arguments.timeout)
            self.connection.request("POST", arguments.path, payload, headers)
            response = self.connection.getresponse()
            raw = response.read()
        except TimeoutError:
            self.close()
            return {"status": "timeout", "url": target.netloc, "body": ""}
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            # Refused, reset or closed before an answer: the request never ran to an answer here.
            self.close()
            return {"status": "refused-connection", "url": target.netloc, "body": repr(exc)}
        text = raw.decode(errors="replace")
        outcome: dict[str, Any] = {
            "status": response.status,
            "url": target.netloc,
            "route": response.getheader("X-Mesh-Route"),
            "retry_after": response.getheader("Retry-After"),
        }
        if response.status == 200:
            try:
                outcome["echo"] = json.loads(text)
            except json.JSONDecodeError:
                outcome["echo"] = text
        else:
            outcome["body"] = text[:MAX_BODY_CHARS]
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        return outcome

    def close(self) -> None:
        """Drop the connection (a fresh one is made for the next attempt)."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", action="append", required=True, help="a node's base URL; repeatable")
    parser.add_argument("--path", default="/v1/predict/echo")
    parser.add_argument("--body", default="{}", help="JSON object sent (with its seq added)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=float, default=30.0, help="socket timeout per attempt, s")
    parser.add_argument("--deadline", type=float, default=20.0, help="X-Request-Timeout sent, s")
    parser.add_argument("--retries", type=int, default=0)
    parser.add_argument("--think-s", type=float, default=0.0, help="pause after each answer, s")
    parser.add_argument("--max-backoff-s", type=float, default=0.5)
    parser.add_argument("--key", default="", help="API key (Authorization: Bearer)")
    parser.add_argument("--expect-echo", action="store_true", help="a 200 must echo the body")
    parser.add_argument("--ready-file", default="", help="created once the first request answered")
    arguments = parser.parse_args(argv)
    if arguments.concurrency < 1 or arguments.seconds <= 0 or arguments.max_requests < 1:
        parser.error("--concurrency, --seconds and --max-requests must be positive")
    if arguments.think_s < 0:
        parser.error("--think-s must not be negative")
    if not isinstance(json.loads(arguments.body), dict):
        parser.error("--body must be a JSON object")
    return arguments


def main(argv: list[str] | None = None) -> None:
    """Run the load and print its summary."""
    run = Run(parse(argv))
    # The harness stops a run whose fault is over with SIGTERM; it still prints its summary.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: run.stop())
    threads = [
        threading.Thread(target=Worker(run, index).loop, daemon=True)
        for index in range(run.arguments.concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(run.summary()), flush=True)


if __name__ == "__main__":
    main()

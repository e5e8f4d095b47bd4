"""HTTP calls from inside a network namespace, for the netns tests and the chaos suite.

A test process cannot open a socket inside a namespace, so ``ask`` runs a tiny stdlib client there
(``ip netns exec``), which also makes "a request from a node on this side" literal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CLIENT", "Answer", "Call", "ask", "log_tail", "nft"]

LOG_TAIL_LINES = 20
# Runs inside a namespace: makes each call of a JSON list in turn, prints one JSON answer per call.
CLIENT = """
import json, sys, urllib.error, urllib.request
answers = []
for call in json.loads(sys.argv[1]):
    data = None if call["body"] is None else json.dumps(call["body"]).encode()
    request = urllib.request.Request(call["url"], data=data, method=call["method"], headers=call["headers"])
    try:
        with urllib.request.urlopen(request, timeout=call["timeout"]) as response:
            answer = {"status": response.status, "route": response.headers.get("X-Mesh-Route"),
                      "body": response.read().decode(errors="replace"), "date": response.headers.get("Date")}
    except urllib.error.HTTPError as exc:
        answer = {"status": exc.code, "route": None, "body": exc.read().decode(errors="replace")}
    except OSError as exc:
        answer = {"status": None, "route": None, "body": repr(exc)}
    answers.append(answer)
print(json.dumps(answers))
"""


@dataclass(frozen=True)
class Call:
    """One HTTP request for ``CLIENT`` to make."""

    method: str
    url: str
    body: object = None
    timeout_s: float = 5.0
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)

    def to_wire(self) -> dict[str, Any]:
        """The JSON form ``CLIENT`` reads."""
        return {
            "method": self.method,
            "url": self.url,
            "body": self.body,
            "timeout": self.timeout_s,
            "headers": dict(self.headers),
        }


@dataclass(frozen=True)
class Answer:
    """What ``CLIENT`` got back: status None when the request never got an HTTP answer."""

    status: int | None
    route: str | None
    body: str
    # The server's Date header: its wall clock, to the second.
    date: str | None = None

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except json.JSONDecodeError:
            return None


def ask(host: str, calls: list[Call]) -> list[Answer]:
    """Make ``calls`` in turn from inside namespace ``host``; every answer, failed ones included."""
    budget = sum(call.timeout_s for call in calls) + 20
    result = subprocess.run(
        ["ip", "netns", "exec", host, sys.executable, "-c", CLIENT, json.dumps([c.to_wire() for c in calls])],
        capture_output=True,
        text=True,
        timeout=budget,
        check=False,
    )
    if result.returncode != 0:
        failed = Answer(None, None, f"client exited with {result.returncode}: {result.stderr.strip()}")
        return [failed] * len(calls)
    return [Answer(**answer) for answer in json.loads(result.stdout)]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file, for assertion messages."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"


def nft(namespace: str, script: str) -> None:
    """Run an nft script inside ``namespace``, raising with its stderr if it fails."""
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"nft failed ({result.returncode}): {result.stderr.strip()}\n{script}")

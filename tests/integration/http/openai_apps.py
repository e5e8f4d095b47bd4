"""A text-generation app for the OpenAI route tests: it follows the contract and streams words.

``Words`` answers a chat or completion request by repeating the words of the last message (or the
prompt) until ``max_tokens`` words, stopping before the first ``stop`` string, one word per
``INTERVAL_S`` when streaming. Two words steer it for the failover tests, each followed by a path:

- ``hold-first:PATH`` writes the worker's pid to PATH, then waits ``HOLD_S`` before the first word
  (the test kills the worker meanwhile: before the first token);
- ``hold-after:PATH`` streams one word, writes its pid to PATH, then waits ``HOLD_S`` (the test kills
  it after the first token).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from meshnode.inference.predictor import InvalidRequest, Predictor

INTERVAL_S = 0.1
HOLD_S = 3.0


class Words(Predictor):
    """Echoes words back, as a language model would produce tokens."""

    serves = ("chat", "completions")
    max_concurrency = 8

    def predict(self, request: dict[str, Any], header: str | None = None) -> dict[str, Any]:
        words, stop_at, finish = _plan(request)
        whole = " ".join(words)
        text = _cut(whole, stop_at)
        return {
            "text": text,
            "finish_reason": "stop" if text != whole else finish,
            "usage": {"prompt_tokens": _prompt_tokens(request), "completion_tokens": len(text.split())},
            "model": "words",
        }

    async def async_predict(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        words, stops, finish = _plan(request)
        markers = _source(request).split()
        _hold_marker(markers, "hold-first:")
        if any(marker.startswith("hold-first:") for marker in markers):
            await asyncio.sleep(HOLD_S)
        sent = ""
        for index, word in enumerate(words):
            candidate = sent + (word if index == 0 else f" {word}")
            cut = _cut(candidate, stops)
            if cut != candidate:  # a stop string: what comes before it, and the end
                if len(cut) > len(sent):
                    yield {"text": cut[len(sent) :]}
                yield {"text": "", "finish_reason": "stop", "usage": _usage(request, cut)}
                return
            yield {"text": candidate[len(sent) :]}
            sent = candidate
            if index == 0 and _hold_marker(markers, "hold-after:"):
                await asyncio.sleep(HOLD_S)
            await asyncio.sleep(INTERVAL_S)
        yield {"text": "", "finish_reason": finish, "usage": _usage(request, sent)}


def _hold_marker(markers: list[str], prefix: str) -> bool:
    """Write this worker's pid where a marker with `prefix` says; whether there was one."""
    for marker in markers:
        if marker.startswith(prefix):
            Path(marker.split(":", 1)[1]).write_text(str(os.getpid()))
            return True
    return False


def _source(request: dict[str, Any]) -> str:
    if "messages" in request:
        messages = request["messages"]
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest('"messages" must be a non-empty list')
        return str(messages[-1].get("content", ""))
    if not isinstance(request.get("prompt"), str):
        raise InvalidRequest('"prompt" or "messages" is required')
    return str(request["prompt"])


def _plan(request: dict[str, Any]) -> tuple[list[str], list[str], str]:
    words = [word for word in _source(request).split() if ":" not in word] or ["nothing"]
    limit = int(request.get("max_tokens") or 16)
    # The words repeat until max_tokens: every answer that meets no stop string ends by length.
    return (words * limit)[:limit], list(request.get("stop") or []), "length"


def _cut(text: str, stops: list[str]) -> str:
    cuts = [text.index(stop) for stop in stops if stop in text]
    return text[: min(cuts)] if cuts else text


def _prompt_tokens(request: dict[str, Any]) -> int:
    if "messages" in request:
        return sum(len(str(m.get("content", "")).split()) for m in request["messages"])
    return len(str(request.get("prompt", "")).split())


def _usage(request: dict[str, Any], text: str) -> dict[str, int]:
    return {"prompt_tokens": _prompt_tokens(request), "completion_tokens": len(text.split())}

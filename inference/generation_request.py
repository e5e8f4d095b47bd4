"""The body of a chat or completion request, checked: every field typed and bounded, defaults filled.

The shapes are the contract of the kinds ``"chat"`` and ``"completions"`` (``predictor.py``): exactly
one of ``messages`` (a list of ``{"role", "content"}``, written with the model's chat template) and
``prompt`` (raw text), then optional ``max_tokens``, ``temperature`` (0: greedy), ``top_p``,
``seed``, ``stop`` (a string or a list) and ``ignore_eos`` (vLLM's: generate to ``max_tokens``
regardless). ``stream`` and ``model`` are the caller's business and ignored here. A bad field
raises ``InvalidRequest`` naming it, which the client gets as a 422; the token bounds (prompt
length, the model's context) are checked later by the engine, which knows the model.
"""

from __future__ import annotations

import math
from typing import Any

from .generation import GenerationLimits
from .predictor import InvalidRequest, Request
from .sampling import SamplingParams

__all__ = ["DEFAULT_LIMITS", "DEFAULT_MAX_TOKENS", "parse_request"]

# OpenAI's completions default is 16 tokens; a little more makes a streamed demo worth watching.
DEFAULT_MAX_TOKENS = 128
# OpenAI's range; above it sampling is close to uniform noise.
MAX_TEMPERATURE = 2.0
# Any int64, as OpenAI's seed; the generator takes it modulo 2**64.
SEED_RANGE = (-(2**63), 2**63 - 1)
MAX_ROLE_CHARS = 64
DEFAULT_LIMITS = GenerationLimits()


def parse_request(request: Request, limits: GenerationLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Check a body and fill in defaults; raises InvalidRequest naming the bad field."""
    if not isinstance(request, dict):
        raise InvalidRequest(f"request must be a JSON object, not {type(request).__name__}")
    has_messages, has_prompt = "messages" in request, "prompt" in request
    if has_messages == has_prompt:
        raise InvalidRequest('give exactly one of "messages" (chat) and "prompt" (completion)')
    parsed: dict[str, Any] = {}
    if has_messages:
        parsed["messages"] = _messages(request["messages"], limits)
    else:
        prompt = request["prompt"]
        if not isinstance(prompt, str) or not prompt:
            raise InvalidRequest('"prompt" must be a non-empty string')
        if len(prompt) > limits.max_prompt_chars:
            raise InvalidRequest(
                f'"prompt" is {len(prompt)} characters; the limit is {limits.max_prompt_chars}'
            )
        parsed["prompt"] = prompt
    parsed["max_tokens"] = _integer(request, "max_tokens", DEFAULT_MAX_TOKENS, 1, limits.max_tokens)
    temperature = _number(request, "temperature", 1.0, 0.0, MAX_TEMPERATURE)
    top_p = _number(request, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0.0:
        raise InvalidRequest('"top_p" must be greater than 0')
    seed = None if request.get("seed") is None else _integer(request, "seed", 0, *SEED_RANGE)
    parsed["sampling"] = SamplingParams(temperature, top_p, seed)
    parsed["stop"] = _stops(request.get("stop"), limits)
    ignore_eos = request.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise InvalidRequest(f'"ignore_eos" must be true or false, not {type(ignore_eos).__name__}')
    parsed["ignore_eos"] = ignore_eos
    return parsed


def _messages(messages: Any, limits: GenerationLimits) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest('"messages" must be a non-empty list of {"role", "content"} objects')
    if len(messages) > limits.max_messages:
        raise InvalidRequest(f'"messages" has {len(messages)} items; the limit is {limits.max_messages}')
    checked: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(role, str) or not role or len(role) > MAX_ROLE_CHARS:
            raise InvalidRequest(
                f'"messages"[{index}].role must be a string of 1 to {MAX_ROLE_CHARS} characters'
            )
        if not isinstance(content, str):
            raise InvalidRequest(f'"messages"[{index}].content must be a string')
        checked.append({"role": role, "content": content})
    total = sum(len(m["content"]) for m in checked)
    if total > limits.max_prompt_chars:
        raise InvalidRequest(f'"messages" hold {total} characters; the limit is {limits.max_prompt_chars}')
    return checked


def _stops(stop: Any, limits: GenerationLimits) -> tuple[str, ...]:
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise InvalidRequest('"stop" must be a non-empty string or a list of them')
    if len(stops) > limits.max_stops:
        raise InvalidRequest(f'"stop" has {len(stops)} strings; the limit is {limits.max_stops}')
    if any(len(s) > limits.max_stop_chars for s in stops):
        raise InvalidRequest(f'"stop" strings may have at most {limits.max_stop_chars} characters')
    return tuple(stops)


def _integer(request: Request, name: str, default: int, low: int, high: int) -> int:
    value = request.get(name)
    if value is None:
        return default
    # bool is an int subclass; "max_tokens": true is a client bug, not 1.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRequest(f'"{name}" must be an integer between {low} and {high}, not {value!r}')
    return value


def _number(request: Request, name: str, default: float, low: float, high: float) -> float:
    value = request.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f'"{name}" must be a number, not {value!r}')
    if not low <= value <= high:
        raise InvalidRequest(f'"{name}" must be between {low:g} and {high:g}, not {value!r}')
    return float(value)

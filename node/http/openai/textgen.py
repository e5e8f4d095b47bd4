"""What chat and completions share: sampling parameters, ``n`` choices, usage, and streaming.

Both routes send a text-generation predictor the same body (the contract of the kinds "chat" and
"completions", ``apps/text_generation.py``), with ``messages`` for chat and ``prompt`` for
completions::

    {"max_tokens", "temperature", "top_p", "seed", "stop": [str, ...], "stream", "model"}

Not streaming, the predictor answers ``{"text", "finish_reason", "usage": {"prompt_tokens",
"completion_tokens"}}``. Streaming, it yields ``{"text": delta}`` per token as it is produced, and
last ``{"text": "", "finish_reason", "usage"}``; the stream's end (``Reply``) follows.

``n`` choices are ``n`` calls made concurrently (``edge.serve_all``), the i-th with ``seed + i``
when a seed was given, so the choices differ and each is reproducible. Usage adds the choices'
completion tokens and counts each distinct prompt once, as OpenAI does. An app that reports no
usage gets its tokens counted as whitespace-separated words.

Streaming (``events``): one SSE event per chunk in OpenAI's format, as each predictor chunk
arrives from whichever call produced it; each choice ends with a chunk holding its
``finish_reason``; with ``stream_options.include_usage`` a last chunk with empty ``choices`` carries
the usage (the others carry ``"usage": null``); then ``data: [DONE]``. A failure after the stream
started ends it with an error event (``errors.stream_error``) and no ``[DONE]``; a client that goes
away closes every call's stream, which cancels the requests where they run.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...dataplane.forward import Served
from ...errors import MeshnodeError, PredictorError, error_for_failure
from ...mesh.envelope import Chunk, Envelope, Failure, Reply
from .errors import ParamError, stream_error

log = logging.getLogger(__name__)

__all__ = [
    "MAX_CHOICES",
    "MAX_TOKENS",
    "Result",
    "SamplingParams",
    "Shape",
    "events",
    "result_of",
    "sampling_body",
]

# Calls one request may make at once (n times the prompts): each holds a replica slot.
MAX_CHOICES = 16
# Far past what a small model's context holds; the app refuses what its model cannot (422).
MAX_TOKENS = 131_072
MAX_STOPS = 4  # OpenAI's limit
MAX_STOP_CHARS = 256
# The seed plus the choice's index stays inside the 64-bit integers every runtime takes.
MAX_SEED = 2**63 - 1 - MAX_CHOICES
MAX_MODEL_CHARS = 256
_FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_calls"})
_DONE = b"data: [DONE]\n\n"


class StreamOptions(BaseModel):
    """``stream_options``: whether a last chunk carries the usage."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class SamplingParams(BaseModel):
    """The parameters chat and completions share."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=MAX_MODEL_CHARS)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stop: str | list[str] | None = Field(None, description=f"a string or up to {MAX_STOPS} strings")
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=1024)
    # vLLM's extra parameter (the SDK's extra_body): generate to max_tokens past end-of-sequence.
    ignore_eos: bool | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stops(cls, value: Any) -> Any:
        stops = [value] if isinstance(value, str) else value
        if stops is None:
            return None
        if not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops):
            raise ValueError("must be a string or a list of strings")
        if len(stops) > MAX_STOPS:
            raise ValueError(f"has {len(stops)} strings; the limit is {MAX_STOPS}")
        if not all(0 < len(stop) <= MAX_STOP_CHARS for stop in stops):
            raise ValueError(f"each stop string must be 1 to {MAX_STOP_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _options_need_a_stream(self) -> SamplingParams:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    @property
    def choices(self) -> int:
        """Choices asked for per prompt."""
        return self.n or 1


def sampling_body(params: SamplingParams, max_tokens: int, index: int) -> dict[str, Any]:
    """The predictor body's sampling part for choice `index` (its seed moved by `index`)."""
    stops = [params.stop] if isinstance(params.stop, str) else list(params.stop or ())
    return {
        "max_tokens": max_tokens,
        "temperature": 1.0 if params.temperature is None else params.temperature,
        "top_p": 1.0 if params.top_p is None else params.top_p,
        "seed": None if params.seed is None else params.seed + index,
        "stop": stops,
        "ignore_eos": bool(params.ignore_eos),
        "stream": bool(params.stream),
        "model": params.model,
    }


def check_choices(count: int) -> None:
    """400 when a request asks for more calls than one request may make."""
    if count > MAX_CHOICES:
        raise ParamError("n", f"n times the prompts is {count}; the limit is {MAX_CHOICES} choices")


@dataclass(frozen=True)
class Result:
    """One choice's whole answer."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def result_of(data: Any, prompt_words: int) -> Result:
    """A non-streamed answer, checked (PredictorError when it is not the text-generation shape)."""
    text = data.get("text") if isinstance(data, dict) else data if isinstance(data, str) else None
    if not isinstance(text, str):
        raise PredictorError("the text-generation app answered without a 'text' string")
    prompt, completion = _usage(data, prompt_words, text)
    return Result(text, _finish(data), prompt, completion)


def usage_of(results: Sequence[tuple[int, int, int]]) -> dict[str, int]:
    """OpenAI's usage from (prompt group, prompt tokens, completion tokens) per choice."""
    prompts: dict[int, int] = {}
    for group, prompt, _ in results:
        prompts[group] = max(prompts.get(group, 0), prompt)
    prompt_tokens = sum(prompts.values())
    completion_tokens = sum(completion for _, _, completion in results)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class Shape(abc.ABC):
    """How one route's stream chunks look; chat and completions fill in the choice parts."""

    object = ""

    def __init__(self, response_id: str, model: str, include_usage: bool) -> None:
        self.id = response_id
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def opening(self, index: int) -> dict[str, Any] | None:
        """The choice part of a chunk before the first token (chat: the role), or None."""
        return None

    @abc.abstractmethod
    def delta(self, index: int, text: str) -> dict[str, Any]:
        """The choice part of a chunk carrying `text`."""

    @abc.abstractmethod
    def closing(self, index: int, finish_reason: str) -> dict[str, Any]:
        """The choice part of a choice's last chunk."""

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        """One SSE event."""
        body: dict[str, Any] = {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


async def events(
    served: Sequence[Served], shape: Shape, groups: Sequence[int], prompt_words: Sequence[int], rid: str
) -> AsyncIterator[bytes]:
    """The SSE events of `served` calls (choice i is call i; `groups[i]` its prompt), as they come."""
    counts: list[tuple[int, int, int]] = [(group, 0, 0) for group in groups]
    texts = [""] * len(served)
    finished: set[int] = set()
    for index in range(len(served)):
        opening = shape.opening(index)
        if opening is not None:
            yield shape.chunk([opening])
    try:
        async for index, message in _merged(served):
            match message:
                case Chunk(_, _, data):
                    text = data.get("text", "") if isinstance(data, dict) else data
                    if not isinstance(text, str):
                        raise PredictorError("the text-generation app streamed a chunk without 'text'")
                    if text:
                        texts[index] += text
                        yield shape.chunk([shape.delta(index, text)])
                    if isinstance(data, dict) and data.get("finish_reason") and index not in finished:
                        finished.add(index)
                        counts[index] = (groups[index], *_usage(data, prompt_words[index], texts[index]))
                        yield shape.chunk([shape.closing(index, _finish(data))])
                case Reply():
                    if index not in finished:
                        finished.add(index)
                        counts[index] = (groups[index], *_usage({}, prompt_words[index], texts[index]))
                        yield shape.chunk([shape.closing(index, "stop")])
                case Failure(_, kind, text, retryable):
                    raise error_for_failure(kind, text, retryable=retryable)
    except MeshnodeError as exc:
        yield stream_error(exc, rid)
        return
    if shape.include_usage:
        yield shape.chunk([], usage_of(counts))
    yield _DONE


async def _merged(served: Sequence[Served]) -> AsyncIterator[tuple[int, Envelope]]:
    """Every call's messages as (call index, message), in the order they arrive."""
    if len(served) == 1:
        yield 0, served[0].first
        async with contextlib.aclosing(served[0].rest) as rest:
            async for message in rest:
                yield 0, message
        return
    queue: asyncio.Queue[tuple[int, Envelope | MeshnodeError | None]] = asyncio.Queue()

    async def pump(index: int, one: Served) -> None:
        queue.put_nowait((index, one.first))
        try:
            # aclosing: cancelling this pump closes the call's stream, which cancels it upstream.
            async with contextlib.aclosing(one.rest) as rest:
                async for message in rest:
                    queue.put_nowait((index, message))
        except MeshnodeError as exc:
            queue.put_nowait((index, exc))
        except Exception:  # a bug must end the stream with an error, not leave it waiting
            log.exception("choice %d's stream failed", index)
            queue.put_nowait((index, PredictorError("a choice's stream failed")))
        queue.put_nowait((index, None))

    pumps = [asyncio.ensure_future(pump(index, one)) for index, one in enumerate(served)]
    try:
        running = len(pumps)
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, MeshnodeError):
                raise item
            else:
                yield index, item
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


def _finish(data: Any) -> str:
    reason = data.get("finish_reason") if isinstance(data, dict) else None
    # "cancelled" (the client went away) and unknown reasons read as "stop": the text ended there.
    return reason if reason in _FINISH_REASONS else "stop"


def _usage(data: Any, prompt_words: int, text: str) -> tuple[int, int]:
    usage = data.get("usage") if isinstance(data, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    return (
        prompt_words if prompt is None else prompt,
        len(text.split()) if completion is None else completion,
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

"""Text generation for many concurrent requests: one engine thread, dynamic batches, streamed text.

``GenerationEngine`` owns a causal LM and runs it in a thread of its own, so the worker's event loop
never waits on the model. Requests are queued by ``submit`` (from any thread); whenever the thread
is free it takes every waiting request (up to ``max_batch_size``) as one batch and runs it with
``batch_decode.run_batch``: one prefill, then one forward pass per token for all rows together, each
row leaving when it finishes or is cancelled. Requests that arrive meanwhile form the next batch.

A batch's requests share each forward pass, which costs little more than one row's on a CPU or GPU
that one row leaves idle: that is where batching's throughput comes from. ``max_batch_size=1`` runs
requests one at a time (for comparison). A request may wait for the batch in flight to end: the
price of not splicing newcomers into a running cache.

Callers: ``generate`` blocks (for ``predict`` threads); ``stream`` is an async iterator that gets
events from the thread through ``loop.call_soon_threadsafe`` and cancels its request when the
consumer stops early (a client gone, a task cancelled). Every input is bounded (``GenerationLimits``):
a violation raises ``InvalidRequest`` naming the field before anything is queued.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import queue
import threading
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from .batch_decode import (
    Delta,
    Emit,
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    Handle,
    Row,
    new_generator,
    run_batch,
    take_batch,
)
from .predictor import InvalidRequest
from .stops import IncrementalDetokenizer, StopMatcher

__all__ = [
    "Completion",
    "Delta",
    "FinishReason",
    "Finished",
    "GenerationEngine",
    "GenerationError",
    "GenerationEvent",
    "GenerationLimits",
    "GenerationRequest",
    "Handle",
]


class GenerationError(RuntimeError):
    """The model failed while generating (the message is the underlying exception's)."""


@dataclass(frozen=True, slots=True)
class GenerationLimits:
    """Bounds on what one request may ask for; each costs memory or time when raised."""

    # Prompt length in tokens: the prefill's memory and time grow with it (and attention's quadratically).
    max_prompt_tokens: int = 4096
    # Tokens one request may generate: how long it may hold a batch row.
    max_tokens: int = 4096
    # Stop strings per request (OpenAI allows 4) and characters each: checked after every token.
    max_stops: int = 4
    max_stop_chars: int = 64
    # Chat messages per request and characters of all of them (and of a raw prompt): the template and
    # the tokenizer run on them before the token bound can be checked.
    max_messages: int = 256
    max_prompt_chars: int = 100_000


DEFAULT_LIMITS = GenerationLimits()
# How long close waits for the engine thread to finish its current step.
CLOSE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer: its text, why it ended, and its token counts."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


class GenerationEngine:
    """A causal LM answering many requests at once from one thread (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 32,
        limits: GenerationLimits = DEFAULT_LIMITS,
        start: bool = True,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.limits = limits
        context = getattr(model.config, "max_position_embeddings", None)
        self.context_tokens: int | None = int(context) if context else None
        self.pad_id = _first_int(tokenizer.pad_token_id, tokenizer.eos_token_id, 0)
        self.eos_ids = frozenset(_ids(tokenizer.eos_token_id) | _ids(_generation_eos(model)))
        # How many decode steps ran with each number of rows: /metrics' meshnode_batch_size, tests.
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        # Fast tokenizers are not safe to call from several threads at once ("Already borrowed").
        self._tokenizer_lock = threading.Lock()
        self._waiting: deque[Row] = deque()
        self._running: list[Row] = []  # the batch in flight, for close to cancel
        self._wakeup = threading.Condition()
        self._closed = False
        self._ids = itertools.count()
        self._in_flight = 0  # submitted and not yet finished; guarded by _idle
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="generation", daemon=True)
        if start:
            self._thread.start()

    def start(self) -> None:
        """Start the engine thread (for an engine made with ``start=False``, e.g. to queue a batch)."""
        self._thread.start()

    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet finished (waiting or in a batch)."""
        with self._idle:
            return self._in_flight

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no request is in flight; False if ``timeout_s`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)

    def encode_prompt(self, prompt: str) -> tuple[int, ...]:
        """A raw prompt's token ids (with the tokenizer's own special tokens, e.g. bos)."""
        with self._tokenizer_lock:
            return tuple(self.tokenizer(prompt)["input_ids"])

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> tuple[int, ...]:
        """A conversation's token ids, written with the tokenizer's chat template and a reply prompt."""
        from .tiny_lm import chat_template_of

        with self._tokenizer_lock:
            text = self.tokenizer.apply_chat_template(
                list(messages),
                chat_template=chat_template_of(self.tokenizer),
                add_generation_prompt=True,
                tokenize=False,
            )
            # The template writes the bos token itself; adding special tokens again would double it.
            return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def check(self, request: GenerationRequest) -> None:
        """Raise ``InvalidRequest`` naming the field when ``request`` exceeds a bound or the context."""
        prompt_tokens = len(request.prompt_ids)
        if prompt_tokens == 0:
            raise InvalidRequest('"prompt" must not be empty')
        if prompt_tokens > self.limits.max_prompt_tokens:
            raise InvalidRequest(
                f'"prompt" is {prompt_tokens} tokens; the limit is {self.limits.max_prompt_tokens}'
            )
        if not 1 <= request.max_tokens <= self.limits.max_tokens:
            raise InvalidRequest(f'"max_tokens" must be between 1 and {self.limits.max_tokens}')
        if self.context_tokens is not None and prompt_tokens + request.max_tokens > self.context_tokens:
            raise InvalidRequest(
                f'"max_tokens" {request.max_tokens} plus the prompt\'s {prompt_tokens} tokens exceed'
                f" the model's context of {self.context_tokens} tokens"
            )

    def submit(self, request: GenerationRequest, emit: Emit) -> Handle:
        """Queue ``request``; ``emit`` gets its events from the engine thread. Raises InvalidRequest."""
        self.check(request)
        handle = Handle(next(self._ids))

        def emit_and_count(event: GenerationEvent) -> None:
            if isinstance(event, Finished):
                with self._idle:
                    self._in_flight -= 1
                    self._idle.notify_all()
            emit(event)

        row = Row(
            handle,
            request,
            emit_and_count,
            IncrementalDetokenizer(self._decode),
            StopMatcher(request.stop),
            generator=new_generator(request.sampling.seed),
        )
        with self._wakeup:
            if self._closed:
                raise GenerationError("the generation engine is closed")
            with self._idle:
                self._in_flight += 1
            self._waiting.append(row)
            self._wakeup.notify()
        return handle

    def generate(self, request: GenerationRequest) -> Completion:
        """Run ``request`` to its end, blocking this thread (not the engine's)."""
        events: queue.SimpleQueue[GenerationEvent] = queue.SimpleQueue()
        self.submit(request, events.put)
        pieces: list[str] = []
        while True:
            event = events.get()
            if isinstance(event, Delta):
                pieces.append(event.text)
                continue
            if event.error is not None:
                raise GenerationError(event.error)
            return Completion(
                "".join(pieces), event.finish_reason, event.prompt_tokens, event.completion_tokens
            )

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        """Events of ``request`` as they are produced; stopping early cancels it in the engine."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[GenerationEvent] = asyncio.Queue()

        submitted: list[Handle] = []  # filled once submit returns; emit may run before that

        def emit(event: GenerationEvent) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                for handle in submitted:
                    handle.cancel()

        handle = self.submit(request, emit)
        submitted.append(handle)
        finished = False
        try:
            while not finished:
                event = await events.get()
                if isinstance(event, Finished):
                    finished = True
                    if event.error is not None:
                        raise GenerationError(event.error)
                yield event
        finally:
            # Reached on CancelledError and GeneratorExit too: the client is gone, free the row.
            if not finished:
                handle.cancel()

    def close(self) -> None:
        """Stop the engine thread; every unfinished request ends as cancelled."""
        with self._wakeup:
            self._closed = True
            for row in self._running:
                row.handle.cancel()
            self._wakeup.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=CLOSE_TIMEOUT_S)
        else:
            self._end_waiting()

    def _end_waiting(self) -> None:
        rows, self._waiting = list(self._waiting), deque()
        for row in rows:
            row.end("cancelled")

    def _decode(self, ids: Sequence[int]) -> str:
        with self._tokenizer_lock:
            return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._waiting and not self._closed:
                    self._wakeup.wait()
                if self._closed:
                    self._end_waiting()
                    return
                rows, dropped = take_batch(self._waiting, self.max_batch_size, lambda r: r.handle.cancelled)
                self._running = rows
            for row in dropped:
                row.end("cancelled")
            if rows:
                self.batch_sizes[len(rows)] += 1
                try:
                    run_batch(self.model, rows, pad_id=self.pad_id, eos_ids=self.eos_ids)
                except Exception as exc:  # the model failed: every unfinished row learns why
                    message = f"{type(exc).__name__}: {exc}"[:1000]
                    for row in rows:
                        if row.finish is None:
                            # A callback that raised caused this failure, maybe; it must not end the thread.
                            with contextlib.suppress(Exception):
                                row.end("stop", error=message)


def _generation_eos(model: Any) -> Any:
    config = getattr(model, "generation_config", None)
    return getattr(config, "eos_token_id", None)


def _ids(value: Any) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value}


def _first_int(*values: int | None) -> int:
    return next(v for v in values if v is not None)

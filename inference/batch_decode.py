"""One batch of generation requests through a causal LM: prefill, then token by token with a KV cache.

The engine thread (``generation.py``) hands ``run_batch`` the requests that were waiting together:

1. prefill: the prompts, left-padded to one length (``left_pad``, so every prompt ends in the last
   column, where generation continues), with an attention mask hiding the padding and positions
   counted from each prompt's first real token (so padding shifts nothing), run once to fill a
   ``DynamicCache``;
2. decode: each step feeds every row its newest token and the cache, so a step costs one token per
   row; each row picks its token with its own ``SamplingParams`` and generator (``sampling.py``),
   turns it into final text (``stops.py``) and hands that to its ``emit`` callback at once;
3. a row that finishes (eos, a stop string, ``max_tokens``) or is cancelled leaves at the next step,
   its cache rows dropped with ``batch_select_indices``; the batch ends when no row is left.

Decisions (``left_pad``, ``take_batch``, ``Row.advance``) are plain functions of their inputs; only
``run_batch`` touches torch.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .sampling import SamplingParams, choose_token
from .stops import IncrementalDetokenizer, StopMatcher

__all__ = [
    "Delta",
    "Emit",
    "FinishReason",
    "Finished",
    "GenerationEvent",
    "GenerationRequest",
    "Handle",
    "Row",
    "left_pad",
    "new_generator",
    "run_batch",
    "take_batch",
]

FinishReason = Literal["stop", "length", "cancelled"]
T = TypeVar("T")
GREEDY = SamplingParams(temperature=0.0)


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One request, tokenized and checked: what the engine thread needs to run it."""

    prompt_ids: tuple[int, ...]
    max_tokens: int
    sampling: SamplingParams = GREEDY
    stop: tuple[str, ...] = ()
    # vLLM's extra: run to max_tokens past the end-of-sequence token (fixed-length benchmarks, tests).
    ignore_eos: bool = False


@dataclass(frozen=True, slots=True)
class Delta:
    """New text of a request, final (never taken back)."""

    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """A request's last event: why it ended and the tokens it used; ``error`` set if the model failed."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


GenerationEvent = Delta | Finished
Emit = Callable[[GenerationEvent], None]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Prompts padded on the left to the longest, and their attention masks (1 real, 0 padding)."""
    width = max((len(p) for p in prompts), default=0)
    ids = [[pad_id] * (width - len(p)) + list(p) for p in prompts]
    masks = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    return ids, masks


def take_batch(waiting: deque[T], max_size: int, cancelled: Callable[[T], bool]) -> tuple[list[T], list[T]]:
    """Up to ``max_size`` waiting items in arrival order, and the cancelled ones dropped on the way."""
    batch: list[T] = []
    dropped: list[T] = []
    while waiting and len(batch) < max_size:
        item = waiting.popleft()
        (dropped if cancelled(item) else batch).append(item)
    return batch, dropped


class Handle:
    """A submitted request, which any thread may cancel."""

    def __init__(self, request_id: int) -> None:
        self.request_id = request_id
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Ask the engine to drop this request; it leaves its batch at the next step."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        """Whether ``cancel`` was called."""
        return self._cancelled.is_set()


@dataclass(slots=True)
class Row:
    """A request's state while it runs; touched by the engine thread only."""

    handle: Handle
    request: GenerationRequest
    emit: Emit
    detokenizer: IncrementalDetokenizer
    stops: StopMatcher
    generator: Any = None
    completion_tokens: int = 0
    finish: FinishReason | None = None

    def advance(self, token: int, eos_ids: frozenset[int]) -> FinishReason | None:
        """Take the chosen token: emit the text it makes final; the finish reason once it ends."""
        self.completion_tokens += 1
        if token in eos_ids and not self.request.ignore_eos:
            self._say(self.stops.push(self.detokenizer.flush()) + self.stops.flush())
            return "stop"
        self._say(self.stops.push(self.detokenizer.push(token)))
        if self.stops.stopped:
            return "stop"
        if self.completion_tokens >= self.request.max_tokens:
            # The last token may complete a stop string only now that held-back bytes are flushed.
            self._say(self.stops.push(self.detokenizer.flush()) + self.stops.flush())
            return "stop" if self.stops.stopped else "length"
        return None

    def end(self, reason: FinishReason, error: str | None = None) -> None:
        """Send the last event."""
        self.finish = reason
        self.emit(Finished(reason, len(self.request.prompt_ids), self.completion_tokens, error))

    def _say(self, text: str) -> None:
        if text:
            self.emit(Delta(text))


def run_batch(model: Any, rows: list[Row], *, pad_id: int, eos_ids: frozenset[int]) -> None:
    """Generate for ``rows`` together until each has ended (and sent its ``Finished``)."""
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    ids, masks = left_pad([row.request.prompt_ids for row in rows], pad_id)
    attention = torch.tensor(masks, device=device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        output = model(
            input_ids=torch.tensor(ids, device=device),
            attention_mask=attention,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        last = positions[:, -1]
        while True:
            # On the CPU: each row's generator draws there, so a seed means the same text on any device.
            logits = output.logits[:, -1, :].float().cpu()
            keep: list[int] = []
            tokens: list[int] = []
            for index, row in enumerate(rows):
                if row.handle.cancelled:
                    row.end("cancelled")
                    continue
                token = choose_token(logits[index], row.request.sampling, row.generator)
                reason = row.advance(token, eos_ids)
                if reason is not None:
                    row.end(reason)
                    continue
                keep.append(index)
                tokens.append(token)
            if not keep:
                return
            if len(keep) < len(rows):
                kept = torch.tensor(keep, device=device)
                cache.batch_select_indices(kept)
                attention, last = attention[kept], last[kept]
                rows = [rows[i] for i in keep]
            attention = torch.cat([attention, attention.new_ones((len(rows), 1))], dim=-1)
            last = last + 1
            output = model(
                input_ids=torch.tensor(tokens, device=device)[:, None],
                attention_mask=attention,
                position_ids=last[:, None],
                cache=cache,
                use_cache=True,
            )


def new_generator(seed: int | None) -> Any:
    """A CPU ``torch.Generator`` from ``seed`` (any int64), or from fresh entropy when None."""
    import torch

    generator = torch.Generator(device="cpu")
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed % 2**64)
    return generator

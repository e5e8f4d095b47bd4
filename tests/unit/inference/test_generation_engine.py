"""The generation engine on the real tiny LM: limits, stops, cancellation, batches and seeds."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshnode.inference.generation import (
    Completion,
    Delta,
    Finished,
    GenerationEngine,
    GenerationError,
    GenerationEvent,
    GenerationLimits,
    GenerationRequest,
)
from meshnode.inference.predictor import InvalidRequest
from meshnode.inference.sampling import SamplingParams
from meshnode.inference.tiny_lm import build_tiny_lm, load_causal_lm

GREEDY = SamplingParams(temperature=0.0)
WAIT_S = 60.0


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    return load_causal_lm(build_tiny_lm(tmp_path_factory.mktemp("tiny-lm")))


@pytest.fixture
def engine(model_and_tokenizer: tuple[Any, Any]) -> Iterator[GenerationEngine]:
    engine = GenerationEngine(*model_and_tokenizer, max_batch_size=16)
    yield engine
    engine.close()


def prompt(engine: GenerationEngine, text: str) -> tuple[int, ...]:
    return engine.encode_prompt(text)


def test_max_tokens_ends_with_length_and_counts_usage(engine: GenerationEngine) -> None:
    ids = prompt(engine, "Once upon a time")
    completion = engine.generate(GenerationRequest(ids, 12, GREEDY))
    assert completion.finish_reason == "length"
    assert completion.completion_tokens == 12
    assert completion.prompt_tokens == len(ids) == len("Once upon a time") + 1  # and bos
    assert len(completion.text) == 12  # one character per token


def test_a_stop_string_cuts_the_text_before_it(engine: GenerationEngine) -> None:
    ids = prompt(engine, "abc")
    full = engine.generate(GenerationRequest(ids, 40, GREEDY)).text
    stop = full[15:18]
    stopped = engine.generate(GenerationRequest(ids, 40, GREEDY, stop=(stop, "never here")))
    assert stopped.finish_reason == "stop"
    assert stopped.text == full[: full.index(stop)]
    assert stopped.completion_tokens == full.index(stop) + len(stop)


async def test_a_stream_yields_pieces_that_never_include_a_split_stop_string(
    engine: GenerationEngine,
) -> None:
    ids = prompt(engine, "xyz")
    full = engine.generate(GenerationRequest(ids, 30, GREEDY)).text
    stop = full[10:14]
    events = [event async for event in engine.stream(GenerationRequest(ids, 30, GREEDY, stop=(stop,)))]
    deltas = [event.text for event in events if isinstance(event, Delta)]
    assert len(deltas) == full.index(stop)  # one piece per character, as each became final
    assert "".join(deltas) == full[: full.index(stop)]
    assert events[-1] == Finished("stop", len(ids), full.index(stop) + len(stop))


def test_a_chat_prompt_uses_the_template(engine: GenerationEngine) -> None:
    ids = engine.encode_chat([{"role": "user", "content": "Hi"}])
    assert engine.tokenizer.decode(ids) == "<s>user: Hi\nassistant:"


def test_concurrent_requests_form_one_batch_and_match_their_unbatched_answers(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    engine = GenerationEngine(*model_and_tokenizer, max_batch_size=8, start=False)
    try:
        # Prompts of different lengths, so the batch needs left padding.
        requests = [GenerationRequest(prompt(engine, "q" * (i + 1)), 10 + i, GREEDY) for i in range(8)]
        results: list[list[GenerationEvent]] = [[] for _ in requests]
        for request, events in zip(requests, results, strict=True):
            engine.submit(request, events.append)
        engine.start()
        assert engine.wait_idle(WAIT_S)
        assert engine.batch_sizes == {8: 1}
        alone = [engine.generate(request) for request in requests]
        assert engine.batch_sizes == {8: 1, 1: 8}
        for events, unbatched in zip(results, alone, strict=True):
            text = "".join(event.text for event in events if isinstance(event, Delta))
            assert text == unbatched.text
            finished = Finished(unbatched.finish_reason, unbatched.prompt_tokens, unbatched.completion_tokens)
            assert events[-1] == finished
    finally:
        engine.close()


def test_requests_from_many_threads_are_all_answered(engine: GenerationEngine) -> None:
    requests = [GenerationRequest(prompt(engine, f"thread {i}"), 20, GREEDY) for i in range(24)]
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        completions = list(pool.map(engine.generate, requests))
    assert sum(size * count for size, count in engine.batch_sizes.items()) == 24
    assert max(engine.batch_sizes) > 1
    # Greedy answers do not depend on the company a request had.
    assert completions == [engine.generate(request) for request in requests]


def test_a_seeded_request_repeats_batched_or_not_and_seeds_differ(engine: GenerationEngine) -> None:
    ids = prompt(engine, "seed")

    def sampled(seed: int) -> GenerationRequest:
        return GenerationRequest(ids, 30, SamplingParams(temperature=1.0, top_p=0.9, seed=seed))

    first = engine.generate(sampled(1))
    assert engine.generate(sampled(1)) == first
    assert engine.generate(sampled(2)).text != first.text
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(engine.generate, [sampled(1), sampled(2), sampled(1), sampled(3)]))
    assert together[0] == together[2] == first


def test_a_cancelled_request_leaves_its_batch_at_the_next_step(engine: GenerationEngine) -> None:
    events: list[GenerationEvent] = []
    first_piece = threading.Event()
    ended = threading.Event()

    def emit(event: GenerationEvent) -> None:
        events.append(event)
        first_piece.set()
        if isinstance(event, Finished):
            ended.set()

    handle = engine.submit(GenerationRequest(prompt(engine, "long"), 2000, GREEDY), emit)
    neighbour = engine.submit(GenerationRequest(prompt(engine, "other"), 2000, GREEDY), lambda _: None)
    assert first_piece.wait(WAIT_S)
    handle.cancel()
    assert ended.wait(WAIT_S)
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.finish_reason == "cancelled"
    assert finished.completion_tokens < 2000
    neighbour.cancel()
    assert engine.wait_idle(WAIT_S)


async def test_cancelling_a_stream_task_cancels_its_request(engine: GenerationEngine) -> None:
    got_one = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.stream(GenerationRequest(prompt(engine, "go"), 2000, GREEDY)):
            got_one.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_one.wait(), WAIT_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(engine.wait_idle, WAIT_S)
    assert engine.in_flight == 0


@pytest.mark.parametrize(
    ("prompt_tokens", "max_tokens", "field"),
    [(0, 5, '"prompt"'), (33, 5, '"prompt" is 33 tokens'), (5, 0, '"max_tokens"'), (5, 101, '"max_tokens"')],
)
def test_requests_beyond_the_limits_are_refused_naming_the_field(
    model_and_tokenizer: tuple[Any, Any], prompt_tokens: int, max_tokens: int, field: str
) -> None:
    limits = GenerationLimits(max_prompt_tokens=32, max_tokens=100)
    engine = GenerationEngine(*model_and_tokenizer, limits=limits, start=False)
    with pytest.raises(InvalidRequest, match=field):
        engine.submit(GenerationRequest((5,) * prompt_tokens, max_tokens), lambda _: None)
    engine.close()


def test_a_completion_longer_than_the_context_is_refused(engine: GenerationEngine) -> None:
    assert engine.context_tokens == 2048
    with pytest.raises(InvalidRequest, match='"max_tokens" 2040 plus'):
        engine.check(GenerationRequest((5,) * 10, 2040))


def test_a_model_failure_fails_its_batch_and_the_engine_goes_on(engine: GenerationEngine) -> None:
    out_of_vocabulary = GenerationRequest((10_000,), 3, GREEDY)
    with pytest.raises(GenerationError, match="IndexError"):
        engine.generate(out_of_vocabulary)
    assert isinstance(engine.generate(GenerationRequest(prompt(engine, "ok"), 3, GREEDY)), Completion)


def test_close_cancels_what_is_still_waiting(model_and_tokenizer: tuple[Any, Any]) -> None:
    engine = GenerationEngine(*model_and_tokenizer, start=False)
    events: list[GenerationEvent] = []
    engine.submit(GenerationRequest(prompt(engine, "never run"), 5), events.append)
    engine.close()
    assert events == [Finished("cancelled", len(prompt(engine, "never run")), 0)]


def test_the_built_model_loads_from_its_folder(tmp_path: Path) -> None:
    model, tokenizer = load_causal_lm(build_tiny_lm(tmp_path / "lm", seed=1))
    engine = GenerationEngine(model, tokenizer)
    try:
        assert engine.generate(GenerationRequest(engine.encode_prompt("a"), 2)).completion_tokens == 2
    finally:
        engine.close()

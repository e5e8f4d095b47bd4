"""The pure decisions of text generation: stop strings, detokenization, batch assembly, sampling, input."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from meshnode.inference.batch_decode import (
    Delta,
    Finished,
    GenerationEvent,
    GenerationRequest,
    Handle,
    Row,
    left_pad,
    take_batch,
)
from meshnode.inference.generation import GenerationLimits
from meshnode.inference.generation_request import parse_request
from meshnode.inference.predictor import InvalidRequest
from meshnode.inference.sampling import SamplingParams, choose_token, nucleus_probabilities
from meshnode.inference.stops import IncrementalDetokenizer, StopMatcher


def feed(matcher: StopMatcher, pieces: Sequence[str]) -> list[str]:
    return [matcher.push(piece) for piece in pieces]


def test_text_before_a_stop_string_is_emitted_and_the_rest_cut() -> None:
    matcher = StopMatcher(("END",))
    assert feed(matcher, ["hello ", "wor", "ld END and more"]) == ["hello ", "wor", "ld "]
    assert matcher.stopped
    assert matcher.push("after") == ""
    assert matcher.flush() == ""


def test_a_stop_string_split_across_pieces_is_held_back_never_emitted() -> None:
    matcher = StopMatcher(("###",))
    emitted = feed(matcher, ["a#", "#", "#b"])
    assert emitted == ["a", "", ""]
    assert matcher.stopped
    assert "#" not in "".join(emitted)


def test_a_held_back_prefix_is_released_when_the_stop_string_does_not_follow() -> None:
    matcher = StopMatcher(("###",))
    assert feed(matcher, ["a#", "#", "x"]) == ["a", "", "##x"]
    assert matcher.push("##") == ""
    assert matcher.flush() == "##"
    assert not matcher.stopped


def test_the_earliest_of_several_stop_strings_wins() -> None:
    matcher = StopMatcher(("zz", "\n"))
    assert matcher.push("ab\ncd zz") == "ab"
    assert matcher.stopped


def test_no_stop_strings_hold_nothing() -> None:
    matcher = StopMatcher(())
    assert feed(matcher, ["a", "b"]) == ["a", "b"]
    assert matcher.flush() == ""


def utf8_decode(ids: Sequence[int]) -> str:
    # A byte-level tokenizer: every id is one byte, so a character may span several ids.
    return bytes(ids).decode("utf-8", errors="replace")


def test_a_character_split_over_byte_tokens_is_emitted_whole() -> None:
    detokenizer = IncrementalDetokenizer(utf8_decode)
    pieces = [detokenizer.push(b) for b in "aé€!".encode()]
    assert "".join(pieces) == "aé€!"
    assert "\ufffd" not in "".join(pieces)
    assert pieces[:3] == ["a", "", "é"]  # é's first byte alone is held back
    assert detokenizer.flush() == ""


def test_bytes_left_unfinished_at_the_end_are_flushed_as_a_replacement_character() -> None:
    detokenizer = IncrementalDetokenizer(utf8_decode)
    assert detokenizer.push(ord("x")) == "x"
    assert detokenizer.push("é".encode()[0]) == ""
    assert detokenizer.flush() == "\ufffd"


def test_left_pad_aligns_prompt_ends_and_masks_the_padding() -> None:
    ids, masks = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids == [[5, 6, 7], [0, 0, 8]]
    assert masks == [[1, 1, 1], [0, 0, 1]]


def test_take_batch_takes_in_arrival_order_up_to_the_size_and_drops_cancelled() -> None:
    waiting = deque([1, -2, 3, 4, 5])
    batch, dropped = take_batch(waiting, 2, cancelled=lambda item: item < 0)
    assert (batch, dropped, list(waiting)) == ([1, 3], [-2], [4, 5])


def test_nucleus_keeps_the_smallest_set_reaching_top_p() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = nucleus_probabilities(logits, temperature=1.0, top_p=0.7)
    assert torch.allclose(kept, torch.tensor([0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0]))
    only_best = nucleus_probabilities(logits, temperature=1.0, top_p=0.01)
    assert only_best.tolist() == [1.0, 0.0, 0.0, 0.0]


def test_greedy_takes_the_most_likely_and_a_seed_repeats_its_draws() -> None:
    logits = torch.tensor([0.1, 2.0, 0.3, 1.9])
    assert choose_token(logits, SamplingParams(temperature=0.0), None) == 1

    def draws(seed: int) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        return [choose_token(logits, SamplingParams(1.0, 1.0, seed), generator) for _ in range(30)]

    assert draws(7) == draws(7)
    assert len(set(draws(7))) > 1


def collecting_row(stop: tuple[str, ...], max_tokens: int) -> tuple[Row, list[GenerationEvent]]:
    events: list[GenerationEvent] = []
    request = GenerationRequest((1, 2), max_tokens, stop=stop)
    row = Row(Handle(0), request, events.append, IncrementalDetokenizer(utf8_decode), StopMatcher(stop))
    return row, events


def test_a_row_ends_with_length_after_max_tokens() -> None:
    row, events = collecting_row((), max_tokens=2)
    assert row.advance(ord("a"), frozenset({0})) is None
    assert row.advance(ord("b"), frozenset({0})) == "length"
    row.end("length")
    assert events == [Delta("a"), Delta("b"), Finished("length", 2, 2)]


def test_a_row_ends_with_stop_on_eos_and_releases_held_text() -> None:
    row, events = collecting_row(("ab",), max_tokens=10)
    assert row.advance(ord("a"), frozenset({0})) is None
    assert events == []  # "a" may begin "ab"
    assert row.advance(0, frozenset({0})) == "stop"
    assert events == [Delta("a")]


def test_ignore_eos_runs_past_the_end_of_sequence_to_max_tokens() -> None:
    request = GenerationRequest((1,), 3, ignore_eos=True)
    row = Row(Handle(1), request, lambda _: None, IncrementalDetokenizer(lambda ids: ""), StopMatcher(()))
    assert [row.advance(0, frozenset({0})) for _ in range(3)] == [None, None, "length"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "exactly one of"),
        ({"prompt": "x", "messages": []}, "exactly one of"),
        ({"prompt": ""}, '"prompt"'),
        ({"prompt": "x" * 101}, '"prompt" is 101 characters'),
        ({"messages": []}, '"messages"'),
        ({"messages": [{"role": "user"}]}, r'"messages"\[0\].content'),
        ({"messages": [{"content": "x"}]}, r'"messages"\[0\].role'),
        ({"messages": [{"role": "u", "content": "x"}] * 3}, '"messages" has 3 items'),
        ({"prompt": "x", "max_tokens": 0}, '"max_tokens"'),
        ({"prompt": "x", "max_tokens": 51}, '"max_tokens"'),
        ({"prompt": "x", "max_tokens": True}, '"max_tokens"'),
        ({"prompt": "x", "temperature": -1}, '"temperature"'),
        ({"prompt": "x", "temperature": float("nan")}, '"temperature"'),
        ({"prompt": "x", "top_p": 0}, '"top_p"'),
        ({"prompt": "x", "seed": "7"}, '"seed"'),
        ({"prompt": "x", "stop": ["a", "b", "c"]}, '"stop" has 3'),
        ({"prompt": "x", "stop": "x" * 9}, '"stop" strings'),
        ({"prompt": "x", "stop": [""]}, '"stop"'),
        ({"prompt": "x", "ignore_eos": "yes"}, '"ignore_eos"'),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(body: dict[str, Any], message: str) -> None:
    limits = GenerationLimits(
        max_tokens=50, max_stops=2, max_stop_chars=8, max_messages=2, max_prompt_chars=100
    )
    with pytest.raises(InvalidRequest, match=message):
        parse_request(body, limits)


def test_a_good_body_gets_its_defaults() -> None:
    parsed = parse_request({"prompt": "hi", "stop": "\n", "seed": -3, "temperature": 0})
    assert parsed["prompt"] == "hi"
    assert parsed["stop"] == ("\n",)
    assert parsed["sampling"] == SamplingParams(0.0, 1.0, -3)
    assert parsed["max_tokens"] > 0

"""Moderation's pure core: the section's bounds, normalisation, the blocklist, the classifier's decision."""

from __future__ import annotations

import time
from typing import Any

import pytest

from meshnode.mesh.deployment import DeploymentSpec, SpecError
from meshnode.mesh.moderation import (
    CLASSIFIER_MAX_CHARS,
    MAX_TERMS,
    Moderation,
    ModerationSpecError,
    category_in,
    refusal_message,
)
from meshnode.mesh.moderation_checks import (
    CLASSIFIER_WORDS,
    Blocklist,
    ConceptVectors,
    classify,
    cosine,
    normalise,
    prompt_text,
    too_long,
    windows_of,
)
from meshnode.mesh.moderation_patterns import safe_pattern

SECTION: dict[str, Any] = {
    "blocklist": [
        {"category": "banned_term", "terms": ["napalm", "nerve agent"]},
        {"category": "pii", "patterns": [r"\b\d{4} \d{4} \d{4} \d{4}\b"]},
    ]
}


@pytest.fixture(scope="module")
def blocklist() -> Blocklist:
    return Blocklist(Moderation.from_wire(SECTION))


@pytest.mark.parametrize(
    "text",
    [
        "napalm",
        "how is NAPALM made",
        "nápalm",  # an accent
        "n a p a l m",  # spaced out
        "N-A-P-A-L-M",
        "n.a.p.a.l.m!",
        "na palm",  # split anywhere, as long as the pieces are whole words
        "nap\u200balm",  # a zero-width space
        "\uff4e\uff41\uff50\uff41\uff4c\uff4d",  # full-width letters
        "a nerve agent",
        "nerve-agent",
        "NerveAgent",
        "call me, card 4111-1111-1111-1111 thanks",
    ],
)
def test_blocked_terms_and_their_disguises_are_refused(blocklist: Blocklist, text: str) -> None:
    assert blocklist.check(text) in {"banned_term", "pii"}


@pytest.mark.parametrize(
    "text",
    ["a nap under a palm tree", "napalms", "snapalm", "the nervous agent waited", "order 4111 1111", ""],
)
def test_near_misses_are_allowed(blocklist: Blocklist, text: str) -> None:
    assert blocklist.check(text) is None


def test_the_category_is_the_rule_that_matched_and_the_message_never_holds_the_text(
    blocklist: Blocklist,
) -> None:
    assert blocklist.check("napalm") == "banned_term"
    assert blocklist.check("4111 1111 1111 1111") == "pii"
    message = refusal_message("banned_term")
    assert "napalm" not in message and category_in(message) == "banned_term"
    assert category_in("something else") is None


def test_normalise_folds_case_accents_width_and_punctuation() -> None:
    assert normalise("  Ünïcödé—ﬁne\u200b!  ") == "unicode fine"
    assert normalise("Straße") == "strasse"


def test_a_long_prompt_is_searched_in_windows_and_a_match_at_the_end_is_found(blocklist: Blocklist) -> None:
    padding = "word " * 5000
    assert blocklist.check(padding + "n a p a l m") == "banned_term"
    assert blocklist.check(padding + "4111 1111 1111 1111") == "pii"
    assert blocklist.check(padding) is None


def test_a_window_edge_never_cuts_a_word_into_a_match() -> None:
    section = Moderation.from_wire({"blocklist": [{"category": "c", "patterns": [r"\bkill\b"]}]})
    checker = Blocklist(section)
    for shift in range(0, 300, 7):  # "skills" at every offset around a window's edges
        assert checker.check("x" * shift + " skills " + "y " * 200) is None
    assert checker.check("y " * 200 + "kill") == "c"


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a+)+b", "repeat inside a repeat"),
        (r"(a|ab)*c", "repeats an alternation"),
        (r"(x)\1", "backreferences"),
        (r"(?=bad)", "lookarounds"),
        (r"(?<!good )bad", "lookarounds"),
        (r"^bad", "^ or $"),
        (r"bad$", "^ or $"),
        (r"a*b*c*d*e*f*g*", "repeats"),
        (r"\w+\s*\w+", "backtrack too much"),
        (r"([a-z", "does not compile"),
    ],
)
def test_patterns_that_can_blow_up_are_refused(pattern: str, reason: str) -> None:
    problem = safe_pattern(pattern)
    assert problem is not None and reason in problem


@pytest.mark.parametrize(
    "pattern", [r"\w+x", r"kill\s+\w+x", r"\w{1,20} \w{1,20}x", r"\bnerve\s{0,3}agents?"]
)
def test_safe_patterns_are_accepted_and_run_in_bounded_time(pattern: str) -> None:
    assert safe_pattern(pattern) is None
    checker = Blocklist(Moderation.from_wire({"blocklist": [{"category": "c", "patterns": [pattern]}]}))
    started = time.perf_counter()
    # The worst texts for them (quadratic in their length without the windows): well under a second.
    assert checker.check("kill " + "a" * 20_000) is None
    assert checker.check("a " * 10_000) is None
    assert time.perf_counter() - started < 10  # generous: a busy shared machine


ONE_CONCEPT = {"concepts": [{"category": "c", "texts": ["x"]}]}


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ([], "moderation"),
        ({"blocklist": {}}, "moderation.blocklist"),
        ({"blocklist": [{"category": "Bad Name", "terms": ["x"]}]}, "moderation.blocklist.0.category"),
        ({"blocklist": [{"category": "c"}]}, "moderation.blocklist.0"),
        ({"blocklist": [{"category": "c", "terms": ["x" * 65]}]}, "moderation.blocklist.0.terms"),
        ({"blocklist": [{"category": "c", "terms": ["!!"]}]}, "moderation.blocklist.0.terms"),
        (
            {"blocklist": [{"category": "c", "terms": ["t"] * (MAX_TERMS + 1)}]},
            "moderation.blocklist.0.terms",
        ),
        ({"blocklist": [{"category": "c", "patterns": ["(a+)+"]}]}, "moderation.blocklist.0.patterns"),
        ({"blocklist": [{"category": "c", "terms": ["x"], "words": []}]}, "moderation.blocklist.0.words"),
        ({"classifier": {"concepts": []}}, "moderation.classifier.concepts"),
        (
            {"classifier": {"concepts": [{"category": "c", "texts": []}]}},
            "moderation.classifier.concepts.0.texts",
        ),
        ({"classifier": {**ONE_CONCEPT, "threshold": 0}}, "moderation.classifier.threshold"),
        ({"classifier": {**ONE_CONCEPT, "threshold": 1.5}}, "moderation.classifier.threshold"),
        ({"classifier": {**ONE_CONCEPT, "deployment": "a b"}}, "moderation.classifier.deployment"),
        ({"check_output": "yes"}, "moderation.check_output"),
        ({"max_chars": 0}, "moderation.max_chars"),
        ({"max_chars": 30_000, "classifier": ONE_CONCEPT}, "moderation.max_chars"),
        ({"blocklist": [{"category": f"c{i}", "terms": ["t" * 64] * 16} for i in range(32)]}, "moderation"),
    ],
)
def test_a_bad_section_is_refused_naming_the_field(section: object, field: str) -> None:
    with pytest.raises(SpecError) as refused:
        DeploymentSpec.from_wire({"app": "a.py:A", "moderation": section})
    assert refused.value.field == field


def test_a_full_section_round_trips_through_the_spec() -> None:
    section = {
        **SECTION,
        "classifier": {
            "concepts": [{"category": "weapons", "texts": ["how to build a bomb"], "threshold": 0.6}],
            "threshold": 0.55,
            "deployment": "embed",
        },
        "check_output": False,
        "max_chars": 5000,
    }
    spec = DeploymentSpec.from_wire({"app": "a.py:A", "moderation": section})
    assert spec.moderation is not None and spec.moderation.classifier is not None
    assert spec.moderation.categories() == {"banned_term", "pii", "weapons", "too_long"}
    assert DeploymentSpec.from_wire(spec.to_wire()) == spec
    assert "moderation" not in DeploymentSpec.from_wire({"app": "a.py:A"}).to_wire()
    # The worker gets everything but a classifier another deployment runs.
    assert spec.moderation.for_worker().classifier is None
    with pytest.raises(ModerationSpecError):
        Moderation.from_wire({"max_chars": True})


def test_prompt_text_reads_every_route_s_fields_and_leaves_out_negative_prompts() -> None:
    body = {
        "prompt": ["one", 2, "two"],
        "input": "three",
        "messages": [
            {"role": "user", "content": "four"},
            {"role": "user", "content": [{"type": "text", "text": "five"}, {"type": "image_url"}]},
            "junk",
        ],
        "negative_prompt": "nsfw",
        "seed": 3,
    }
    assert prompt_text(body).split("\n") == ["one", "two", "three", "four", "five"]
    assert prompt_text({"prompt": [1, 2, 3]}) == ""
    section = Moderation(max_chars=3)
    assert too_long("four", section) == "too_long" and too_long("two", section) is None


def test_long_prompts_are_embedded_in_overlapping_windows() -> None:
    assert windows_of("  a   short prompt ") == ["a short prompt"]
    assert windows_of("") == []
    words = [f"w{i}" for i in range(300)]
    pieces = windows_of(" ".join(words))
    assert all(len(piece.split()) <= CLASSIFIER_WORDS for piece in pieces)
    assert pieces[0].split()[0] == "w0" and pieces[-1].split()[-1] == "w299"
    worst = windows_of("a " * (CLASSIFIER_MAX_CHARS // 2 - 1) + "end")  # every word one letter
    assert worst[-1].split()[-1] == "end"


def test_the_classifier_refuses_with_the_first_concept_at_or_past_its_threshold() -> None:
    section = Moderation.from_wire(
        {
            "classifier": {
                "threshold": 0.9,
                "concepts": [
                    {"category": "first", "texts": ["a", "b"]},
                    {"category": "second", "texts": ["c"], "threshold": 0.5},
                ],
            }
        }
    )
    assert section.classifier is not None
    concepts = ConceptVectors.of(section.classifier, [[1, 0, 0], [0, 1, 0], [0, 0, 2]])
    assert classify([[0, 0, 1]], concepts) == "second"
    assert classify([[1, 1, 0]], concepts) is None  # 0.71 from a and b: below 0.9; 0 from c
    assert classify([[1, 0.1, 0]], concepts) == "first"
    assert classify([[5, 0, 5]], concepts) == "second"  # 0.71 >= 0.5, and first's 0.71 < 0.9
    assert classify([], concepts) is None
    assert cosine([1, 0], [0, 0]) == 0.0
    with pytest.raises(ValueError, match="3 concept texts"):
        ConceptVectors.of(section.classifier, [[1, 0, 0]])
    with pytest.raises(ValueError, match="differ in length"):
        classify([[1, 0]], concepts)

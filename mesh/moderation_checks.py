r"""The moderation checks as pure functions: which text a request holds, and whether it is refused.

- ``prompt_text(body)``: the text of a request that is checked, from the fields every route's body
  carries: ``prompt``, ``text``, ``input``, ``inputs``, ``query`` (a string or a list of strings)
  and ``messages`` (OpenAI chat: each ``content``, a string or a list of ``{"type": "text",
  "text"}`` parts). ``negative_prompt`` is left out on purpose: it names what an image must not
  show, so it holds exactly the words a blocklist refuses. Token ids are not text and are not read.
- ``normalise(text)``: NFKC (full-width and compatibility forms to plain ones), case folding,
  accents and other combining marks dropped (``bád`` reads ``bad``), zero-width and other format
  characters dropped (``b\u200bad`` reads ``bad``), every run of characters that are not letters or
  digits as one space.
- ``Blocklist.check(text)``: a term matches whole words only, and also when it is split by spaces or
  punctuation anywhere, provided the pieces are whole words: ``b a d``, ``B-A-D``, ``ba d`` and
  ``bad`` match ``bad``; ``badge``, ``abad`` and ``bads`` do not (list plurals, or use a pattern).
  Patterns are searched in the normalised text in windows of ``WINDOW`` characters that overlap by
  half, each search bounded to its window (``pos``/``endpos``, so ``\b`` still sees the characters
  around it): every match up to ``WINDOW // 2`` characters is found, and a search's cost is bounded
  per window whatever the pattern (``moderation.safe_pattern`` refuses the ones that blow up).
- ``classify(prompts, concepts)``: cosine similarity of each prompt embedding with each concept
  text's; the first concept (in the spec's order) whose best similarity reaches its threshold gives
  the category. ``windows_of(text)`` cuts a long prompt into pieces of ``CLASSIFIER_WORDS`` words
  (overlapping), each embedded on its own: all-MiniLM-L6-v2 reads 256 word pieces and drops the
  rest, so a long prompt would otherwise hide its end.

Every function returns a category or None, never the text that matched: a refusal must not echo
what it refused (a client probing the list learns only the category).
"""

from __future__ import annotations

import math
import operator
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .moderation import CLASSIFIER_MAX_CHARS, TOO_LONG, Classifier, Moderation

__all__ = [
    "Blocklist",
    "ConceptVectors",
    "classify",
    "concept_texts",
    "cosine",
    "normalise",
    "prompt_text",
    "too_long",
    "unit",
    "windows_of",
]

TEXT_FIELDS = ("prompt", "text", "input", "inputs", "query")
MAX_LIST_ITEMS = 4096  # list items read per field: more than any route's body holds
WINDOW = 256
WORD_SLACK = 64  # a window goes on this far to end at a word's end
CLASSIFIER_WORDS = 96
CLASSIFIER_STEP = 64
# Pieces a classifier embeds for one prompt: enough for CLASSIFIER_MAX_CHARS of one-letter words.
MAX_WINDOWS = CLASSIFIER_MAX_CHARS // 2 // CLASSIFIER_STEP + 1


def prompt_text(body: dict[str, Any]) -> str:
    """The request's text to check, its parts joined by newlines ("" when it has none)."""
    parts: list[str] = []
    for name in TEXT_FIELDS:
        _strings_of(body.get(name), parts)
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages[:MAX_LIST_ITEMS]:
            if isinstance(message, dict):
                content = message.get("content")
                if isinstance(content, list):
                    content = [p.get("text") for p in content[:MAX_LIST_ITEMS] if isinstance(p, dict)]
                _strings_of(content, parts)
    return "\n".join(parts)


def _strings_of(value: object, parts: list[str]) -> None:
    if isinstance(value, str):
        parts.append(value)
    elif isinstance(value, list):
        parts.extend(item for item in value[:MAX_LIST_ITEMS] if isinstance(item, str))


def too_long(text: str, section: Moderation) -> str | None:
    """``too_long`` when `text` is over the section's ``max_chars`` (it is not checked then)."""
    return TOO_LONG if len(text) > section.max_chars else None


def normalise(text: str) -> str:
    """`text` as the blocklist reads it (see the module docstring)."""
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    kept = []
    for char in folded:
        kind = unicodedata.category(char)
        if kind.startswith("M") or kind == "Cf":  # combining marks (accents), zero-width characters
            continue
        kept.append(char if char.isalnum() else " ")
    return " ".join("".join(kept).split())


@dataclass(frozen=True)
class _Rule:
    category: str
    terms: tuple[str, ...]  # normalised, spaces removed
    patterns: tuple[re.Pattern[str], ...]


class Blocklist:
    """A section's blocklist, compiled once: ``check`` is called per request."""

    def __init__(self, section: Moderation) -> None:
        self._rules = tuple(
            _Rule(
                rule.category,
                tuple(normalise(term).replace(" ", "") for term in rule.terms),
                tuple(re.compile(pattern, re.IGNORECASE) for pattern in rule.patterns),
            )
            for rule in section.blocklist
        )

    def check(self, text: str) -> str | None:
        """The category of the first rule that matches `text` (raw, normalised here); None if none."""
        if not self._rules:
            return None
        normal = normalise(text)
        words = normal.split(" ") if normal else []
        squashed = "".join(words)
        edges = {0}
        offset = 0
        for word in words:
            offset += len(word)
            edges.add(offset)
        for rule in self._rules:
            if any(_whole_words(squashed, edges, term) for term in rule.terms):
                return rule.category
            if any(_search(pattern, normal) for pattern in rule.patterns):
                return rule.category
        return None


def _whole_words(squashed: str, edges: set[int], term: str) -> bool:
    """Whether `term` is in `squashed` (the words run together) from one word's start to one's end."""
    start = squashed.find(term)
    while start != -1:
        if start in edges and start + len(term) in edges:
            return True
        start = squashed.find(term, start + 1)
    return False


def _search(pattern: re.Pattern[str], text: str) -> bool:
    step = WINDOW // 2
    for start in range(0, max(1, len(text) - step), step):
        # The window ends at a word's end (within WORD_SLACK), so "kill\b" never matches "kills".
        end = text.find(" ", start + WINDOW, start + WINDOW + WORD_SLACK)
        end = min(len(text), start + WINDOW + WORD_SLACK) if end == -1 else end
        if pattern.search(text, start, end) is not None:
            return True
    return False


def windows_of(text: str) -> list[str]:
    """`text` in overlapping pieces of at most CLASSIFIER_WORDS words (one piece when it is short)."""
    words = text.split()
    if len(words) <= CLASSIFIER_WORDS:
        return [" ".join(words)] if words else []
    starts = [*range(0, len(words) - CLASSIFIER_WORDS, CLASSIFIER_STEP), len(words) - CLASSIFIER_WORDS]
    return [" ".join(words[start : start + CLASSIFIER_WORDS]) for start in starts[:MAX_WINDOWS]]


@dataclass(frozen=True)
class ConceptVectors:
    """A classifier's concepts with one embedding per concept text, in the spec's order (unit length)."""

    classifier: Classifier
    vectors: tuple[tuple[tuple[float, ...], ...], ...]  # per concept, per text

    @classmethod
    def of(cls, classifier: Classifier, flat: Sequence[Sequence[float]]) -> ConceptVectors:
        """From the embeddings of every concept text in order (``concept_texts``), made unit length."""
        texts = concept_texts(classifier)
        if len(flat) != len(texts):
            raise ValueError(f"{len(flat)} embeddings for {len(texts)} concept texts")
        units = iter([unit(vector) for vector in flat])
        return cls(classifier, tuple(tuple(next(units) for _ in c.texts) for c in classifier.concepts))


def concept_texts(classifier: Classifier) -> list[str]:
    """Every concept text, in order: what is embedded once per classifier."""
    return [text for concept in classifier.concepts for text in concept.texts]


def unit(vector: Sequence[float]) -> tuple[float, ...]:
    """`vector` scaled to length 1 (all zeros stays all zeros)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return tuple(float(x) / norm for x in vector) if norm > 0 else tuple(0.0 for _ in vector)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0 when either is all zeros)."""
    return sum(map(operator.mul, unit(a), unit(b)))


def classify(prompts: Sequence[Sequence[float]], concepts: ConceptVectors) -> str | None:
    """The category of the first concept a prompt embedding is close enough to; None if none is."""
    classifier = concepts.classifier
    units = [unit(prompt) for prompt in prompts]
    if len({len(v) for vectors in concepts.vectors for v in vectors} | {len(p) for p in units}) > 1:
        raise ValueError("prompt and concept embeddings differ in length")
    for concept, vectors in zip(classifier.concepts, concepts.vectors, strict=True):
        threshold = classifier.threshold_of(concept)
        # Unit vectors: the dot product is the cosine (sum of map: the fast pure-Python loop).
        if any(sum(map(operator.mul, p, v)) >= threshold for p in units for v in vectors):
            return concept.category
    return None

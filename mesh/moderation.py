r"""A deployment's ``moderation`` section: what its prompts and outputs are checked against.

Three checks, each optional, each refusing with a *category* (a short name the spec gives, such as
``weapons``), never with the text that matched:

- ``blocklist``: rules of ``terms`` and ``patterns`` (regular expressions), each rule with its
  category. Both see the prompt normalised (``moderation_checks.normalise``: NFKC, case folded,
  accents and zero-width characters dropped, punctuation as spaces), so ``BAD``, ``bád``, ``b a d``,
  ``b-a-d`` and ``b\u200bad`` all match the term ``bad``, while ``badge`` does not (terms match whole
  words, see ``moderation_checks``).
- ``classifier``: ``concepts`` (a category and a few texts describing it); a prompt whose embedding
  is at least ``threshold`` (cosine similarity) from any concept text is refused with that concept's
  category. The embeddings come from the packaged all-MiniLM-L6-v2 in the replica's own worker, or
  from ``deployment``, another deployment of the mesh that answers ``{"input": [...]}`` with
  embeddings (``apps/embeddings.py``).
- ``check_output``: the app's ``check_output(result)`` hook (``inference/predictor.py``) looks at
  every answer before it leaves the worker; an app without the hook passes everything.

Bounds (a spec is gossiped to every node and carried in each moderated call): at most 32 rules,
512 terms of 64 characters, 64 patterns of 256 characters, 32 concepts of 8 texts of 256 characters,
and 32,000 characters in all; categories are 1-32 of ``a-z 0-9 _`` (they become metric labels).

Patterns are Python regular expressions; one that could backtrack without bound is refused when
the spec is declared (``moderation_patterns.safe_pattern`` says which and why), the text is searched
in bounded windows (``moderation_checks``), and the checks run in the replica's worker process, not
in the agent, so even a slow search delays one replica, never the node.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .moderation_patterns import safe_pattern

__all__ = [
    "BlockRule",
    "Classifier",
    "Concept",
    "Moderation",
    "ModerationSpecError",
    "category_in",
    "check_category",
    "refusal_message",
]

CATEGORY = re.compile(r"[a-z0-9][a-z0-9_]{0,31}")
# Refusals the mesh itself makes, whatever the spec says.
TOO_LONG = "too_long"  # more text than ``max_chars``: it cannot be checked within bounds
OUTPUT = "output"  # an app's check_output named no category, or one that is not a valid name
MAX_RULES = 32
MAX_TERMS = 512
MAX_TERM_CHARS = 64
MAX_PATTERNS = 64
MAX_PATTERN_CHARS = 256
MAX_CONCEPTS = 32
MAX_CONCEPT_TEXTS = 8
MAX_CONCEPT_CHARS = 256
MAX_SECTION_CHARS = 32_000
# Text checked per request by default, and at most: what a prompt is, not a document.
DEFAULT_MAX_CHARS = 20_000
MAX_MAX_CHARS = 200_000
# With a classifier: every window of the prompt is embedded (``moderation_checks.windows_of``).
CLASSIFIER_MAX_CHARS = 20_000
DEFAULT_THRESHOLD = 0.5
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # a deployment's name, as mesh/deployment.py


class ModerationSpecError(ValueError):
    """A bad ``moderation`` section: ``field`` is dotted from the section (``blocklist.0.terms``)."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True)
class BlockRule:
    """Terms and patterns that refuse a prompt with `category`."""

    category: str
    terms: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Concept:
    """A category and texts that describe it; `threshold` None takes the classifier's."""

    category: str
    texts: tuple[str, ...]
    threshold: float | None = None


@dataclass(frozen=True)
class Classifier:
    """Concepts a prompt's embedding is compared with; `deployment` None: the packaged MiniLM."""

    concepts: tuple[Concept, ...]
    threshold: float = DEFAULT_THRESHOLD
    deployment: str | None = None

    def threshold_of(self, concept: Concept) -> float:
        """The similarity at which `concept` refuses."""
        return self.threshold if concept.threshold is None else concept.threshold


@dataclass(frozen=True)
class Moderation:
    """A deployment's moderation section (see the module docstring)."""

    blocklist: tuple[BlockRule, ...] = ()
    classifier: Classifier | None = None
    check_output: bool = True
    max_chars: int = DEFAULT_MAX_CHARS

    @property
    def checks_prompts(self) -> bool:
        """Whether any check reads the prompt."""
        return bool(self.blocklist) or self.classifier is not None

    def categories(self) -> frozenset[str]:
        """Every category a prompt check of this section can refuse with."""
        found = {rule.category for rule in self.blocklist} | {TOO_LONG}
        if self.classifier is not None:
            found |= {concept.category for concept in self.classifier.concepts}
        return frozenset(found)

    def for_worker(self) -> Moderation:
        """What the replica's worker checks: everything but a classifier another deployment runs."""
        if self.classifier is not None and self.classifier.deployment is not None:
            return Moderation(self.blocklist, None, self.check_output, self.max_chars)
        return self

    def to_wire(self) -> dict[str, Any]:
        """A JSON- and msgpack-ready dict; ``from_wire`` reads it back to an equal section."""
        wire: dict[str, Any] = {"check_output": self.check_output, "max_chars": self.max_chars}
        if self.blocklist:
            wire["blocklist"] = [
                {"category": r.category, "terms": list(r.terms), "patterns": list(r.patterns)}
                for r in self.blocklist
            ]
        if self.classifier is not None:
            concepts = []
            for concept in self.classifier.concepts:
                one: dict[str, Any] = {"category": concept.category, "texts": list(concept.texts)}
                if concept.threshold is not None:
                    one["threshold"] = concept.threshold
                concepts.append(one)
            classifier: dict[str, Any] = {"concepts": concepts, "threshold": self.classifier.threshold}
            if self.classifier.deployment is not None:
                classifier["deployment"] = self.classifier.deployment
            wire["classifier"] = classifier
        return wire

    @classmethod
    def from_wire(cls, raw: object) -> Moderation:
        """Validate a section strictly; raise ModerationSpecError naming the first bad field."""
        body = _map(raw, "", {"blocklist", "classifier", "check_output", "max_chars"})
        check_output = body.get("check_output", True)
        if not isinstance(check_output, bool):
            raise ModerationSpecError("check_output", "must be true or false")
        max_chars = body.get("max_chars", DEFAULT_MAX_CHARS)
        if type(max_chars) is not int or not 1 <= max_chars <= MAX_MAX_CHARS:
            raise ModerationSpecError("max_chars", f"must be an integer from 1 to {MAX_MAX_CHARS}")
        section = cls(
            blocklist=_blocklist(body.get("blocklist", [])),
            classifier=_classifier(body.get("classifier")),
            check_output=check_output,
            max_chars=max_chars,
        )
        if section.classifier is not None and max_chars > CLASSIFIER_MAX_CHARS:
            raise ModerationSpecError("max_chars", f"at most {CLASSIFIER_MAX_CHARS} with a classifier")
        size = sum(len(text) for text in _strings(section))
        if size > MAX_SECTION_CHARS:
            raise ModerationSpecError(
                "", f"{size} characters of terms, patterns and texts; at most {MAX_SECTION_CHARS}"
            )
        return section


def refusal_message(category: str) -> str:
    """What a refusal says, wherever it is made: the category, never the text (``category_in`` reads it)."""
    return f"refused by the deployment's moderation (category: {category})"


def category_in(message: str) -> str | None:
    """The category a ``refusal_message`` names; None for any other text."""
    found = _CATEGORY_IN_MESSAGE.search(message)
    return found.group(1) if found else None


_CATEGORY_IN_MESSAGE = re.compile(r"\(category: ([a-z0-9][a-z0-9_]{0,31})\)$")


def check_category(raw: object, where: str) -> str:
    """A valid category name, or ModerationSpecError."""
    if not isinstance(raw, str) or not CATEGORY.fullmatch(raw):
        raise ModerationSpecError(where, "must be 1-32 of a-z 0-9 _, starting with a letter or digit")
    return raw


def _strings(section: Moderation) -> list[str]:
    found = [t for rule in section.blocklist for t in (*rule.terms, *rule.patterns)]
    if section.classifier is not None:
        found += [t for concept in section.classifier.concepts for t in concept.texts]
    return found


def _blocklist(raw: object) -> tuple[BlockRule, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_RULES:
        raise ModerationSpecError("blocklist", f"must be a list of at most {MAX_RULES} rules")
    rules = []
    terms_seen = patterns_seen = 0
    for index, item in enumerate(raw):
        where = f"blocklist.{index}"
        body = _map(item, where, {"category", "terms", "patterns"})
        category = check_category(body.get("category"), f"{where}.category")
        terms = _texts(body.get("terms", []), f"{where}.terms", MAX_TERMS, MAX_TERM_CHARS)
        for term in terms:
            if not any(ch.isalnum() for ch in term):
                raise ModerationSpecError(f"{where}.terms", f"{term!r} has no letter or digit to match")
        patterns = _texts(body.get("patterns", []), f"{where}.patterns", MAX_PATTERNS, MAX_PATTERN_CHARS)
        for pattern in patterns:
            problem = safe_pattern(pattern)
            if problem is not None:
                raise ModerationSpecError(f"{where}.patterns", f"{pattern!r} {problem}")
        if not terms and not patterns:
            raise ModerationSpecError(where, "needs terms or patterns")
        terms_seen += len(terms)
        patterns_seen += len(patterns)
        if terms_seen > MAX_TERMS or patterns_seen > MAX_PATTERNS:
            raise ModerationSpecError(
                "blocklist", f"at most {MAX_TERMS} terms and {MAX_PATTERNS} patterns in all"
            )
        rules.append(BlockRule(category, terms, patterns))
    return tuple(rules)


def _classifier(raw: object) -> Classifier | None:
    if raw is None:
        return None
    body = _map(raw, "classifier", {"concepts", "threshold", "deployment"})
    threshold = _threshold(body.get("threshold", DEFAULT_THRESHOLD), "classifier.threshold")
    deployment = body.get("deployment")
    if deployment is not None and (not isinstance(deployment, str) or not NAME.fullmatch(deployment)):
        raise ModerationSpecError("classifier.deployment", "must be a deployment's name, or null")
    concepts_raw = body.get("concepts")
    if not isinstance(concepts_raw, list) or not 0 < len(concepts_raw) <= MAX_CONCEPTS:
        raise ModerationSpecError("classifier.concepts", f"must be a list of 1 to {MAX_CONCEPTS} concepts")
    concepts = []
    for index, item in enumerate(concepts_raw):
        where = f"classifier.concepts.{index}"
        concept = _map(item, where, {"category", "texts", "threshold"})
        texts = _texts(concept.get("texts"), f"{where}.texts", MAX_CONCEPT_TEXTS, MAX_CONCEPT_CHARS)
        if not texts:
            raise ModerationSpecError(f"{where}.texts", "needs at least one text")
        own = concept.get("threshold")
        concepts.append(
            Concept(
                check_category(concept.get("category"), f"{where}.category"),
                texts,
                None if own is None else _threshold(own, f"{where}.threshold"),
            )
        )
    return Classifier(tuple(concepts), threshold, deployment)


def _threshold(raw: object, where: str) -> float:
    valid = isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw)
    if not valid or not 0.0 < float(raw) <= 1.0:  # type: ignore[arg-type]
        raise ModerationSpecError(where, "must be a cosine similarity in (0, 1]")
    return float(raw)  # type: ignore[arg-type]


def _texts(raw: object, where: str, most: int, longest: int) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > most:
        raise ModerationSpecError(where, f"must be a list of at most {most} strings")
    for text in raw:
        if not isinstance(text, str) or not 0 < len(text.strip()) <= longest:
            raise ModerationSpecError(
                where, f"each must be a non-empty string of at most {longest} characters"
            )
    return tuple(text.strip() for text in raw)


def _map(raw: object, where: str, known: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict) or not all(isinstance(key, str) for key in raw):
        raise ModerationSpecError(where, "must be a JSON object")
    for key in raw:
        if key not in known:
            prefix = f"{where}." if where else ""
            raise ModerationSpecError(f"{prefix}{key}", f"unknown field (known: {', '.join(sorted(known))})")
    return raw

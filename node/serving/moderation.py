"""Moderation where a request enters the mesh: one place that every route's request passes.

Predict, the OpenAI routes, the WebSocket route and jobs all commit their calls through
``Forwarder.serve`` (``dataplane/forward.py``), which hands a call for a deployment with a
``moderation`` section (``mesh/moderation.py``) to ``Moderator.serve`` first. It:

1. refuses, before anything runs, a prompt longer than the section's ``max_chars``;
2. runs the classifier here when the section names a deployment for it (``classifier.deployment``):
   the prompt's windows are embedded by that deployment through the forwarder (as any request; its
   answer is ``apps/embeddings.py``'s shape), the concept texts once per classifier and model (kept
   while that deployment answers with the same model and size), and ``classify`` decides. When the
   classifier deployment cannot answer, the request fails (503 or 500 with the reason): a check that
   cannot run refuses rather than lets a prompt through;
3. puts the rest of the section in the call (``Call.moderation``) for the replica's worker, which
   runs the blocklist, the packaged classifier and the output check (``inference/moderation.py``):
   user-written patterns never run on the agent's event loop, and the agent never runs a model;
4. counts every refusal, made here or by the worker (a ``Failure`` of kind ``moderation`` among the
   answer's envelopes), by deployment and category, for ``meshnode_moderation_refused_total``.

A refusal is an answer, not a failure: it is not retryable, so the forwarder never tries another
replica with it. The client gets 400 with ``{"error": {"type": "moderation", "category", ...}}``
(``errors.Refused``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from typing import Any

from ..dataplane.forward import Route, Served
from ..errors import MeshnodeError, NotReady, PredictorError, Refused, error_for_failure
from ..mesh.envelope import MAX_ID_CHARS, Call, Envelope, Failure, Reply
from ..mesh.moderation import OUTPUT, Classifier, Moderation, category_in
from ..mesh.moderation_checks import (
    ConceptVectors,
    classify,
    concept_texts,
    prompt_text,
    too_long,
    windows_of,
)
from ..mesh.records import Record

__all__ = ["Moderator"]

# Categories counted per deployment beyond its spec's (an app's output checks name their own).
MAX_EXTRA_CATEGORIES = 16
MAX_CACHED_CLASSIFIERS = 16
MAX_DIMENSIONS = 8192
_SUFFIX = ".moderation"


@dataclass(frozen=True)
class _Embedded:
    """A classifier deployment's concept embeddings, and the model and size they came from."""

    model: object
    dimensions: int
    concepts: ConceptVectors


class Moderator:
    """Applies each deployment's moderation section to the calls this node commits."""

    def __init__(self, record_of: Callable[[str], Record | None]) -> None:
        self._record_of = record_of  # the deployment's winning record (``Deployments.record``)
        # Refusals answered by this node, by (deployment, category): the metric's series.
        self.refused: collections.Counter[tuple[str, str]] = collections.Counter()
        self._concepts: collections.OrderedDict[tuple[str, Classifier], _Embedded] = collections.OrderedDict()

    def applies(self, deployment: str) -> bool:
        """Whether `deployment` has a moderation section: the forwarder skips ``serve`` when not."""
        return self._section(deployment) is not None

    async def serve(self, call: Call, hint: str | None, affinity: str | None, route: Route) -> Served:
        """Commit `call` through `route` with its deployment's checks (module docstring)."""
        section = self._section(call.deployment)
        if section is None:
            return await route(call, hint, affinity=affinity)
        try:
            text = prompt_text(call.body)
            refused = too_long(text, section) if section.checks_prompts else None
            classifier = section.classifier
            if (
                refused is None
                and classifier is not None
                and classifier.deployment is not None
                and text.strip()
            ):
                refused = await self._classify_remotely(call, classifier, classifier.deployment, text, route)
            if refused is not None:
                raise Refused(refused)
        except Refused as exc:
            self._count(call.deployment, exc.category, section)
            raise
        served = await route(
            replace(call, moderation=section.for_worker().to_wire()), hint, affinity=affinity
        )
        self._note(call.deployment, served.first, section)
        return replace(served, rest=self._noting(call.deployment, served.rest, section))

    def _section(self, deployment: str) -> Moderation | None:
        record = self._record_of(deployment)
        return record.spec.moderation if record is not None and record.spec is not None else None

    async def _classify_remotely(
        self, call: Call, classifier: Classifier, deployment: str, text: str, route: Route
    ) -> str | None:
        model, prompts = await self._embed(call, deployment, windows_of(text), route)
        key = (deployment, classifier)
        cached = self._concepts.get(key)
        dimensions = len(prompts[0])
        if cached is None or (cached.model, cached.dimensions) != (model, dimensions):
            concept_model, flat = await self._embed(call, deployment, concept_texts(classifier), route)
            if concept_model != model or any(len(vector) != dimensions for vector in flat):
                raise NotReady(
                    f"the moderation classifier {deployment} changed its model; try again", retry_after_s=1.0
                )
            cached = _Embedded(model, dimensions, ConceptVectors.of(classifier, flat))
            self._concepts[key] = cached
            while len(self._concepts) > MAX_CACHED_CLASSIFIERS:
                self._concepts.popitem(last=False)
        self._concepts.move_to_end(key)
        # Pure Python over at most a few hundred vectors: off the loop all the same.
        return await asyncio.to_thread(classify, prompts, cached.concepts)

    async def _embed(
        self, call: Call, deployment: str, texts: list[str], route: Route
    ) -> tuple[object, list[list[float]]]:
        """`texts` embedded by the classifier deployment: its model's name and one vector per text."""
        request_id = call.request_id[: MAX_ID_CHARS - len(_SUFFIX)] + _SUFFIX
        request = Call(
            request_id, deployment, {"input": texts}, None, False, "application/json", call.timeout_ms
        )
        try:
            served = await route(request)
            final: Envelope = served.first
            async with contextlib.aclosing(served.rest) as rest:
                async for message in rest:
                    final = message
            if isinstance(final, Failure):
                raise error_for_failure(final.kind, final.message, retryable=final.retryable)
        except MeshnodeError as exc:
            where = f"the moderation classifier {deployment}"
            if exc.retryable:
                raise NotReady(
                    f"{where} is not ready: {exc.message}", retry_after_s=exc.retry_after_s
                ) from exc
            raise PredictorError(f"{where} failed: {exc.message}") from exc
        vectors = _vectors(final, len(texts))
        if vectors is None:
            raise PredictorError(f"the moderation classifier {deployment} did not answer with embeddings")
        return (
            final.data.get("model") if isinstance(final, Reply) and isinstance(final.data, dict) else None
        ), vectors

    async def _noting(
        self, deployment: str, messages: AsyncGenerator[Envelope, None], section: Moderation
    ) -> AsyncGenerator[Envelope, None]:
        # aclosing: a client that goes away closes this, which closes (and cancels) the replica's.
        async with contextlib.aclosing(messages):
            async for message in messages:
                self._note(deployment, message, section)
                yield message

    def _note(self, deployment: str, message: Envelope, section: Moderation) -> None:
        if isinstance(message, Failure) and message.kind == Refused.kind:
            self._count(deployment, category_in(message.message) or OUTPUT, section)

    def _count(self, deployment: str, category: str, section: Moderation) -> None:
        """One refusal; a category the spec does not name counts as itself up to a bound, then 'other'."""
        if category not in section.categories():
            extra = {c for d, c in self.refused if d == deployment} - section.categories()
            if category not in extra and len(extra) >= MAX_EXTRA_CATEGORIES:
                category = "other"
        self.refused[(deployment, category)] += 1


def _vectors(final: Envelope, count: int) -> list[list[float]] | None:
    """The embeddings in an embeddings app's answer (``{"data": [{"embedding"}]}``), checked."""
    if not isinstance(final, Reply) or not isinstance(final.data, dict):
        return None
    rows: Any = final.data.get("data")
    if not isinstance(rows, list) or len(rows) != count:
        return None
    vectors = []
    for row in rows:
        vector = row.get("embedding") if isinstance(row, dict) else None
        if not isinstance(vector, list) or not 0 < len(vector) <= MAX_DIMENSIONS:
            return None
        if not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in vector
        ):
            return None
        vectors.append([float(x) for x in vector])
    if len({len(vector) for vector in vectors}) > 1:
        return None
    return vectors

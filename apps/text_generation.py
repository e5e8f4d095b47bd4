"""Text generation with a causal language model: tokens streamed as produced, concurrent requests batched.

Shows: a predictor that hands its requests to an engine thread (``inference/generation.py``) instead
of running the model itself, so 32 concurrent requests share each forward pass (dynamic batching),
the worker's event loop never blocks, and ``async_predict`` yields each piece of text the moment it
is final. A client that goes away cancels its stream task; the engine then drops the request from its
batch at the next token. It serves ``"chat"`` and ``"completions"`` (``Predictor.serves``), so
``POST /v1/chat/completions`` and ``/v1/completions`` reach it too.

A request is ``{"messages": [{"role", "content"}, ...]}`` (written with the model's chat template) or
``{"prompt": str}`` (raw), with optional ``max_tokens``, ``temperature`` (0: greedy), ``top_p``,
``seed``, ``stop`` (a string or up to 4) and ``stream``. The answer is
``{"text", "finish_reason", "usage": {"prompt_tokens", "completion_tokens"}, "model"}``; streamed,
``{"text": delta}`` pieces and a last ``{"text": "", "finish_reason", "usage"}``.

The model: ``model=``, the deployment's ``model`` (a model of the mesh's stores, docs/models.md) or the
environment variable ``MESHNODE_LM_MODEL`` names a ``save_pretrained`` folder of any transformers causal
LM (loaded offline). With neither, the first ``setup`` builds the tiny random-weight LM (its text is
gibberish) in ``<data_dir>/models/tiny-lm``. ``max_batch_size=`` or ``MESHNODE_LM_MAX_BATCH`` (default
32; 1 turns batching off) bounds the engine's batches.

Run:

    meshnode join --deploy chat=meshnode.apps.text_generation:TextGeneration
    curl -sN localhost:8470/v1/predict/chat -H 'Content-Type: application/json' \\
        -d '{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20, "stream": true}'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

from meshnode.inference.generation import Completion, Delta, GenerationEngine, GenerationRequest
from meshnode.inference.generation_request import DEFAULT_LIMITS, parse_request
from meshnode.inference.model_dir import mesh_model_dir
from meshnode.inference.predictor import Predictor, Request
from meshnode.inference.sampling import SamplingParams
from meshnode.inference.tiny_lm import ensure_tiny_lm, load_causal_lm

__all__ = ["BATCH_ENV", "MODEL_ENV", "TextGeneration"]

MODEL_ENV = "MESHNODE_LM_MODEL"
BATCH_ENV = "MESHNODE_LM_MAX_BATCH"
TINY_MODEL_NAME = "tiny-lm"


class TextGeneration(Predictor):
    """A causal LM answering chat and completion requests, streamed or whole, batched across requests."""

    serves = ("chat", "completions")
    # Requests reach the engine concurrently (it batches them); more wait in the replica's queue.
    max_concurrency = 32
    limits = DEFAULT_LIMITS

    def __init__(
        self, model: str | Path | None = None, data_dir: Path | None = None, max_batch_size: int | None = None
    ) -> None:
        pulled = mesh_model_dir()  # the deployment names a model of the mesh's stores
        self._model = str(model or pulled or os.environ.get(MODEL_ENV) or "") or None
        self._data_dir = data_dir
        # The engine's batch, not the replica's ``max_batch_size`` (which would multiply its slots):
        # requests the engine runs together, 1 to compare without batching.
        batch = max_batch_size if max_batch_size is not None else int(os.environ.get(BATCH_ENV) or 32)
        if batch < 1:
            raise ValueError(f"max_batch_size ({BATCH_ENV}) must be at least 1, not {batch}")
        self.engine_batch_size = batch
        self._engine: GenerationEngine | None = None
        self.model_name = TINY_MODEL_NAME if self._model is None else Path(self._model).expanduser().name

    def setup(self) -> None:
        """Load the configured model, building the tiny one first when none is configured."""
        if self._model is None:
            data_dir = self._data_dir or Path(tempfile.mkdtemp(prefix="meshnode-lm-"))
            folder = ensure_tiny_lm(data_dir / "models" / TINY_MODEL_NAME)
        else:
            folder = Path(self._model).expanduser()
            if not folder.is_dir():
                raise FileNotFoundError(f"no model folder at {self._model} (set {MODEL_ENV} to one)")
        model, tokenizer = load_causal_lm(folder)
        self._engine = GenerationEngine(
            model, tokenizer, max_batch_size=self.engine_batch_size, limits=self.limits
        )

    def warmup(self) -> None:
        """One short greedy completion, so the first request does not pay for lazy initialisation."""
        self.engine.generate(GenerationRequest(self.engine.encode_prompt("warmup"), 2, SamplingParams(0.0)))

    @property
    def engine(self) -> GenerationEngine:
        """The engine ``setup`` started."""
        if self._engine is None:
            raise RuntimeError("TextGeneration.setup() has not run")
        return self._engine

    @property
    def batch_sizes(self) -> Mapping[int, int]:
        """How many batches of each size the engine formed: the worker reports them to /metrics."""
        return self._engine.batch_sizes if self._engine is not None else {}

    def predict(self, request: Request, header: str | None = None) -> dict[str, Any]:
        """The whole answer at once (runs in a worker thread, which waits for the engine)."""
        completion: Completion = self.engine.generate(self._generation_request(request))
        return {
            "text": completion.text,
            "finish_reason": completion.finish_reason,
            "usage": _usage(completion.prompt_tokens, completion.completion_tokens),
            "model": self.model_name,
        }

    async def async_predict(self, request: Request) -> AsyncGenerator[dict[str, Any], None]:
        """``{"text": delta}`` per piece as produced, then the finish reason and usage."""
        generation = self._generation_request(request)
        # aclosing: when this generator is closed early, the engine's stream closes now (cancelling
        # the request) rather than whenever the garbage collector gets to it.
        async with contextlib.aclosing(self.engine.stream(generation)) as events:
            async for event in events:
                if isinstance(event, Delta):
                    yield {"text": event.text}
                else:
                    usage = _usage(event.prompt_tokens, event.completion_tokens)
                    yield {"text": "", "finish_reason": event.finish_reason, "usage": usage}

    def provide_hints(self) -> list[str]:
        """The model this replica has loaded."""
        return [self.model_name]

    def close(self) -> None:
        """Stop the engine thread."""
        if self._engine is not None:
            self._engine.close()

    def _generation_request(self, request: Request) -> GenerationRequest:
        parsed = parse_request(request, self.limits)
        if "messages" in parsed:
            prompt_ids = self.engine.encode_chat(parsed["messages"])
        else:
            prompt_ids = self.engine.encode_prompt(parsed["prompt"])
        return GenerationRequest(
            prompt_ids, parsed["max_tokens"], parsed["sampling"], parsed["stop"], parsed["ignore_eos"]
        )


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}

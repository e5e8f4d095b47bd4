"""``POST /v1/completions``: OpenAI's legacy completion request to the predictor input, and back.

The request (``CompletionParams``): ``model``, ``prompt`` as a string or a list of strings (one
group of ``n`` choices per prompt, choice ``prompt_index * n + i``, as OpenAI numbers them; token id
arrays are refused with a 400 saying to send text), and the sampling parameters of
``textgen.SamplingParams``. ``max_tokens`` defaults to 16, OpenAI's documented default for this
route. ``echo``, ``suffix``, ``best_of`` above 1 and ``logprobs`` are refused with a 400 naming them.

The predictor gets ``{"prompt": str, ...textgen.sampling_body}``; answers become OpenAI's
``text_completion`` objects, streamed or whole. A request with ``user`` prefers the replica that
served that user's last request (``mesh/affinity.py``), as chat's conversations do.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from ...mesh.affinity import conversation_key
from .errors import ParamError
from .textgen import MAX_CHOICES, Result, SamplingParams, Shape, check_choices, sampling_body, usage_of

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "CompletionParams",
    "CompletionShape",
    "affinity",
    "answer",
    "predictor_inputs",
]

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


class CompletionParams(SamplingParams):
    """The body of ``POST /v1/completions``."""

    prompt: str | list[str] = Field(description="a string or a list of strings (not token ids)")
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=MAX_CHOICES)
    logprobs: int | None = Field(None, ge=0, le=5)

    @field_validator("prompt", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        prompts = [value] if isinstance(value, str) else value
        if not isinstance(prompts, list) or not prompts:
            raise ValueError("must be a string or a non-empty list of strings")
        if len(prompts) > MAX_CHOICES:
            raise ValueError(f"has {len(prompts)} prompts; the limit is {MAX_CHOICES}")
        for index, prompt in enumerate(prompts):
            if isinstance(prompt, int | list) and not isinstance(prompt, bool):
                raise ValueError(
                    "token ids are not accepted: send the text itself; each model in the mesh "
                    "tokenizes with its own tokenizer"
                )
            if not isinstance(prompt, str):
                raise ValueError(f"item {index} must be a string")
        return value

    @property
    def prompts(self) -> list[str]:
        """The prompts as a list."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def refuse_unsupported(self) -> None:
        """400 for what no mesh app produces."""
        if self.echo:
            raise ParamError("echo", "echo: not supported by this mesh")
        if self.suffix:
            raise ParamError("suffix", "suffix: not supported by this mesh")
        if self.best_of is not None and self.best_of > 1:
            raise ParamError("best_of", "best_of: only 1 is supported by this mesh")
        if self.logprobs is not None:
            raise ParamError("logprobs", "logprobs: not supported by this mesh")


def predictor_inputs(params: CompletionParams) -> tuple[list[dict[str, Any]], list[int]]:
    """One predictor body per choice, and each choice's prompt index."""
    params.refuse_unsupported()
    check_choices(len(params.prompts) * params.choices)
    max_tokens = params.max_tokens or DEFAULT_MAX_TOKENS
    bodies: list[dict[str, Any]] = []
    groups: list[int] = []
    for group, prompt in enumerate(params.prompts):
        for index in range(params.choices):
            bodies.append({"prompt": prompt, **sampling_body(params, max_tokens, index)})
            groups.append(group)
    return bodies, groups


def affinity(params: CompletionParams) -> str | None:
    """The routing key of a client that names itself (``user``): its requests prefer one replica."""
    return conversation_key(params.user, ())


def prompt_words(params: CompletionParams) -> list[int]:
    """The fallback count of prompt tokens per choice (an app that reports no usage)."""
    return [len(prompt.split()) for prompt in params.prompts for _ in range(params.choices)]


def answer(params: CompletionParams, rid: str, results: list[Result], groups: list[int]) -> dict[str, Any]:
    """OpenAI's ``text_completion`` from the choices' results."""
    shape = CompletionShape(rid, params.model, False)
    return {
        "id": shape.id,
        "object": "text_completion",
        "created": shape.created,
        "model": params.model,
        "system_fingerprint": None,
        "choices": [
            {"text": result.text, "index": index, "logprobs": None, "finish_reason": result.finish_reason}
            for index, result in enumerate(results)
        ],
        "usage": usage_of(
            [(g, r.prompt_tokens, r.completion_tokens) for g, r in zip(groups, results, strict=True)]
        ),
    }


class CompletionShape(Shape):
    """``text_completion`` events."""

    object = "text_completion"

    def __init__(self, rid: str, model: str, include_usage: bool) -> None:
        super().__init__(f"cmpl-{rid}", model, include_usage)

    def delta(self, index: int, text: str) -> dict[str, Any]:
        """A piece of the text."""
        return {"text": text, "index": index, "logprobs": None, "finish_reason": None}

    def closing(self, index: int, finish_reason: str) -> dict[str, Any]:
        """The choice's end."""
        return {"text": "", "index": index, "logprobs": None, "finish_reason": finish_reason}

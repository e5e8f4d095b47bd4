"""``POST /v1/chat/completions``: OpenAI's chat request to the predictor input, and its answers back.

The request (``ChatParams``): ``model``, ``messages`` (``role`` system, developer, user, assistant
or tool; ``content`` a string or a list of text parts, which are joined), and the sampling
parameters of ``textgen.SamplingParams`` plus ``max_completion_tokens`` (OpenAI's newer name for
``max_tokens``; it wins when both are given). ``max_tokens`` defaults to ``DEFAULT_MAX_TOKENS``.
Tools, functions and logprobs are refused with a 400 naming them: no mesh app produces them, and
silently ignoring ``tools`` would give a client plain text where it waits for a call.

The predictor gets ``{"messages": [{"role", "content"}], ...textgen.sampling_body}``; its answer
becomes OpenAI's ``chat.completion`` (one choice per call, ``message.role`` assistant), and its
stream ``chat.completion.chunk`` events: first ``delta: {"role": "assistant", "content": ""}``
per choice, then a ``delta.content`` per token, then the choice's ``finish_reason``.

The conversation's affinity key (``mesh/affinity.conversation_key``: ``user``, else a hash of the
leading messages) routes every turn of one conversation to the replica that served the last.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...mesh.affinity import conversation_key
from .errors import ParamError
from .textgen import MAX_TOKENS, Result, SamplingParams, Shape, sampling_body, usage_of

__all__ = ["DEFAULT_MAX_TOKENS", "ChatParams", "ChatShape", "affinity", "answer", "predictor_inputs"]

# A reply of a few paragraphs: long enough for a chat turn, short enough that a client that forgot
# the limit does not hold a replica for minutes (OpenAI's default is the model's whole context).
DEFAULT_MAX_TOKENS = 1024
MAX_MESSAGES = 4096


class Message(BaseModel):
    """One message of the conversation."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = Field(
        None, description="a string, or a list of text parts {type: text, text}"
    )
    name: str | None = Field(None, max_length=256)

    @field_validator("content", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError("must be a string or a list of text parts")
        for part in value:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                kind = part.get("type") if isinstance(part, dict) else None
                raise ValueError(
                    f"only text parts {{'type': 'text', 'text': ...}} are accepted, not {kind or part!r}"
                )
        return value

    @property
    def text(self) -> str:
        """The content as one string."""
        if isinstance(self.content, list):
            return "".join(str(part["text"]) for part in self.content)
        return self.content or ""


class ChatParams(SamplingParams):
    """The body of ``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    logprobs: bool | None = None

    def refuse_unsupported(self) -> None:
        """400 for what no mesh app produces (see the module docstring)."""
        for name in ("tools", "functions"):
            if getattr(self, name):
                raise ParamError(name, f"{name}: tool and function calls are not supported by this mesh")
        if self.logprobs:
            raise ParamError("logprobs", "logprobs: not supported by this mesh")


def predictor_inputs(params: ChatParams) -> list[dict[str, Any]]:
    """One predictor body per choice."""
    params.refuse_unsupported()
    max_tokens = params.max_completion_tokens or params.max_tokens or DEFAULT_MAX_TOKENS
    messages = [{"role": message.role, "content": message.text} for message in params.messages]
    return [
        {"messages": messages, **sampling_body(params, max_tokens, index)} for index in range(params.choices)
    ]


def affinity(params: ChatParams) -> str | None:
    """The conversation's routing key."""
    return conversation_key(params.user, [{"role": m.role, "content": m.text} for m in params.messages])


def prompt_words(params: ChatParams) -> int:
    """The fallback count of prompt tokens (an app that reports no usage)."""
    return sum(len(message.text.split()) for message in params.messages)


def answer(params: ChatParams, rid: str, results: list[Result]) -> dict[str, Any]:
    """OpenAI's ``chat.completion`` from the choices' results."""
    shape = ChatShape(rid, params.model, False)
    return {
        "id": shape.id,
        "object": "chat.completion",
        "created": shape.created,
        "model": params.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": result.text, "refusal": None},
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }
            for index, result in enumerate(results)
        ],
        "usage": usage_of([(0, r.prompt_tokens, r.completion_tokens) for r in results]),
    }


class ChatShape(Shape):
    """``chat.completion.chunk`` events."""

    object = "chat.completion.chunk"

    def __init__(self, rid: str, model: str, include_usage: bool) -> None:
        super().__init__(f"chatcmpl-{rid}", model, include_usage)

    def opening(self, index: int) -> dict[str, Any] | None:
        """The role, before the first token."""
        return self._choice(index, {"role": "assistant", "content": ""}, None)

    def delta(self, index: int, text: str) -> dict[str, Any]:
        """A piece of the content."""
        return self._choice(index, {"content": text}, None)

    def closing(self, index: int, finish_reason: str) -> dict[str, Any]:
        """The choice's end."""
        return self._choice(index, {}, finish_reason)

    @staticmethod
    def _choice(index: int, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

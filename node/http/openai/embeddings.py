"""``POST /v1/embeddings``: OpenAI's request to the embeddings predictor input, and its answer back.

The request (``EmbeddingsParams``): ``model``, ``input`` as one string or a list of strings (token
id arrays, which OpenAI also takes, are refused with a 400 that says to send text: a mesh app has
its own tokenizer), ``encoding_format`` ``float`` (default) or ``base64``, ``dimensions`` (accepted
only when it equals the model's: these models cannot shorten their vectors), ``user`` (ignored).

The predictor gets ``{"input": [str, ...], "model": str}`` and answers ``{"data": [{"index",
"embedding"}], "usage": {"prompt_tokens"}}`` (the contract of ``Predictor.serves`` "embeddings";
``apps/embeddings.py``). The answer is OpenAI's ``{"object": "list", "data": [{"object":
"embedding", "index", "embedding"}], "model", "usage": {"prompt_tokens", "total_tokens"}}``; with
``base64`` each vector is its little-endian float32 bytes in base64, as OpenAI sends them (and as
the ``openai`` SDK asks by default, decoding them itself). An app that reports no usage gets its
tokens counted as whitespace-separated words.
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...errors import PredictorError
from .errors import ParamError

__all__ = ["MAX_INPUTS", "EmbeddingsParams", "answer", "predictor_input"]

# OpenAI's own limit on inputs per request; the embeddings app takes at most 256 (its 422 says so).
MAX_INPUTS = 2048
MAX_MODEL_CHARS = 256
_NUMBERS = frozenset((int, float))


class EmbeddingsParams(BaseModel):
    """The body of ``POST /v1/embeddings``."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=MAX_MODEL_CHARS)
    input: str | list[str] = Field(description="a string or a list of strings (not token ids)")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=65536)
    user: str | None = Field(None, max_length=1024)

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list):
            raise ValueError(f"must be a string or a list of strings, not {_json_type(value)}")
        if not texts:
            raise ValueError("must not be an empty list")
        if len(texts) > MAX_INPUTS:
            raise ValueError(f"has {len(texts)} items; the limit is {MAX_INPUTS}")
        for index, text in enumerate(texts):
            if isinstance(text, int | list) and not isinstance(text, bool):
                raise ValueError(
                    "token ids are not accepted: send the text itself (a string or a list of "
                    "strings); each model in the mesh tokenizes with its own tokenizer"
                )
            if not isinstance(text, str):
                raise ValueError(f"item {index} must be a string, not {_json_type(text)}")
            if not text:
                raise ValueError(f"item {index} is an empty string")
        return value


def predictor_input(params: EmbeddingsParams) -> dict[str, Any]:
    """The body the embeddings predictor gets."""
    texts = [params.input] if isinstance(params.input, str) else list(params.input)
    return {"input": texts, "model": params.model}


def answer(params: EmbeddingsParams, data: Any) -> dict[str, Any]:
    """OpenAI's answer from the predictor's; PredictorError when the app answered another shape."""
    texts = [params.input] if isinstance(params.input, str) else params.input
    vectors = _vectors(data, len(texts))
    if params.dimensions is not None and vectors and params.dimensions != len(vectors[0]):
        raise ParamError(
            "dimensions", f"dimensions: {params.model} makes vectors of {len(vectors[0])} numbers only"
        )
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    tokens = usage.get("prompt_tokens")
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        tokens = sum(len(text.split()) for text in texts)
    rows = []
    for index, vector in enumerate(vectors):
        encoded: list[float] | str = vector
        if params.encoding_format == "base64":
            encoded = _base64(vector, index)
        rows.append({"object": "embedding", "index": index, "embedding": encoded})
    return {
        "object": "list",
        "data": rows,
        "model": params.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _vectors(data: Any, count: int) -> list[list[float]]:
    """The predictor's vectors in input order, checked."""
    rows = data.get("data") if isinstance(data, dict) else None
    if not isinstance(rows, list) or len(rows) != count:
        raise PredictorError(
            f"the embeddings app answered without one vector per input in 'data' ({count} expected)"
        )
    vectors: list[list[float]] = [[] for _ in range(count)]
    for position, row in enumerate(rows):
        index = row.get("index", position) if isinstance(row, dict) else None
        vector = row.get("embedding") if isinstance(row, dict) else None
        # The numbers' types in one pass of C (map, set) rather than a check per number in Python:
        # 60 of an answer's 70 µs for 384 numbers. Exact types: a boolean is not a number here, and
        # what msgpack decodes is a plain int or float.
        if (
            not isinstance(index, int)
            or not 0 <= index < count
            or not isinstance(vector, list)
            or not (kinds := set(map(type, vector))) <= _NUMBERS
        ):
            raise PredictorError(f"the embeddings app's data[{position}] is not {{'index', 'embedding'}}")
        vectors[index] = [float(x) for x in vector] if int in kinds else vector
    return vectors


def _base64(vector: list[float], index: int) -> str:
    """OpenAI's base64 encoding: the vector's little-endian float32 bytes."""
    try:
        packed = struct.pack(f"<{len(vector)}f", *vector)
    except (OverflowError, struct.error):
        raise PredictorError(f"the embeddings app's vector {index} does not fit in float32") from None
    return base64.b64encode(packed).decode("ascii")


def _json_type(value: Any) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case dict():
            return "an object"
        case _:
            return type(value).__name__

"""``POST /v1/images/generations``: OpenAI's image request to the image predictor input, and back.

The request (``ImagesParams``): ``prompt``; ``model`` (optional, as OpenAI's: without it the one
deployment serving images is used, and a 400 asks for it when there are several); ``n`` images
(1 to 10, OpenAI's limit); ``size`` ``"WxH"`` (each side 16 to 4096; ``"auto"`` or none is
``DEFAULT_SIZE``; the app refuses sizes its model cannot make with a 422); ``response_format``
``url`` (OpenAI's default) or ``b64_json``; and ``seed``, a meshnode extension for reproducible
images (random when absent). ``quality``, ``style`` and ``user`` are accepted and ignored.

Each image is one call, made concurrently, with body ``{"prompt", "width", "height", "seed"}``
(seed, seed + 1, ...) and ``Accept: image/png``: the predictor's PNG file comes back as bytes, as
``/v1/predict`` with ``Accept: image/png`` gives it. The answer is ``{"created", "data": [{"url"}
or {"b64_json"}]}``; URLs point at this node (``image_store.py``).
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...errors import PredictorError

__all__ = ["DEFAULT_SIZE", "MAX_IMAGES", "ImagesParams", "answer", "pngs", "predictor_inputs"]

MAX_IMAGES = 10  # OpenAI's limit per request
MAX_PROMPT_CHARS = 32_000  # OpenAI's longest (gpt-image-1); apps take less and say so (422)
MIN_SIDE, MAX_SIDE = 16, 4096
DEFAULT_SIZE = "1024x1024"  # OpenAI's default
MAX_SEED = 2**63 - 1 - MAX_IMAGES
_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ImagesParams(BaseModel):
    """The body of ``POST /v1/images/generations``."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str | None = Field(None, min_length=1, max_length=256)
    n: int | None = Field(None, ge=1, le=MAX_IMAGES)
    size: str | None = Field(None, pattern=r"^(auto|\d{1,5}x\d{1,5})$", description="WxH, or auto")
    response_format: Literal["url", "b64_json"] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="meshnode: the first image's seed")
    user: str | None = Field(None, max_length=1024)

    @field_validator("size")
    @classmethod
    def _sides(cls, value: str | None) -> str | None:
        if value is None or value == "auto":
            return value
        match = _SIZE.fullmatch(value)
        if match is None or not all(MIN_SIDE <= int(side) <= MAX_SIDE for side in match.groups()):
            raise ValueError(f"must be WIDTHxHEIGHT with each side {MIN_SIDE} to {MAX_SIDE}, or auto")
        return value

    @property
    def width_height(self) -> tuple[int, int]:
        """The size asked for."""
        size = DEFAULT_SIZE if self.size in (None, "auto") else self.size
        width, height = str(size).split("x")
        return int(width), int(height)


def predictor_inputs(params: ImagesParams) -> list[dict[str, Any]]:
    """One predictor body per image, seeds counting up from the request's (or a random one)."""
    width, height = params.width_height
    seed = params.seed if params.seed is not None else secrets.randbelow(2**31)
    return [
        {"prompt": params.prompt, "width": width, "height": height, "seed": seed + index}
        for index in range(params.n or 1)
    ]


def pngs(replies: list[Any]) -> list[bytes]:
    """The PNG bytes of each reply; PredictorError when an app answered something else."""
    images = []
    for reply in replies:
        if not isinstance(reply, bytes) or not reply.startswith(_PNG_MAGIC):
            raise PredictorError("the image app answered without a PNG file")
        images.append(reply)
    return images


def answer(data: list[dict[str, str]]) -> dict[str, Any]:
    """OpenAI's images answer around `data` (``{"url"}`` or ``{"b64_json"}`` per image)."""
    return {"created": int(time.time()), "data": data}


def b64(png: bytes) -> dict[str, str]:
    """One image as ``b64_json``."""
    return {"b64_json": base64.b64encode(png).decode("ascii")}

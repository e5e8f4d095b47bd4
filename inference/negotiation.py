"""Content negotiation for file answers: the client's ``Accept`` against what the predictor made.

An answer goes out in a type the client accepts (RFC 9110, section 12.5.1: media ranges, ``*/*`` and
``type/*``, ``q`` weights, ``q=0`` meaning "not this"):

- the file's own type when it is acceptable;
- else, for an image, the most preferred acceptable image type Pillow can write (PNG, JPEG, WebP,
  GIF, BMP), converted in the worker;
- else nothing: the request fails with 406, naming what the predictor produced and what was asked.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

__all__ = ["CONVERTIBLE", "NotAcceptable", "Preference", "choose", "convert_image", "parse_accept"]

# Image types Pillow reads and writes without extra plugins, with its format names.
CONVERTIBLE = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
}


class NotAcceptable(Exception):
    """No acceptable type for this answer (HTTP 406)."""


@dataclass(frozen=True)
class Preference:
    """One media range of an Accept header and its weight."""

    media_range: str  # "image/png", "image/*" or "*/*", lower case
    q: float

    def matches(self, content_type: str) -> bool:
        kind, _, _ = content_type.partition("/")
        return self.media_range in ("*/*", f"{kind}/*", content_type)

    @property
    def specificity(self) -> int:
        return 0 if self.media_range == "*/*" else 1 if self.media_range.endswith("/*") else 2


def parse_accept(accept: str) -> list[Preference]:
    """The media ranges of an Accept header with their ``q`` (1 when absent; bad values count as 0)."""
    preferences = []
    for part in accept.split(","):
        media_range, *params = (piece.strip() for piece in part.split(";"))
        if "/" not in media_range:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        preferences.append(Preference(media_range.lower(), q))
    return preferences


def _weight(preferences: list[Preference], content_type: str) -> float:
    """The q of the most specific range that matches (RFC 9110: specific ranges override broad ones)."""
    matching = [p for p in preferences if p.matches(content_type)]
    return max(matching, key=lambda p: p.specificity).q if matching else 0.0


def choose(accept: str, content_type: str) -> str:
    """The type to answer in: `content_type` itself, an image type to convert to, or NotAcceptable."""
    preferences = parse_accept(accept)
    if not preferences or _weight(preferences, content_type) > 0:
        return content_type
    if content_type in CONVERTIBLE:
        ranked = sorted(
            ((_weight(preferences, target), -order, target) for order, target in enumerate(CONVERTIBLE)),
            reverse=True,
        )
        if ranked and ranked[0][0] > 0:
            return ranked[0][2]
    raise NotAcceptable(f"the answer is {content_type}, and the request accepts only {accept!r}")


def convert_image(data: bytes, target: str) -> bytes:
    """`data` (an image Pillow reads) written as `target`, one of CONVERTIBLE."""
    try:
        from PIL import Image
    except ImportError as exc:  # the core install has no Pillow; the torch extra brings it
        raise NotAcceptable(f"converting to {target} needs Pillow (pip install meshnode[torch])") from exc
    out = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        if target == "image/jpeg" and image.mode not in ("RGB", "L"):
            image.convert("RGB").save(out, format="JPEG")  # JPEG has no alpha channel
        else:
            image.save(out, format=CONVERTIBLE[target])
    return out.getvalue()

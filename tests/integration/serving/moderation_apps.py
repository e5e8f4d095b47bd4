"""A test app for moderation's output check: text to image whose pipeline has a safety checker.

``FlaggedImages`` is ``apps/text_to_image.py`` on the tiny pipeline, with a safety checker installed
the way diffusers runs one (``pipeline.safety_checker`` and ``feature_extractor``): it flags every
image, so the app's real ``check_output`` path (the pipeline's verdict) refuses each answer.
"""

from __future__ import annotations

from typing import Any

from meshnode.apps.text_to_image import TextToImage


class FlagEverything:
    """A stand-in for diffusers' StableDiffusionSafetyChecker that flags every image it is shown."""

    def __call__(self, images: Any, clip_input: Any) -> tuple[Any, list[bool]]:
        return images, [True] * len(images)


class FlaggedImages(TextToImage):
    """The tiny pipeline with a safety checker that flags every image."""

    def setup(self) -> None:
        super().setup()
        from transformers import CLIPImageProcessor

        self._pipeline.feature_extractor = CLIPImageProcessor()
        self._pipeline.safety_checker = FlagEverything()

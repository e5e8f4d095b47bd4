"""What the recipes take from the images (deploy/docker/Dockerfile): its data volume and its user.

Compose, Kubernetes and the netns test of the Compose topology mount the data volume where the image
declares it and run as the image's numeric user; these read both from the Dockerfile itself, so the
recipes cannot drift from the image.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["DOCKERFILE", "ImageFacts", "container_env", "image_facts"]

DOCKERFILE = Path(__file__).resolve().parents[3] / "deploy" / "docker" / "Dockerfile"


@dataclass(frozen=True)
class ImageFacts:
    """The final stage's VOLUME, USER (uid, gid) and ENV."""

    volume: str
    uid: int
    gid: int
    env: dict[str, str]


def image_facts() -> ImageFacts:
    """The CPU image's facts; skips the calling test when the Dockerfile is not there."""
    if not DOCKERFILE.exists():
        pytest.skip(f"{DOCKERFILE} is missing")
    text = DOCKERFILE.read_text()
    final = text[text.rindex("\nFROM ") :]  # the stage that runs
    joined = re.sub(r"\\\n", " ", final)  # continuation lines
    (volume,) = json.loads(re.search(r"^VOLUME\s+(\[.*\])", joined, re.M)[1])  # type: ignore[index]
    user = re.search(r"^USER\s+(\d+)(?::(\d+))?\s*$", joined, re.M)
    assert user is not None, "the image's USER is numeric (Kubernetes' runAsNonRoot checks it)"
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.*)$", joined, re.M):
        env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return ImageFacts(volume, int(user[1]), int(user[2] or user[1]), env)


def container_env(own: dict[str, str]) -> dict[str, str]:
    """A container's meshnode variables: the image's ``MESHNODE_*`` ENV (when the Dockerfile is
    there), overridden by the recipe's own, as the container runtime sets them."""
    if not DOCKERFILE.exists():
        return dict(own)
    image = {name: value for name, value in image_facts().env.items() if name.startswith("MESHNODE_")}
    return {**image, **own}

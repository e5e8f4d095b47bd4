"""Text to image with diffusers: a predictor that answers with a PNG file.

Shows: loading a diffusers pipeline once in ``setup`` on the best device (CUDA or MPS in float16, else
CPU in float32), validating a request, and returning the path of a file, which the node sends as is for
``Accept: image/png`` and as base64 JSON otherwise. The same prompt and seed give the same bytes.
It serves ``"images"`` (``Predictor.serves``), so ``POST /v1/images/generations`` reaches it too.
It reports each diffusion step (``Predictor.report_progress``, from diffusers' step-end callback)
with a 64-pixel JPEG preview of the latents, made only when a client asked for progress (the
WebSocket route): ``ws://localhost:8470/v1/ws/predict/t2i`` shows the picture forming. Its
``check_output`` hands the pipeline's safety checker's verdict to the deployment's moderation.

The model: ``model=``, the deployment's ``model`` (a model of the mesh's stores, docs/models.md) or
the environment variable ``MESHNODE_T2I_MODEL`` names a pipeline folder
(``save_pretrained`` output, loaded offline) or, when it is not a path, a hub id, which is downloaded.
With neither, the first ``setup`` builds the tiny random-weight Stable Diffusion pipeline (8 MB, its
pictures are coloured noise) in ``<data_dir>/models/tiny-sd``, so the whole path runs offline.

Run:

    meshnode join --deploy t2i=apps/text_to_image.py:TextToImage
    curl -s localhost:8470/v1/predict/t2i -H 'Content-Type: application/json' -H 'Accept: image/png' \\
        -d '{"prompt": "a red fox in the snow", "seed": 7, "steps": 4}' -o fox.png
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from meshnode.inference.model_dir import mesh_model_dir
from meshnode.inference.predictor import InvalidRequest, Predictor, Request
from meshnode.inference.previews import PREVIEW_SIDE, latents_preview
from meshnode.inference.tiny_diffusion import build_tiny_pipeline, load_pipeline

__all__ = ["MODEL_ENV", "TextToImage"]

MODEL_ENV = "MESHNODE_T2I_MODEL"
TINY_MODEL_NAME = "tiny-sd"
MAX_PROMPT_CHARS = 1000
MAX_STEPS = 50
MIN_SIDE, MAX_SIDE = 32, 1024
MAX_SEED = 2**63 - 1
MAX_FLAGGED = 256


class TextToImage(Predictor):
    """Stable Diffusion (or any diffusers text-to-image pipeline) from a local folder; returns PNG paths."""

    serves = ("images",)
    # One image at a time: a pipeline's scheduler keeps per-call state, so calls must not overlap.
    max_concurrency = 1

    def __init__(self, model: str | Path | None = None, data_dir: Path | None = None) -> None:
        pulled = mesh_model_dir()  # the deployment names a model of the mesh's stores
        self._model = str(model or pulled or os.environ.get(MODEL_ENV) or "") or None
        self._data_dir = data_dir
        self._pipeline: Any = None
        self._reports = False  # whether the pipeline calls back after each step (set by setup)
        # Outputs the pipeline's safety checker flagged, until moderation asks (``check_output``).
        self._flagged: set[str] = set()
        self.model_name = TINY_MODEL_NAME if self._model is None else _display_name(self._model)

    @property
    def data_dir(self) -> Path:
        """Where models and outputs live; a fresh temporary folder unless one was given."""
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="meshnode-t2i-"))
        return self._data_dir

    def setup(self) -> None:
        """Load the configured pipeline, building the tiny one first when none is configured."""
        if self._model is None:
            self._pipeline = load_pipeline(_ensure_tiny_pipeline(self.data_dir / "models" / TINY_MODEL_NAME))
        elif Path(self._model).expanduser().is_dir():
            self._pipeline = load_pipeline(Path(self._model).expanduser())
        elif _looks_like_path(self._model):
            raise FileNotFoundError(f"no pipeline folder at {self._model}")
        else:
            # Only an explicitly configured hub id may reach the network.
            self._pipeline = load_pipeline(self._model, local_files_only=False)
        (self.data_dir / "outputs").mkdir(parents=True, exist_ok=True)
        # Pipelines without diffusers' step-end callback (older or custom ones) run without progress.
        self._reports = "callback_on_step_end" in inspect.signature(self._pipeline.__call__).parameters

    def warmup(self) -> None:
        """One small one-step image, so the first request does not pay for lazy initialisation."""
        # 64, not the 32 minimum: real pipelines shrink the image 64 times on the way down the UNet.
        self._generate(prompt="warmup", seed=0, steps=1, height=64, width=64)

    def predict(self, request: Request, header: str | None = None) -> Path:
        """Generate one image and return the path of its PNG under ``<data_dir>/outputs``."""
        options = parse_request(request)
        image, flagged = self._generate(**options)
        path = self.data_dir / "outputs" / f"{uuid.uuid4().hex}.png"
        image.save(path, format="PNG")
        if flagged:
            if len(self._flagged) >= MAX_FLAGGED:  # a deployment without moderation never asks
                self._flagged.pop()
            self._flagged.add(str(path))
        return path

    def check_output(self, result: Any) -> str | None:
        """``nsfw`` for an image the pipeline's safety checker flagged; a pipeline without one flags none.

        The checker runs inside the pipeline (diffusers' ``run_safety_checker``, which also blacks a
        flagged image out); this hands its verdict to the deployment's moderation, which then
        refuses the answer instead of returning a black picture. The tiny pipeline has no checker
        (it is a second 1 GB model), so its images always pass.
        """
        key = str(result)
        if key in self._flagged:
            self._flagged.discard(key)
            return "nsfw"
        return None

    def provide_hints(self) -> list[str]:
        """The model this replica has loaded."""
        return [self.model_name]

    def _generate(self, *, prompt: str, seed: int, steps: int, height: int, width: int) -> tuple[Any, bool]:
        """The image, and whether the pipeline's safety checker (when it has one) flagged it."""
        import torch

        if self._pipeline is None:
            raise RuntimeError("TextToImage.setup() has not run")
        # A CPU generator draws the same starting noise on every device, so a seed means one picture.
        generator = torch.Generator(device="cpu").manual_seed(seed)
        side = min(PREVIEW_SIDE, max(height, width))  # never a preview larger than the picture
        progress = {"callback_on_step_end": self._step_end(steps, side)} if self._reports else {}
        output = self._pipeline(
            prompt,
            num_inference_steps=steps,
            height=height,
            width=width,
            generator=generator,
            output_type="pil",
            **progress,
        )
        flags = getattr(output, "nsfw_content_detected", None)
        return output.images[0], bool(flags and flags[0])

    def _step_end(self, steps: int, side: int) -> Any:
        def on_step_end(pipeline: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            latents = tensors["latents"]
            # Some schedulers take more than one pass per step: the pipeline counts its passes.
            total = int(getattr(pipeline, "num_timesteps", steps) or steps)
            # The preview is a function: made only when a client asked and the report is due. This
            # call raises RequestCancelled when the client went away, which ends the pipeline here.
            self.report_progress(min(index + 1, total), total, lambda: latents_preview(latents, side))
            return tensors  # unchanged: progress never alters the picture

        return on_step_end


def parse_request(request: Request) -> dict[str, Any]:
    """Check a request and fill in defaults; raises ValueError naming the bad field."""
    if not isinstance(request, dict):
        raise InvalidRequest(f"request must be a JSON object, not {type(request).__name__}")
    prompt = request.get("prompt")
    if not isinstance(prompt, str):
        raise InvalidRequest('"prompt" is required and must be a string')
    if not prompt.strip():
        raise InvalidRequest('"prompt" must not be empty')
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f'"prompt" is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}')
    height = _integer(request, "height", default=64, low=MIN_SIDE, high=MAX_SIDE)
    width = _integer(request, "width", default=64, low=MIN_SIDE, high=MAX_SIDE)
    for name, side in (("height", height), ("width", width)):
        # The VAE and UNet halve the image several times; sides must divide evenly.
        if side % 8:
            raise InvalidRequest(f'"{name}" must be a multiple of 8, not {side}')
    return {
        "prompt": prompt,
        "seed": _integer(request, "seed", default=0, low=0, high=MAX_SEED),
        "steps": _integer(request, "steps", default=4, low=1, high=MAX_STEPS),
        "height": height,
        "width": width,
    }


def _integer(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    value = request.get(name, default)
    # bool is an int subclass; "seed": true is a client bug, not seed 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f'"{name}" must be an integer, not {type(value).__name__}')
    if not low <= value <= high:
        raise InvalidRequest(f'"{name}" must be between {low} and {high}, not {value}')
    return value


def _ensure_tiny_pipeline(folder: Path) -> Path:
    if (folder / "model_index.json").exists():
        return folder
    # Build beside the target and rename: two replicas sharing a data dir must never load a half-written
    # folder. The loser of a race deletes its copy and uses the winner's.
    scratch = folder.with_name(f".{folder.name}-{uuid.uuid4().hex}")
    build_tiny_pipeline(scratch)
    try:
        scratch.rename(folder)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)
        if not (folder / "model_index.json").exists():
            raise
    return folder


def _looks_like_path(model: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else with separators is meant as a folder.
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model


def _display_name(model: str) -> str:
    # A folder is named by its last part, a hub id ("org/name") as written.
    path = Path(model).expanduser()
    return path.name if path.is_dir() else model

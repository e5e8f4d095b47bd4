"""Small JPEG previews for progress reports (``progress.py``): of an image, or of diffusion latents.

A preview travels with each progress report, so it must be cheap to make and small to send: at
most ``PREVIEW_SIDE`` pixels on its long side, JPEG at ``QUALITY`` (1-3 KB at 64x64), well inside
``MAX_PREVIEW_BYTES``.

Latents are previewed without the VAE: Stable Diffusion's four latent channels map to RGB almost
linearly, and the factors below (ComfyUI's ``latent_formats.SD15``, fitted by regressing decoded
pixels on latents) give a blurry but faithful picture for twelve multiply-adds per latent
pixel, where a VAE decode would cost more than the diffusion step it illustrates. Latents of other
shapes (16 channels for SD3 and Flux) show their first three channels, each stretched to full range.
"""

from __future__ import annotations

import io
from typing import Any

__all__ = ["PREVIEW_SIDE", "QUALITY", "jpeg_preview", "latents_preview"]

PREVIEW_SIDE = 64
QUALITY = 70
# Rows: latent channels 0-3; columns: their weight in R, G, B (ComfyUI, latent_formats.SD15).
_SD_LATENT_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)


def jpeg_preview(image: Any, max_side: int = PREVIEW_SIDE, quality: int = QUALITY) -> bytes:
    """A PIL image as JPEG bytes, scaled so its long side is `max_side` pixels."""
    from PIL import Image

    width, height = image.size
    scale = max_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def latents_preview(latents: Any, max_side: int = PREVIEW_SIDE) -> bytes:
    """The first image of a batch of diffusion latents (torch, N x C x H x W) as a small JPEG."""
    import torch
    from PIL import Image

    sample = latents[0].detach().to(device="cpu", dtype=torch.float32)
    if sample.shape[0] == len(_SD_LATENT_RGB):
        factors = torch.tensor(_SD_LATENT_RGB, dtype=torch.float32)
        rgb = ((torch.einsum("chw,cr->rhw", sample, factors) + 1) / 2).clamp(0, 1)
    else:
        channels = sample[:3] if sample.shape[0] >= 3 else sample[:1].expand(3, -1, -1)
        low = channels.amin(dim=(1, 2), keepdim=True)
        high = channels.amax(dim=(1, 2), keepdim=True)
        rgb = (channels - low) / (high - low).clamp(min=1e-6)
    pixels = (rgb * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return jpeg_preview(Image.fromarray(pixels, "RGB"), max_side)

"""A tiny Stable Diffusion pipeline with random weights, built offline, and the loader for any pipeline.

Nothing can be fetched from a model hub here, yet the diffusion path (tokenizer, text encoder, UNet,
scheduler, VAE, PNG) should run end to end in tests and demos. ``build_tiny_pipeline`` makes a real
``StableDiffusionPipeline`` from configs alone: a UNet and a VAE with channels (32, 64), a 5-layer
CLIP text encoder of width 32, a byte-level CLIP tokenizer with no merges (every byte is a token) and a
DDIM scheduler. Its weights are random from a fixed seed, so its pictures are noise, but the same seed
gives bit-identical files (about 8 MB) and the same prompt and seed give the same image. A 64x64 image
at 4 steps takes about 0.15 s on CPU.

``load_pipeline`` is the same code that loads real pipelines where their weights exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .runtime_torch import torch_device_and_dtype

__all__ = ["TINY_MAX_PROMPT_TOKENS", "build_tiny_pipeline", "load_pipeline"]

# CLIP's context length; the pipeline truncates longer prompts to it.
TINY_MAX_PROMPT_TOKENS = 77

_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"


def build_tiny_pipeline(directory: Path, *, seed: int = 0) -> Path:
    """Build the tiny random-weight pipeline from ``seed`` and save it to ``directory``; returns it."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _byte_level_clip_tokenizer()
    # Seed once per component, so changing one component's config leaves the others' weights alone.
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=5,
            num_attention_heads=4,
            max_position_embeddings=TINY_MAX_PROMPT_TOKENS,
            layer_norm_eps=1e-5,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    # Any: mypy cannot see save_pretrained through diffusers' lazy-import stubs.
    pipeline: Any = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    directory.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(directory)
    return directory


def load_pipeline(source: str | Path, *, local_files_only: bool = True) -> Any:
    """Load a diffusers pipeline (a folder, or a hub id when downloads are allowed) on the best device."""
    from diffusers import DiffusionPipeline

    device, dtype = torch_device_and_dtype()
    # safety_checker=None: the checker is a second 1 GB model, and the tiny pipeline has none.
    pipeline = DiffusionPipeline.from_pretrained(
        str(source),
        local_files_only=local_files_only,
        dtype=dtype,
        safety_checker=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def _byte_level_clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    # CLIP's BPE marks the last piece of each word with "</w>"; with no merges that piece is one byte.
    vocab = {
        token: index for index, token in enumerate([_BOS, _EOS, *symbols, *(s + "</w>" for s in symbols)])
    }
    # transformers >= 5 builds the tokenizer from these in memory; no vocab.json or merges.txt needed.
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TINY_MAX_PROMPT_TOKENS)


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's reversible byte -> printable character map, which byte-level BPE vocabularies are written in.
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping

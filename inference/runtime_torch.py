"""Torch helpers shared by the model runtimes: which device and dtype a model should load in.

Importing this module never imports torch: the agent imports ``meshnode.inference`` modules for their
names, and only worker processes may pay torch's import time and memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["torch_device_and_dtype"]


def torch_device_and_dtype() -> tuple[str, torch.dtype]:
    """The best torch device here and its dtype: cuda or mps with float16, else cpu with float32."""
    import torch

    # Half precision halves memory and is fast on GPUs; on CPU many float16 kernels are slow or missing.
    if torch.cuda.is_available():
        return "cuda", torch.float16
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps", torch.float16
    return "cpu", torch.float32

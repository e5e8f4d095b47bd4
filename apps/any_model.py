"""Many models behind one deployment, a few kept warm: fal's AnyModelRunner pattern.

Shows: a request names its model (``{"model": NAME, "input": [...]}``), the replica keeps at most
``max_models`` (3) loaded in an LRU ``ModelCache`` and unloads the least recently used, and
``provide_hints()`` tells the mesh which models are warm here, most recent first, so the router sends
the next request for a model to a replica that already holds it instead of paying a cold load.

The models are stand-ins that need no download: each name is a tiny torch network (8 numbers in,
4 out) whose weights are drawn from a seed derived from the name, so a name always means the same
function, on any node. "Loading" one sleeps ``load_delay_s`` (0.2 s) to stand in for reading weights,
which makes cold loads visible; the response says whether the request paid for one. Swap ``_build``
for ``from_pretrained`` calls to serve real checkpoints the same way.

Run:

    meshnode join --deploy any=apps/any_model.py:AnyModel
    curl -s localhost:8470/v1/predict/any -H 'Content-Type: application/json' -H 'X-Mesh-Hint: fox' \\
        -d '{"model": "fox", "input": [1, 2, 3, 4, 5, 6, 7, 8]}'
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from typing import Any

from meshnode.inference.model_cache import ModelCache
from meshnode.inference.predictor import InvalidRequest, Predictor, Request
from meshnode.inference.runtime_torch import torch_device_and_dtype

__all__ = ["AnyModel"]

INPUT_SIZE = 8
OUTPUT_SIZE = 4
HIDDEN_SIZE = 32
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


class AnyModel(Predictor):
    """Serve any named model, keeping the ``max_models`` most recently used ones loaded."""

    def __init__(self, *, max_models: int = 3, load_delay_s: float = 0.2) -> None:
        self._max_models = max_models
        self._load_delay_s = load_delay_s
        self._cache: ModelCache[Any] | None = None
        self._device = "cpu"

    def setup(self) -> None:
        """Pick the device and start with an empty cache: models load on their first request."""
        # float32 everywhere: these networks are tiny, and one dtype keeps outputs equal across devices.
        self._device, _ = torch_device_and_dtype()
        self._cache = ModelCache(self._load, max_models=self._max_models, size_of=_parameter_bytes)

    def predict(self, request: Request, header: str | None = None) -> dict[str, Any]:
        """Run the named model on the input; loads it (evicting the least recently used) on a miss."""
        import torch

        if self._cache is None:
            raise RuntimeError("AnyModel.setup() has not run")
        name, values = parse_request(request)
        cold = name not in self._cache
        model = self._cache.get(name)
        with torch.inference_mode():
            output = model(torch.tensor([values], dtype=torch.float32, device=self._device))
        return {"model": name, "output": output[0].tolist(), "cold_load": cold}

    def provide_hints(self) -> list[str]:
        """The loaded model names, most recently used first."""
        return [] if self._cache is None else self._cache.loaded()

    def _load(self, name: str) -> Any:
        time.sleep(self._load_delay_s)
        return _build(name).to(self._device)


def _build(name: str) -> Any:
    import torch

    # A seed from a stable hash of the name (Python's hash() changes per process).
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(INPUT_SIZE, HIDDEN_SIZE), torch.nn.Tanh(), torch.nn.Linear(HIDDEN_SIZE, OUTPUT_SIZE)
    )
    with torch.no_grad():
        for parameter in model.parameters():
            # Drawn from our own generator, not the global one: loads on other threads stay independent.
            weights = torch.randn(parameter.shape, generator=generator)
            parameter.copy_(weights / math.sqrt(parameter.shape[-1]))
    return model.eval()


def _parameter_bytes(model: Any) -> int:
    return sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())


def parse_request(request: Request) -> tuple[str, list[float]]:
    """The model name and input numbers; raises ValueError naming what is wrong."""
    if not isinstance(request, dict):
        raise InvalidRequest(f"request must be a JSON object, not {type(request).__name__}")
    name = request.get("model")
    if not isinstance(name, str) or not MODEL_NAME_PATTERN.fullmatch(name):
        raise InvalidRequest('"model" must be a name of 1 to 64 characters from A-Z a-z 0-9 . _ -')
    values = request.get("input")
    if not isinstance(values, list) or len(values) != INPUT_SIZE:
        raise InvalidRequest(f'"input" must be a list of {INPUT_SIZE} numbers')
    for index, value in enumerate(values):
        # bool is an int subclass, and NaN or infinity would come back as invalid JSON.
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidRequest(f'"input"[{index}] must be a finite number, not {value!r}')
    return name, [float(value) for value in values]

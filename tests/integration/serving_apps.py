"""Predictors for the serving tests: real classes run by real worker processes, each with one job."""

from __future__ import annotations

import asyncio
import os
import random
import struct
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

from meshnode.inference.predictor import InvalidRequest, Predictor


class Probe(Predictor):
    """Echoes, sleeps, raises, crashes or reports its pid, as the request says; streams numbers."""

    max_concurrency = 4

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        match request.get("do"):
            case "crash":
                os._exit(7)
            case "raise":
                raise ValueError("predictor says no")
            case "invalid":
                raise InvalidRequest('"x" must be a number')
            case "sleep":
                if "marker" in request:
                    Path(request["marker"]).touch()  # tells the test the request reached us
                time.sleep(float(request["s"]))
                return {"slept": request["s"]}
            case "pid":
                return {"pid": os.getpid()}
            case "big":  # an answer far larger than the request
                return {"blob": "z" * int(request["n"])}
            case "steps":  # reports each of n steps, like a diffusion
                n = int(request.get("n", 4))
                for step in range(1, n + 1):
                    time.sleep(float(request.get("interval_s", 0.1)))
                    self.report_progress(step, n)
                return {"steps": n}
        return {"echo": request, "header": header}

    async def async_predict(self, request: dict[str, Any]) -> Any:
        try:
            for i in range(int(request.get("n", 3))):
                await asyncio.sleep(float(request.get("interval_s", 0.5)))
                if request.get("fail_at") == i:
                    raise RuntimeError("stream broke")
                yield {"i": i}
        except asyncio.CancelledError:
            if "cancelled_marker" in request:
                Path(request["cancelled_marker"]).touch()  # tells the test the cancel arrived
            raise


class OnceOnly(Probe):
    """A Probe whose app says a job must not run twice (an email, a payment)."""

    rerun_safe = False


class Narrow(Predictor):
    """One request at a time and a queue of two: the fourth concurrent request is refused."""

    max_concurrency = 1
    max_queue = 2

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        time.sleep(float(request.get("s", 1.0)))
        return {"done": True}


class SlowSetup(Predictor):
    """Takes a while to load, like a real model."""

    def setup(self) -> None:
        time.sleep(float(os.environ.get("MESHNODE_TEST_SETUP_S", "4")))

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        return {"ready": True}


class BrokenSetup(Predictor):
    """Cannot load its model: setup() raises, as it would with its weights missing."""

    def setup(self) -> None:
        raise RuntimeError("no weights at /models/missing.safetensors")

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        return {"never": True}


class Batchy(Predictor):
    """Reports how many requests shared its batch."""

    max_batch_size = 8
    max_batch_wait_s = 0.05

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        return {"batch": 1}

    def predict_batch(self, requests: list[dict[str, Any]]) -> list[Any]:
        if any(r.get("bad") for r in requests):
            raise ValueError("a bad request in the batch")
        time.sleep(0.1)  # model time: requests arriving meanwhile form the next batch
        return [{"batch": len(requests), "i": r.get("i")} for r in requests]


class PngMaker(Predictor):
    """Writes a small PNG (a gradient seeded by the request) and returns its path."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.out = (data_dir or Path("/tmp")) / "outputs"

    def setup(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        seed = int(request.get("seed", 0))
        size = int(request.get("size", 8))
        path = self.out / f"{uuid.uuid4().hex}.png"
        path.write_bytes(_png(size, size, seed, noise=request.get("noise") is True))
        return path


def _png(width: int, height: int, seed: int, noise: bool = False) -> bytes:
    """A greyscale PNG: a gradient, or seeded noise (which does not compress: a big file)."""
    if noise:
        pixels = random.Random(seed).randbytes(width * height)
        rows = b"".join(b"\x00" + pixels[y * width : (y + 1) * width] for y in range(height))
    else:
        rows = b"".join(
            b"\x00" + bytes((x * 31 + y * 7 + seed) % 256 for x in range(width)) for y in range(height)
        )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class Tagged(Predictor):
    """Says which replica served; its hints and loaded models carry its tag (the routing tests)."""

    tag = ""
    max_concurrency = 4

    def predict(self, request: dict[str, Any], header: str | None = None) -> Any:
        if "s" in request:
            time.sleep(float(request["s"]))
        return {"tag": self.tag}

    async def async_predict(self, request: dict[str, Any]) -> Any:
        for i in range(int(request.get("n", 3))):
            await asyncio.sleep(float(request.get("interval_s", 0.1)))
            yield {"tag": self.tag, "i": i}

    def provide_hints(self) -> list[str]:
        return [f"hint-{self.tag}"]

    def loaded_models(self) -> list[str]:
        return [f"model-{self.tag}"]


class TaggedA(Tagged):
    tag = "a"


class ManyHints(Tagged):
    """Sixty hints (as an LLM app hints the prompt prefixes it holds): ~2 KB of node metadata."""

    tag = "many"

    def provide_hints(self) -> list[str]:
        return [f"prefix-{index:04d}".ljust(32, "x") for index in range(60)]


class TaggedB(Tagged):
    tag = "b"

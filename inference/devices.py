"""What this machine can run on: CPU, memory, accelerators (CUDA GPUs, Apple MPS), container runtimes.

Importing this module never imports torch. ``detect_cpu`` is instant and torch-free;
``detect_accelerators`` imports torch (when installed) in the calling process; ``detect_full`` runs
that in a child process (``python -m meshnode.inference.devices``), because importing torch takes
seconds and hundreds of MB, and initialising CUDA can hang on a broken driver. The agent must stay
small and keep answering its failure detector, so only worker processes ever load torch.
``detect_full`` also asks which container CLIs answer (``container.detect_runtimes``, run as child
processes beside the torch probe), for apps in a custom image: gossiped as ``container_runtimes``
only when there is one, so a node without any sends nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import platform
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import psutil

from meshnode.inference.container import RUNTIMES, detect_runtimes

__all__ = [
    "Accelerator",
    "DeviceInfo",
    "detect_accelerators",
    "detect_cpu",
    "detect_full",
]

logger = logging.getLogger(__name__)

AcceleratorKind = Literal["cuda", "mps"]
DeviceKind = Literal["cuda", "mps", "cpu"]


@dataclass(frozen=True)
class Accelerator:
    """One GPU-like device torch can use."""

    kind: AcceleratorKind
    index: int
    name: str
    memory_bytes: int
    # CUDA compute capability as "major.minor"; None for MPS.
    capability: str | None

    def to_wire(self) -> dict[str, Any]:
        """Return a plain msgpack-able dict."""
        return {
            "kind": self.kind,
            "index": self.index,
            "name": self.name,
            "memory": self.memory_bytes,
            "capability": self.capability,
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Accelerator:
        """Rebuild from ``to_wire`` output; raises ValueError on a malformed dict."""
        if not isinstance(wire, dict):
            raise ValueError(f"accelerator must be a dict, not {type(wire).__name__}")
        kind = wire.get("kind")
        if kind not in ("cuda", "mps"):
            raise ValueError(f"unknown accelerator kind {kind!r}")
        capability = wire.get("capability")
        try:
            return cls(
                kind=kind,
                index=int(wire["index"]),
                name=str(wire["name"]),
                memory_bytes=int(wire["memory"]),
                capability=None if capability is None else str(capability),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed accelerator {wire!r}: {exc}") from exc


@dataclass(frozen=True)
class DeviceInfo:
    """Everything the mesh needs to know about one machine's hardware."""

    cpu_model: str
    cpu_cores: int
    memory_bytes: int
    accelerators: tuple[Accelerator, ...]
    torch_version: str | None
    # Container CLIs that answer here ("podman", "docker"), for apps in a custom image.
    container_runtimes: tuple[str, ...] = ()

    @property
    def kind(self) -> DeviceKind:
        """The best device class present: cuda, then mps, then cpu."""
        kinds = {accelerator.kind for accelerator in self.accelerators}
        if "cuda" in kinds:
            return "cuda"
        if "mps" in kinds:
            return "mps"
        return "cpu"

    def to_wire(self) -> dict[str, Any]:
        """Return a plain msgpack-able dict for gossip and the HTTP API."""
        wire = {
            "cpu": self.cpu_model,
            "cores": self.cpu_cores,
            "memory": self.memory_bytes,
            "accelerators": [accelerator.to_wire() for accelerator in self.accelerators],
            "torch": self.torch_version,
            "kind": self.kind,
        }
        if self.container_runtimes:
            wire["container_runtimes"] = list(self.container_runtimes)
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> DeviceInfo:
        """Rebuild from ``to_wire`` output (``kind`` is derived, not read); ValueError if malformed."""
        torch_version = wire.get("torch")
        runtimes = wire.get("container_runtimes", [])
        if not isinstance(runtimes, list):
            raise ValueError(f"malformed device info: container_runtimes {runtimes!r}")
        try:
            return cls(
                cpu_model=str(wire["cpu"]),
                cpu_cores=int(wire["cores"]),
                memory_bytes=int(wire["memory"]),
                accelerators=tuple(Accelerator.from_wire(item) for item in wire["accelerators"]),
                torch_version=None if torch_version is None else str(torch_version),
                # Names this version does not drive (a newer node's) are left out.
                container_runtimes=tuple(name for name in RUNTIMES if name in runtimes),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed device info: {exc}") from exc


def detect_cpu() -> DeviceInfo:
    """Describe CPU and memory without torch; accelerators are left empty."""
    return DeviceInfo(
        cpu_model=_cpu_model(),
        cpu_cores=psutil.cpu_count(logical=True) or 1,
        memory_bytes=int(psutil.virtual_memory().total),
        accelerators=(),
        torch_version=None,
    )


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass  # not Linux: fall through to what platform knows
    return platform.processor() or platform.machine() or "unknown"


def detect_accelerators() -> tuple[tuple[Accelerator, ...], str | None]:
    """List CUDA and MPS devices and the torch version, importing torch in this process if installed."""
    if importlib.util.find_spec("torch") is None:
        return (), None
    import torch

    accelerators: list[Accelerator] = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            accelerators.append(
                Accelerator(
                    kind="cuda",
                    index=index,
                    name=str(properties.name),
                    memory_bytes=int(properties.total_memory),
                    capability=f"{properties.major}.{properties.minor}",
                )
            )
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        # MPS shares the machine's unified memory, so its budget is the system's RAM.
        accelerators.append(
            Accelerator(
                kind="mps",
                index=0,
                name=platform.processor() or "Apple GPU",
                memory_bytes=int(psutil.virtual_memory().total),
                capability=None,
            )
        )
    return tuple(accelerators), str(torch.__version__)


async def detect_full(timeout_s: float = 60.0, *, cache_dir: Path | None = None) -> DeviceInfo:
    """CPU info plus accelerators and container runtimes found by child processes.

    CPU-only (with a warning) if the accelerator probe fails. With `cache_dir`, its answer is kept
    for the rest of this boot: importing torch costs seconds of CPU, and every agent on a machine
    (a local demo mesh, a benchmark) would pay it. Runtimes are asked every time: a daemon comes
    and goes, and asking costs milliseconds.
    """
    device, runtimes = await asyncio.gather(_detect_torch(timeout_s, cache_dir), detect_runtimes())
    return replace(device, container_runtimes=runtimes)


async def _detect_torch(timeout_s: float, cache_dir: Path | None) -> DeviceInfo:
    cpu = detect_cpu()
    if importlib.util.find_spec("torch") is None:
        return cpu
    cache = _probe_cache_path(cache_dir) if cache_dir is not None else None
    try:
        if cache is not None and cache.is_file():
            accelerators, torch_version = _parse_probe_output(cache.read_text())
        else:
            accelerators, torch_version = await _detect_in_subprocess(timeout_s)
            if cache is not None:
                _write_probe_cache(cache, accelerators, torch_version)
    except (OSError, ValueError, TimeoutError) as exc:
        logger.warning("accelerator detection failed, serving on CPU only: %s", exc)
        return cpu
    return DeviceInfo(
        cpu_model=cpu.cpu_model,
        cpu_cores=cpu.cpu_cores,
        memory_bytes=cpu.memory_bytes,
        accelerators=accelerators,
        torch_version=torch_version,
    )


async def _detect_in_subprocess(timeout_s: float) -> tuple[tuple[Accelerator, ...], str | None]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        raise TimeoutError(f"device probe did not answer within {timeout_s} s") from None
    finally:
        # Reached on timeout and on cancellation: never leave the child running.
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    if process.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ValueError(f"device probe exited with {process.returncode}: {tail[0]}")
    return _parse_probe_output(stdout.decode(errors="replace"))


def _parse_probe_output(stdout: str) -> tuple[tuple[Accelerator, ...], str | None]:
    # The JSON is the last line: a library may print banners to stdout before it.
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError("device probe printed nothing")
    try:
        report = json.loads(lines[-1])
        accelerators = tuple(Accelerator.from_wire(item) for item in report["accelerators"])
        torch_version = report["torch"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"device probe printed unexpected output: {exc}") from exc
    return accelerators, None if torch_version is None else str(torch_version)


def _probe_cache_path(cache_dir: Path) -> Path:
    """One file per boot and torch install: a reboot or a new torch probes again."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "unknown-boot"
    spec = importlib.util.find_spec("torch")
    origin = spec.origin if spec is not None and spec.origin else "no-torch"
    key = hashlib.sha256(
        f"{boot}|{origin}|{Path(origin).stat().st_mtime if spec else 0}".encode()
    ).hexdigest()
    return cache_dir / f"devices-{key[:16]}.json"


def _write_probe_cache(path: Path, accelerators: tuple[Accelerator, ...], torch_version: str | None) -> None:
    report = {"accelerators": [accelerator.to_wire() for accelerator in accelerators], "torch": torch_version}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(report) + "\n")
    temporary.replace(path)  # atomic: agents starting together never read half a file


def _main() -> None:
    accelerators, torch_version = detect_accelerators()
    report = {"accelerators": [accelerator.to_wire() for accelerator in accelerators], "torch": torch_version}
    print(json.dumps(report))


if __name__ == "__main__":
    _main()

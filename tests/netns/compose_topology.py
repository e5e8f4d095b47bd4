"""deploy/compose/compose.yaml run without Docker: each service's exact command and environment as a
process in a network namespace of its own, the way Compose would start its container.

What Docker would do, and what stands in for it here:

- a container per service on one bridge network: a ``Bridge`` host (network namespace) per service
  that has its own network; a service with ``network_mode: service:X`` runs in X's namespace;
- Docker's DNS resolving service names: ``/etc/netns/<namespace>/hosts``, which ``ip netns exec``
  mounts over ``/etc/hosts`` for everything it starts there (the agents resolve seeds with the
  system resolver, which reads it first);
- the image: its ENTRYPOINT ``meshnode`` is this environment's ``python -m meshnode`` (the same
  console-script entry point), and its ``MESHNODE_*`` ENV (deploy/docker/Dockerfile) comes under
  the service's ``environment``; ``python`` in a healthcheck is this interpreter;
- volumes, bind mounts and secrets: the container paths they are mounted at are replaced, in
  arguments and variable values, by folders and files under the test's own folder.

Nothing else is changed: flags, variables, ports and service names are the file's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.netns.netns import Bridge

__all__ = [
    "COMPOSE_DIR",
    "ComposeService",
    "hosts_files",
    "load_services",
    "process_env",
    "translate",
]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
NETNS_ETC = Path("/etc/netns")
ENTRYPOINT = [sys.executable, "-m", "meshnode"]


@dataclass(frozen=True)
class ComposeService:
    """One service of the Compose file, translated to run in a namespace."""

    name: str
    image: str
    # The namespace it shares (network_mode: service:X), else None: a namespace of its own.
    network_of: str | None
    # Empty for an image other than meshnode's without an entrypoint here (Prometheus): the test
    # starts its program itself.
    argv: list[str]
    env: dict[str, str]
    # The healthcheck's command, translated likewise; None when the service has none.
    healthcheck: list[str] | None
    # Container path -> the path standing in for it here.
    mounts: dict[str, Path]
    # The image's WORKDIR (the data volume) for meshnode's image, else None.
    cwd: Path | None


def load_services(workdir: Path, profiles: tuple[str, ...] = ()) -> dict[str, ComposeService]:
    """The services `docker compose up` (with `profiles`) would start, in file order."""
    document = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    services: dict[str, ComposeService] = {}
    for name, spec in document["services"].items():
        if spec.get("profiles") and not set(spec["profiles"]) & set(profiles):
            continue
        services[name] = _service(name, spec, document, workdir)
    return services


def _service(name: str, spec: dict[str, Any], document: dict[str, Any], workdir: Path) -> ComposeService:
    mounts: dict[str, Path] = {}
    for volume in spec.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (COMPOSE_DIR / source).resolve()  # a bind mount of the file itself
        else:
            assert source in document["volumes"], f"{name}: volume {source} is not declared"
            mounts[target] = workdir / "volumes" / source
            mounts[target].mkdir(parents=True, exist_ok=True)
    if "meshnode" in spec["image"] and _image_volume() not in mounts:
        # Docker gives an image's VOLUME that the service does not mount an anonymous volume.
        mounts[_image_volume()] = workdir / "volumes" / f"{name}-anonymous"
        mounts[_image_volume()].mkdir(parents=True, exist_ok=True)
    for secret in spec.get("secrets", []):
        mounts[f"/run/secrets/{secret}"] = workdir / "secrets" / secret
    network = spec.get("network_mode", "")
    network_of = network.removeprefix("service:") if network.startswith("service:") else None
    if "entrypoint" in spec:
        argv = [translate(arg, mounts) for arg in spec["entrypoint"]]
        argv += [translate(arg, mounts) for arg in spec.get("command", [])]
    elif "meshnode" in spec["image"]:  # the meshnode image's ENTRYPOINT
        argv = [*ENTRYPOINT, *(translate(arg, mounts) for arg in spec.get("command", []))]
    else:
        argv = []
    image_env = _image_env() if "meshnode" in spec["image"] else {}
    environment = {**image_env, **spec.get("environment", {})}
    env = {key: translate(str(value), mounts) for key, value in environment.items()}
    healthcheck = None
    if "healthcheck" in spec:
        kind, *command = spec["healthcheck"]["test"]
        assert kind == "CMD", f"{name}: only exec-form healthchecks are translated"
        healthcheck = [sys.executable if command[0] == "python" else command[0], *command[1:]]
    cwd = mounts[_image_volume()] if "meshnode" in spec["image"] else None
    return ComposeService(name, spec["image"], network_of, argv, env, healthcheck, mounts, cwd)


def translate(value: str, mounts: Mapping[str, Path]) -> str:
    """`value` with each container path of a mount replaced by the path standing in for it.

    Only a path that starts a word (not ``/prometheus`` inside ``.../v1/prometheus/targets``), in
    one pass, so a replacement is never replaced again.
    """
    if not mounts:
        return value
    targets = "|".join(re.escape(target) for target in sorted(mounts, key=len, reverse=True))
    return re.sub(rf"(?<![\w.-])({targets})(?=/|$|\s|\")", lambda match: str(mounts[match[1]]), value)


def _final_stage() -> str:
    """The Dockerfile's last stage (the image that runs), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return text[text.rindex("\nFROM ") :]


def _image_volume() -> str:
    """The meshnode image's VOLUME: its data dir."""
    match = re.search(r"^VOLUME\s+\[\s*\"([^\"]+)\"\s*\]", _final_stage(), re.M)
    assert match is not None, f"no VOLUME in {DOCKERFILE}"
    return match[1]


def _image_env() -> dict[str, str]:
    """The meshnode image's MESHNODE_* ENV (its final stage), which a container starts with."""
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.*)$", _final_stage(), re.M):
        env.update(
            (key, value) for key, value in re.findall(r"(\w+)=(\S+)", line) if key.startswith("MESHNODE_")
        )
    return env


def process_env(service: ComposeService) -> dict[str, str]:
    """The environment to start `service` with: the tester's, less its MESHNODE_* variables (a
    container starts without them), with this interpreter's bin first on PATH (the image's is)."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("MESHNODE_")}
    base["PATH"] = f"{Path(sys.executable).parent}:{base.get('PATH', '/usr/bin:/bin')}"
    base["PYTHONUNBUFFERED"] = "1"
    return {**base, **service.env}


@contextlib.contextmanager
def hosts_files(net: Bridge, names: Mapping[str, str]) -> Iterator[None]:
    """Service name resolution in every host of `net`: ``names`` maps a service to its namespace.

    Writes /etc/netns/<namespace>/hosts (read by ``ip netns exec``) and removes what it made.
    """
    lines = ["127.0.0.1 localhost", "::1 localhost"]
    lines += [f"{net.address_of(namespace)} {service}" for service, namespace in names.items()]
    made_root = not NETNS_ETC.exists()
    made: list[Path] = []
    try:
        for namespace in net.hosts:
            folder = NETNS_ETC / namespace
            folder.mkdir(parents=True)
            made.append(folder)
            (folder / "hosts").write_text("\n".join(lines) + "\n")
        yield
    finally:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
        if made_root:
            with contextlib.suppress(OSError):
                NETNS_ETC.rmdir()  # only when empty: another run may be using it

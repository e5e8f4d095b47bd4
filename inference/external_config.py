"""The ``config.yaml`` of an external-server app folder, read and validated field by field.

The shape follows FedML's custom-image apps (``bootstrap`` and ``job`` commands, a ``port``, a
readiness path). meshnode runs the commands itself, in the folder, or with ``enable_custom_image:
true`` inside ``inference_image_name`` through docker or podman (``container.py``). Keys that only
mean something to FedML's platform are accepted and ignored, so a FedML folder loads unchanged; any
other unknown key is an error, so that a typo never silently becomes a default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshnode.inference.app_ref import AppLoadError, parse_app_ref, resolve_target
from meshnode.inference.container import ENV_NAME_PATTERN, RUNTIMES, image_problem

__all__ = ["ExternalConfig", "load_external_config", "needs_container"]

CONFIG_FILE = "config.yaml"

# FedML platform keys: registries, volumes and UI examples mean nothing here (nor an image name
# without enable_custom_image: FedML's default-image folders name its own backend image).
FEDML_IGNORED_KEYS = frozenset(
    {
        "auto_detect_public_ip",
        "computing",
        "container_run_command",
        "deploy_timeout_sec",
        "enable_serverless_container",
        "entry_point",
        "expose_subdomains",
        "inference_image",
        "liveness_probe",
        "registry_specs",
        "request_input_example",
        "volumes",
        "workspace_mount_path",
    }
)


@dataclass(frozen=True)
class ExternalConfig:
    """Every knob of an external-server app; defaults are what a FedML folder expects."""

    # Shell command that starts the HTTP server, run in `workspace` with $PORT set. Required.
    job: str
    # Shell command run once per setup before the job (installs, downloads); None runs nothing.
    bootstrap: str | None = None
    # Folder (relative to the app folder) the commands run in; FedML's `workspace`.
    workspace: str = "."
    # Port the job listens on at 127.0.0.1; 0 picks a free one per start and passes it as $PORT.
    port: int = 0
    # GET path that answers 2xx once the job can serve; None tries /ready, then /health.
    readiness_path: str | None = None
    # POST path that answers a request.
    predict_path: str = "/predict"
    # Longest wait for one answer (for a stream: between two pieces) before the request fails.
    request_timeout_s: float = 60.0
    # Longest wait from starting the job to a 2xx readiness answer; model loads take minutes.
    startup_timeout_s: float = 120.0
    # Longest the bootstrap command may run; installs can be slow, but a hung one must not hang setup.
    bootstrap_timeout_s: float = 600.0
    # Requests sent to the job at once: an HTTP server usually serves several, and one slow request
    # should not queue the rest behind it.
    max_concurrency: int = 4
    # Extra environment for both commands (FedML's `environment_variables`).
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    # Run bootstrap and job inside `inference_image_name` through docker or podman (FedML's keys);
    # placement then picks only nodes that gossip a container runtime.
    enable_custom_image: bool = False
    # The image, present on the node (built, imported or pulled by its owner: meshnode never pulls).
    inference_image_name: str | None = None
    # The runtime to use when the node has both; the other one serves when it has only that one.
    container_runtime: str | None = None
    # Caps of the container (--cpus, --memory); None: as many as the runtime gives.
    container_cpus: float | None = None
    container_memory_gb: float | None = None
    # FedML's use_gpu: in a custom image, the node's GPUs are passed into the container.
    use_gpu: bool = False

    @property
    def ready_within_s(self) -> float:
        """Longest wait from a start to ready: in a custom image the bootstrap runs in that start."""
        if self.enable_custom_image and self.bootstrap is not None:
            return self.startup_timeout_s + self.bootstrap_timeout_s
        return self.startup_timeout_s


def load_external_config(folder: Path) -> ExternalConfig:
    """Read ``folder/config.yaml``; raise AppLoadError naming the field that is wrong."""
    try:
        import yaml
    except ImportError as exc:  # a dependency of meshnode; only a broken install lacks it
        raise AppLoadError("external-server apps need PyYAML: pip install pyyaml") from exc
    path = folder / CONFIG_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AppLoadError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise AppLoadError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
    if not isinstance(raw, dict):
        raise AppLoadError(f"{path}: expected a mapping of keys, found {type(raw).__name__}")
    config = _parse(path, raw)
    workspace = folder / config.workspace
    if not workspace.is_dir():
        raise AppLoadError(f"{path}: workspace {config.workspace!r} is not a folder inside {folder}")
    if config.enable_custom_image:
        _check_mountable(path, folder, config.workspace)
    return config


def _check_mountable(path: Path, folder: Path, workspace: str) -> None:
    """A custom image sees the folder mounted as is: the workspace must lie inside it."""
    if any(mark in str(folder.resolve()) for mark in ":,"):
        raise AppLoadError(f"{path}: a folder whose path holds ':' or ',' cannot be mounted in a container")
    if Path(workspace).is_absolute() or os.path.normpath(workspace).split(os.sep)[0] == "..":
        raise AppLoadError(f"{path}: workspace {workspace!r} must lie inside the folder for a custom image")


def needs_container(ref: str, base_dir: Path | None = None) -> bool:
    """Whether app `ref` is a ``config.yaml`` folder that runs in a custom image; AppLoadError if
    its config is broken. Read where a deployment is declared, so placement finds it in the spec."""
    parsed = parse_app_ref(ref)
    if parsed.kind != "folder":
        return False
    folder = resolve_target(parsed.target, base_dir if base_dir is not None else Path.cwd())
    return load_external_config(folder).enable_custom_image


def _yaml_problem(exc: Exception) -> str:
    """The parser's complaint on one line, with where it is (line and column counted from 1).

    PyYAML's own text spans several lines (an excerpt with a caret under the spot), and a failed
    start is reported by its last line alone.
    """
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}" + (f" ({context})" if context else "")


def _default(name: str) -> Any:
    return ExternalConfig.__dataclass_fields__[name].default


def _parse(path: Path, raw: dict[Any, Any]) -> ExternalConfig:
    known = {name for name in ExternalConfig.__dataclass_fields__} | {"readiness_probe"}
    unknown = sorted(str(key) for key in raw if key not in known and key not in FEDML_IGNORED_KEYS)
    if unknown:
        raise AppLoadError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")

    def fail(key: str, wanted: str) -> AppLoadError:
        return AppLoadError(f"{path}: {key} must be {wanted}, not {raw[key]!r}")

    def text(key: str, *, required: bool = False) -> str | None:
        value = raw.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise AppLoadError(f"{path}: {key} must be a non-empty shell command, not {value!r}")
        return value

    def url_path(key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
            raise AppLoadError(f"{path}: {key} must be a URL path starting with '/', not {value!r}")
        return value

    def number(key: str) -> float:
        value = raw.get(key, _default(key))
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 86_400:
            raise fail(key, "a number of seconds in (0, 86400]")
        return float(value)

    def integer(key: str, low: int, high: int) -> int:
        value = raw.get(key, _default(key))
        if type(value) is not int or not low <= value <= high:
            raise fail(key, f"an integer in {low}..{high}")
        return value

    readiness = raw.get("readiness_path")
    if readiness is not None:
        url_path("readiness_path", readiness)
    if "readiness_probe" in raw:
        if readiness is not None:
            raise AppLoadError(f"{path}: give readiness_path or readiness_probe, not both")
        probe = raw["readiness_probe"]
        http_get = probe.get("httpGet") if isinstance(probe, dict) else None
        probe_path = http_get.get("path") if isinstance(http_get, dict) else None
        if not isinstance(probe_path, str):
            raise fail("readiness_probe", "a mapping like {httpGet: {path: /ready}}")
        readiness = url_path("readiness_probe.httpGet.path", probe_path) if probe_path else None

    workspace = raw.get("workspace", _default("workspace"))
    if not isinstance(workspace, str) or not workspace:
        raise fail("workspace", "a folder path relative to the app folder")

    env = raw.get("environment_variables") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float | bool) for k, v in env.items()
    ):
        raise fail("environment_variables", "a mapping of names to strings or numbers")

    job = text("job", required=True)
    assert job is not None  # required=True never returns None
    return ExternalConfig(
        **_custom_image(path, raw, env),
        job=job,
        bootstrap=text("bootstrap"),
        workspace=workspace,
        port=integer("port", 0, 65_535),
        readiness_path=readiness,
        predict_path=url_path("predict_path", raw.get("predict_path", _default("predict_path"))),
        request_timeout_s=number("request_timeout_s"),
        startup_timeout_s=number("startup_timeout_s"),
        bootstrap_timeout_s=number("bootstrap_timeout_s"),
        max_concurrency=integer("max_concurrency", 1, 1024),
        environment_variables={k: str(v) for k, v in env.items()},
    )


# Keys that mean something only in a custom image.
CONTAINER_KEYS = ("container_cpus", "container_memory_gb", "container_runtime")


def _custom_image(path: Path, raw: dict[Any, Any], env: dict[Any, Any]) -> dict[str, Any]:
    """The custom-image fields, checked: given only with ``enable_custom_image: true``."""
    enabled = raw.get("enable_custom_image", False)
    if not isinstance(enabled, bool):
        raise AppLoadError(f"{path}: enable_custom_image must be true or false, not {enabled!r}")
    use_gpu = raw.get("use_gpu", False)
    if not isinstance(use_gpu, bool):
        raise AppLoadError(f"{path}: use_gpu must be true or false, not {use_gpu!r}")
    container_keys = [key for key in CONTAINER_KEYS if key in raw]
    if not enabled:
        if container_keys:
            raise AppLoadError(f"{path}: {', '.join(container_keys)} need(s) enable_custom_image: true")
        return {"use_gpu": use_gpu}
    image = raw.get("inference_image_name")
    if (problem := image_problem(image)) is not None:
        raise AppLoadError(f"{path}: inference_image_name must be {problem}, not {image!r}")
    runtime = raw.get("container_runtime")
    if runtime is not None and runtime not in RUNTIMES:
        raise AppLoadError(f"{path}: container_runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    bad_names = sorted(str(name) for name in env if not ENV_NAME_PATTERN.fullmatch(str(name)))
    if bad_names:
        raise AppLoadError(
            f"{path}: environment_variables names must be letters, digits and _ (not starting with a "
            f"digit) to enter a container: {', '.join(bad_names)}"
        )

    def limit(key: str, high: float) -> float | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= high:
            raise AppLoadError(f"{path}: {key} must be a number in (0, {high:g}], not {value!r}")
        return float(value)

    return {
        "enable_custom_image": True,
        "inference_image_name": image,
        "container_runtime": runtime,
        "container_cpus": limit("container_cpus", 1024),
        "container_memory_gb": limit("container_memory_gb", 1e6),
        "use_gpu": use_gpu,
    }

"""Apps in a custom image: a ``config.yaml`` app's commands run in a container, through docker or podman.

With ``enable_custom_image: true`` (FedML's key) an external-server app (``external.py``) starts its
job as ``podman run`` or ``docker run`` of ``inference_image_name`` instead of a shell on the host.
This module holds the parts of that which are decisions, as pure functions tested to the letter:
which runtime to use (``runtime_order``), the ``run``, ``stop`` and ``rm`` command lines
(``run_command``, ``stop_command``, ``remove_command``), the environment the CLI gets
(``client_env``), the container's name (``container_name``), and whether an image reference is
plausible (``image_problem``). The shells are ``detect_runtimes`` (which CLIs answer, gossiped as the
node's capability), ``choose_runtime`` (the worker's pick at setup) and ``ContainerJob`` (one running
container, stopped with the runtime's own ``stop``).

Invariants of every container started here:

- ``--rm``, named after the replica (one per replica; a start first removes a leftover of that name,
  left by a worker killed with -9), ``--init`` so the job's children are reaped and signals reach it;
- the app folder mounted read-only at ``/app``, the working directory its ``workspace`` there;
- the job's port published on 127.0.0.1 only (``-p 127.0.0.1:HOST:CONTAINER``), so readiness
  probes and proxying stay what they are for a job on the host;
- an environment of named variables only (``-e NAME``, the values in the CLI's own environment, so
  they never show in a process list); nothing else of the host's environment enters;
- ``--pull=never``: an image is built or pulled by the node's owner beforehand, never fetched
  during a start (a pull takes minutes and would count against the start-up timeout);
- ``--entrypoint /bin/sh``: the image's own entry point never wraps the commands. The bootstrap and
  then the job run in one ``sh -c``, so whatever the bootstrap installs is there for the job; a
  failed bootstrap ends the container with its exit code and says so in the output.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from meshnode.inference.process_group import STOP_GRACE_S, ProcessGroup

if TYPE_CHECKING:  # external_config imports this module's names at run time
    from meshnode.inference.external_config import ExternalConfig

__all__ = [
    "MOUNT_PATH",
    "RUNTIMES",
    "ContainerError",
    "ContainerJob",
    "ContainerRun",
    "choose_runtime",
    "client_env",
    "container_name",
    "detect_runtimes",
    "image_problem",
    "remove_command",
    "run_command",
    "run_for",
    "runtime_order",
    "stop_command",
]

# The CLIs meshnode drives, in the order tried when the app prefers none: podman first, since it
# needs no daemon running as root.
RUNTIMES = ("podman", "docker")
# Where the app folder appears inside the container.
MOUNT_PATH = "/app"
# A runtime that does not answer `version` within this long counts as absent (a docker CLI whose
# daemon hangs); the answer takes tens of milliseconds when it works.
PROBE_TIMEOUT_S = 5.0
# Longest a `stop` (beyond its own grace) or `rm` may take before it is abandoned.
CLI_TIMEOUT_S = 20.0
# The host's variables the CLI itself needs (where the daemon or podman's storage is, its config);
# they configure the client and are not passed into the container.
CLIENT_ENV_KEYS = (
    "CONTAINERS_CONF",
    "CONTAINERS_REGISTRIES_CONF",
    "CONTAINERS_STORAGE_CONF",
    "CONTAINER_CONNECTION",
    "CONTAINER_HOST",
    "DOCKER_CERT_PATH",
    "DOCKER_CONFIG",
    "DOCKER_CONTEXT",
    "DOCKER_HOST",
    "DOCKER_TLS_VERIFY",
    "HOME",
    "LANG",
    "LOGNAME",
    "PATH",
    "REGISTRY_AUTH_FILE",
    "TMPDIR",
    "USER",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_RUNTIME_DIR",
)
MAX_IMAGE_CHARS = 512
# The image reference grammar of the distribution project, loosely: [registry[:port]/]path[:tag][@digest].
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_REGISTRY = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?/"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_PATTERN = re.compile(rf"(?:{_REGISTRY})?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Runs in the container as `sh -c SCRIPT meshnode-app BOOTSTRAP JOB` ($1 empty: no bootstrap).
RUN_SCRIPT = (
    'if [ -n "$1" ]; then sh -c "$1" || { status=$?; '
    'echo "meshnode: bootstrap exited with code $status" >&2; exit "$status"; }; fi; '
    'exec sh -c "$2"'
)


class ContainerError(RuntimeError):
    """No runtime can run the app's container here, or its folder cannot be mounted."""


def image_problem(image: object) -> str | None:
    """Why `image` is not a plausible image reference (e.g. ``python:3.11-slim``), or None."""
    if not isinstance(image, str) or not image:
        return "a non-empty image reference such as python:3.11-slim or localhost/my-model:1"
    if len(image) > MAX_IMAGE_CHARS:
        return f"an image reference of at most {MAX_IMAGE_CHARS} characters"
    if not IMAGE_PATTERN.fullmatch(image):
        return (
            "an image reference: [registry[:port]/]name[:tag][@digest], lower-case name parts, "
            "no spaces or shell characters"
        )
    return None


def runtime_order(preference: str | None) -> tuple[str, ...]:
    """The runtimes to try, the app's preference first (a preference, not a requirement)."""
    if preference is None:
        return RUNTIMES
    return (preference, *(name for name in RUNTIMES if name != preference))


def container_name(replica_id: str | None, folder_name: str, pid: int) -> str:
    """The container's name: from the replica id (stable across its restarts), else folder and pid."""
    base = replica_id if replica_id else f"{folder_name}-{pid}"
    return "meshnode-" + (_NAME_UNSAFE.sub("-", base).strip("-.") or "app")[:100]


@dataclass(frozen=True)
class ContainerRun:
    """One start of an app's container: everything its ``run`` command line says."""

    runtime: str  # "docker" or "podman"
    executable: str  # the CLI, as found on PATH
    name: str
    image: str
    folder: Path  # the app folder on the host, mounted read-only at MOUNT_PATH
    workspace: str  # relative to the folder, already checked to stay inside it
    host_port: int  # on 127.0.0.1
    container_port: int  # the job's $PORT inside
    env_names: tuple[str, ...]  # passed by name; values come from the CLI's environment
    bootstrap: str | None
    job: str
    cpus: float | None = None
    memory_bytes: int | None = None
    gpus: bool = False


def run_command(run: ContainerRun) -> list[str]:
    """The ``docker run`` / ``podman run`` command line of `run` (an argv: no shell parses it)."""
    workdir = MOUNT_PATH if run.workspace in ("", ".") else f"{MOUNT_PATH}/{run.workspace}"
    command = [
        run.executable, "run", "--rm", "--init",
        "--name", run.name,
        "--pull=never",
        "--security-opt", "no-new-privileges",
        "--volume", f"{run.folder}:{MOUNT_PATH}:ro",
        "--workdir", workdir,
        "--publish", f"127.0.0.1:{run.host_port}:{run.container_port}",
    ]  # fmt: skip
    for name in run.env_names:
        command += ["--env", name]
    if run.cpus is not None:
        command += ["--cpus", f"{run.cpus:g}"]
    if run.memory_bytes is not None:
        command += ["--memory", f"{run.memory_bytes}b"]
    if run.gpus:
        # docker's NVIDIA hook; podman reaches GPUs through CDI (nvidia-ctk cdi generate).
        command += ["--gpus", "all"] if run.runtime == "docker" else ["--device", "nvidia.com/gpu=all"]
    command += ["--entrypoint", "/bin/sh", run.image, "-c", RUN_SCRIPT, "meshnode-app"]
    return [*command, run.bootstrap or "", run.job]


def stop_command(executable: str, name: str, grace_s: float) -> list[str]:
    """Stop the container: SIGTERM to its init, SIGKILL after `grace_s` (whole seconds, rounded up)."""
    return [executable, "stop", "-t", str(max(0, math.ceil(grace_s))), name]


def remove_command(executable: str, name: str) -> list[str]:
    """Kill and remove the container, if it is still there."""
    return [executable, "rm", "--force", name]


def run_for(
    config: ExternalConfig, folder: Path, runtime: tuple[str, str], name: str, host_port: int
) -> tuple[ContainerRun, dict[str, str]]:
    """The container of one start of `config`'s job, and the variables it gets (by name and value).

    Inside, the job listens on all of the container's interfaces (``$HOST`` 0.0.0.0: a published
    port reaches it there) at ``$PORT``: the config's ``port``, or the host port when that is 0.
    """
    assert config.inference_image_name is not None  # the config requires it with enable_custom_image
    container_port = config.port or host_port
    env = {"HOST": "0.0.0.0", "PYTHON": "python3", **config.environment_variables}
    env["PORT"] = str(container_port)  # last, so that the port we publish is the port it uses
    memory = config.container_memory_gb
    run = ContainerRun(
        runtime=runtime[0],
        executable=runtime[1],
        name=name,
        image=config.inference_image_name,
        folder=folder,
        workspace=PurePosixPath(os.path.normpath(config.workspace)).as_posix(),
        host_port=host_port,
        container_port=container_port,
        env_names=tuple(env),
        bootstrap=config.bootstrap,
        job=config.job,
        cpus=config.container_cpus,
        memory_bytes=None if memory is None else int(memory * 1e9),
        gpus=config.use_gpu,
    )
    return run, env


def client_env(host: Mapping[str, str], container: Mapping[str, str]) -> dict[str, str]:
    """The CLI's environment: its own settings from the host, and the container's variables by value."""
    return {**{key: host[key] for key in CLIENT_ENV_KEYS if key in host}, **container}


def version_command(executable: str, runtime: str) -> list[str]:
    """A command that succeeds only when the runtime answers (docker: its daemon too)."""
    return [executable, "version", "--format", "json" if runtime == "podman" else "{{json .}}"]


# -- shells --------------------------------------------------------------------------------------


async def detect_runtimes(timeout_s: float = PROBE_TIMEOUT_S) -> tuple[str, ...]:
    """The runtimes whose CLI is installed and answers, in RUNTIMES order; never blocks the loop."""
    answers = await asyncio.gather(*(_answers(name, timeout_s) for name in RUNTIMES))
    return tuple(name for name, ok in zip(RUNTIMES, answers, strict=True) if ok)


async def _answers(runtime: str, timeout_s: float) -> bool:
    executable = shutil.which(runtime)
    if executable is None:
        return False
    try:
        process = await asyncio.create_subprocess_exec(
            *version_command(executable, runtime),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return False
    try:
        async with asyncio.timeout(timeout_s):
            return await process.wait() == 0
    except TimeoutError:
        return False
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def choose_runtime(preference: str | None, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[str, str]:
    """The first runtime in `runtime_order` that answers, as (name, executable); ContainerError if none."""
    tried = []
    for runtime in runtime_order(preference):
        executable = shutil.which(runtime)
        if executable is None:
            tried.append(f"{runtime}: not installed")
            continue
        problem = _probe(executable, runtime, timeout_s)
        if problem is None:
            return runtime, executable
        tried.append(f"{runtime}: {problem}")
    raise ContainerError(f"no container runtime (docker or podman) answers on this node ({'; '.join(tried)})")


def _probe(executable: str, runtime: str, timeout_s: float) -> str | None:
    """Why the runtime does not answer, or None when it does."""
    try:
        done = subprocess.run(
            version_command(executable, runtime),
            capture_output=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            env=client_env(os.environ, {}),
        )
    except subprocess.TimeoutExpired:
        return f"`{runtime} version` did not answer within {timeout_s:g} s"
    except OSError as exc:
        return f"cannot run {executable}: {exc}"
    if done.returncode == 0:
        return None
    lines = done.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
    return f"`{runtime} version` exited with code {done.returncode}: {lines[-1]}"


def _quietly(command: Iterable[str], timeout_s: float) -> None:
    """Run a CLI command whose failure is expected at times (the container is already gone)."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout_s,
            env=client_env(os.environ, {}),
        )


class ContainerJob(ProcessGroup):
    """A running container: the ``run`` client as a process group, stopped through the runtime.

    The client stays attached, so the job's output is logged like a host job's and the client exits
    with the container (the watchdog sees that as the job's exit). Stopping asks the runtime to stop
    the container (SIGTERM, SIGKILL after the grace), removes whatever is left, then stops the client.
    """

    def __init__(self, run: ContainerRun, *, env: Mapping[str, str], label: str) -> None:
        self.run = run
        # A worker killed with -9 may have left a container of this name (docker's lives on in the
        # daemon); the replica's name is its own, so the leftover is removed.
        _quietly(remove_command(run.executable, run.name), CLI_TIMEOUT_S)
        command = shlex.join(["exec", *run_command(run)])
        super().__init__(command, cwd=run.folder, env=env, label=label)

    def stop(self, grace_s: float | None = None) -> None:
        """``stop -t`` the container, ``rm --force`` it, then stop the client's process group."""
        grace_s = STOP_GRACE_S if grace_s is None else grace_s
        _quietly(stop_command(self.run.executable, self.run.name, grace_s), grace_s + CLI_TIMEOUT_S)
        _quietly(remove_command(self.run.executable, self.run.name), CLI_TIMEOUT_S)
        super().stop(grace_s)

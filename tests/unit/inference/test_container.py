"""Apps in a custom image: the exact command lines, the environment, names, images and runtime choice."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from meshnode.inference import container, devices
from meshnode.inference.container import (
    RUN_SCRIPT,
    ContainerError,
    ContainerRun,
    choose_runtime,
    client_env,
    container_name,
    image_problem,
    remove_command,
    run_command,
    run_for,
    runtime_order,
    stop_command,
    version_command,
)
from meshnode.inference.devices import DeviceInfo
from meshnode.inference.external_config import ExternalConfig

FOLDER = Path("/srv/apps/model")


def a_run(**changes: Any) -> ContainerRun:
    fields: dict[str, Any] = {
        "runtime": "podman",
        "executable": "/usr/bin/podman",
        "name": "meshnode-model-1a2b3c4d",
        "image": "localhost/model:1",
        "folder": FOLDER,
        "workspace": ".",
        "host_port": 41000,
        "container_port": 8000,
        "env_names": ("HOST", "PYTHON", "PORT"),
        "bootstrap": "pip install -r requirements.txt",
        "job": "exec python3 server.py",
    }
    return ContainerRun(**{**fields, **changes})


def test_the_run_command_line_to_the_letter() -> None:
    assert run_command(a_run()) == [
        "/usr/bin/podman", "run", "--rm", "--init",
        "--name", "meshnode-model-1a2b3c4d",
        "--pull=never",
        "--security-opt", "no-new-privileges",
        "--volume", "/srv/apps/model:/app:ro",
        "--workdir", "/app",
        "--publish", "127.0.0.1:41000:8000",
        "--env", "HOST", "--env", "PYTHON", "--env", "PORT",
        "--entrypoint", "/bin/sh", "localhost/model:1", "-c", RUN_SCRIPT, "meshnode-app",
        "pip install -r requirements.txt", "exec python3 server.py",
    ]  # fmt: skip


def test_limits_gpus_workspace_and_no_bootstrap() -> None:
    docker = run_command(
        a_run(
            runtime="docker",
            executable="/usr/bin/docker",
            workspace="src/server",
            cpus=1.5,
            memory_bytes=2_000_000_000,
            gpus=True,
            bootstrap=None,
        )
    )
    assert docker[docker.index("--workdir") + 1] == "/app/src/server"
    assert docker[docker.index("--cpus") + 1] == "1.5"
    assert docker[docker.index("--memory") + 1] == "2000000000b"
    assert docker[docker.index("--gpus") + 1] == "all"
    assert docker[-2:] == ["", "exec python3 server.py"]  # "" : no bootstrap
    podman = run_command(a_run(gpus=True))
    assert podman[podman.index("--device") + 1] == "nvidia.com/gpu=all"
    assert "--gpus" not in podman


def test_the_run_script_runs_bootstrap_then_job_and_stops_at_a_failed_bootstrap(tmp_path: Path) -> None:
    def run(bootstrap: str, job: str) -> subprocess.CompletedProcess[str]:
        command = ["sh", "-c", RUN_SCRIPT, "meshnode-app", bootstrap, job]
        return subprocess.run(command, capture_output=True, text=True, timeout=10, cwd=tmp_path)

    both = run("echo boot > marker", "cat marker; echo job")
    assert (both.returncode, both.stdout) == (0, "boot\njob\n")
    failed = run("exit 7", "echo never")
    assert failed.returncode == 7
    assert failed.stdout == "" and "meshnode: bootstrap exited with code 7" in failed.stderr
    assert run("", "echo alone").stdout == "alone\n"


def test_stop_and_remove_commands() -> None:
    assert stop_command("/usr/bin/docker", "meshnode-x", 5.0) == [
        "/usr/bin/docker",
        "stop",
        "-t",
        "5",
        "meshnode-x",
    ]
    assert stop_command("docker", "meshnode-x", 0.2) == ["docker", "stop", "-t", "1", "meshnode-x"]
    assert remove_command("podman", "meshnode-x") == ["podman", "rm", "--force", "meshnode-x"]
    assert version_command("/bin/podman", "podman") == ["/bin/podman", "version", "--format", "json"]
    assert version_command("/bin/docker", "docker") == ["/bin/docker", "version", "--format", "{{json .}}"]


def test_run_for_publishes_a_host_port_and_passes_only_named_variables() -> None:
    config = ExternalConfig(
        job="exec python3 server.py",
        bootstrap="true",
        workspace="./src/",
        enable_custom_image=True,
        inference_image_name="python:3.11-slim",
        environment_variables={"MODEL": "tiny", "PORT": "1"},
        container_memory_gb=0.5,
    )
    run, env = run_for(config, FOLDER, ("docker", "/usr/bin/docker"), "meshnode-a", 41000)
    assert (run.host_port, run.container_port, run.workspace) == (41000, 41000, "src")
    assert env == {"HOST": "0.0.0.0", "PYTHON": "python3", "MODEL": "tiny", "PORT": "41000"}
    assert run.env_names == ("HOST", "PYTHON", "MODEL", "PORT")
    assert (run.image, run.memory_bytes, run.cpus, run.gpus) == ("python:3.11-slim", 500_000_000, None, False)
    fixed, _ = run_for(
        ExternalConfig(job="j", port=2345, enable_custom_image=True, inference_image_name="m"),
        FOLDER,
        ("podman", "podman"),
        "n",
        41001,
    )
    assert (fixed.host_port, fixed.container_port, fixed.workspace) == (41001, 2345, ".")


def test_the_client_gets_its_own_settings_and_the_container_variables_only() -> None:
    host = {"PATH": "/usr/bin", "HOME": "/root", "SECRET_TOKEN": "x", "DOCKER_HOST": "unix:///d.sock"}
    env = client_env(host, {"PORT": "41000", "MODEL": "tiny"})
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "DOCKER_HOST": "unix:///d.sock",
        "PORT": "41000",
        "MODEL": "tiny",
    }


@pytest.mark.parametrize(
    "image",
    [
        "python",
        "python:3.11-slim",
        "localhost/meshnode-test:1",
        "registry.example.com:5000/team/model-server:v2.1_rc",
        "ghcr.io/org/a__b.c-d/e",
        "python@sha256:" + "a" * 64,
        "docker.io/library/python:3.11@sha256:" + "0f" * 32,
    ],
)
def test_plausible_images(image: str) -> None:
    assert image_problem(image) is None


@pytest.mark.parametrize(
    "image",
    [
        "",
        None,
        3,
        "Python",
        "a b",
        "x;rm -rf /",
        "$(id)",
        "`id`",
        "-v",
        "--privileged",
        "x:",
        "a//b",
        "x:tag with space",
        "a" * 600,
    ],
)
def test_implausible_images(image: object) -> None:
    assert image_problem(image) is not None


def test_runtime_order_puts_the_preference_first() -> None:
    assert runtime_order(None) == ("podman", "docker")
    assert runtime_order("docker") == ("docker", "podman")
    assert runtime_order("podman") == ("podman", "docker")


def test_container_names() -> None:
    assert container_name("echo-1a2b3c4d", "app", 7) == "meshnode-echo-1a2b3c4d"
    assert container_name(None, "my app", 42) == "meshnode-my-app-42"
    assert container_name("../weird name!", "app", 1) == "meshnode-weird-name"
    assert len(container_name("x" * 300, "app", 1)) == len("meshnode-") + 100


Fake = Callable[[Sequence[str]], subprocess.CompletedProcess[bytes]]


def fake_cli(monkeypatch: pytest.MonkeyPatch, installed: dict[str, Fake]) -> list[list[str]]:
    """`installed` maps a runtime to what its `version` does; returns the commands run."""
    ran: list[list[str]] = []
    monkeypatch.setattr(
        container.shutil, "which", lambda name: f"/fake/{name}" if name in installed else None
    )

    def run(command: Sequence[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        ran.append(list(command))
        return installed[Path(command[0]).name](command)

    monkeypatch.setattr(container.subprocess, "run", run)
    return ran


def answers(command: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.CompletedProcess(command, 0, b"{}", b"")


def no_daemon(command: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    message = b"Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is it running?\n"
    return subprocess.CompletedProcess(command, 1, b"", message)


def hangs(command: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    raise subprocess.TimeoutExpired(command, 5.0)


def test_choose_runtime_takes_the_preference_when_it_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = fake_cli(monkeypatch, {"podman": answers, "docker": answers})
    assert choose_runtime("docker") == ("docker", "/fake/docker")
    assert ran == [["/fake/docker", "version", "--format", "{{json .}}"]]
    assert choose_runtime(None) == ("podman", "/fake/podman")


def test_choose_runtime_falls_back_to_the_other(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cli(monkeypatch, {"podman": answers, "docker": no_daemon})
    assert choose_runtime("docker") == ("podman", "/fake/podman")


def test_no_runtime_says_what_was_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cli(monkeypatch, {"docker": no_daemon})
    with pytest.raises(ContainerError) as caught:
        choose_runtime(None)
    assert str(caught.value) == (
        "no container runtime (docker or podman) answers on this node (podman: not installed; "
        "docker: `docker version` exited with code 1: Cannot connect to the Docker daemon at "
        "unix:///var/run/docker.sock. Is it running?)"
    )
    fake_cli(monkeypatch, {"podman": hangs})
    with pytest.raises(
        ContainerError, match="podman: `podman version` did not answer within 5 s; docker: not"
    ):
        choose_runtime(None)


async def test_detect_runtimes_keeps_the_clis_that_answer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    scripts = {"podman": "exit 0", "docker": "echo 'Cannot connect to the Docker daemon' >&2; exit 1"}
    for name, body in scripts.items():
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setattr(container.shutil, "which", lambda name: str(tmp_path / name))
    assert await container.detect_runtimes() == ("podman",)
    (tmp_path / "docker").write_text("#!/bin/sh\nexit 0\n")
    assert await container.detect_runtimes() == ("podman", "docker")
    (tmp_path / "podman").write_text("#!/bin/sh\nexec sleep 30\n")  # hangs: counts as absent
    assert await container.detect_runtimes(timeout_s=0.2) == ("docker",)
    monkeypatch.setattr(container.shutil, "which", lambda name: None)
    assert await container.detect_runtimes() == ()


def cpu_only(runtimes: tuple[str, ...] = ()) -> DeviceInfo:
    return DeviceInfo("cpu", 4, 8 * 10**9, (), None, container_runtimes=runtimes)


def test_the_capability_is_gossiped_only_when_there_is_one() -> None:
    assert "container_runtimes" not in cpu_only().to_wire()
    wire = cpu_only(("podman", "docker")).to_wire()
    assert wire["container_runtimes"] == ["podman", "docker"]
    assert DeviceInfo.from_wire(wire) == cpu_only(("podman", "docker"))
    assert DeviceInfo.from_wire(cpu_only().to_wire()) == cpu_only()
    assert DeviceInfo.from_wire({**wire, "container_runtimes": ["nerdctl", "podman"]}) == cpu_only(
        ("podman",)
    )
    with pytest.raises(ValueError, match="container_runtimes"):
        DeviceInfo.from_wire({**wire, "container_runtimes": "podman"})


async def test_full_detection_adds_the_runtimes(monkeypatch: pytest.MonkeyPatch) -> None:
    async def found(timeout_s: float = 0.0) -> tuple[str, ...]:
        return ("docker",)

    async def torch_probe(timeout_s: float, cache_dir: Path | None) -> DeviceInfo:
        return cpu_only()

    monkeypatch.setattr(devices, "detect_runtimes", found)
    monkeypatch.setattr(devices, "_detect_torch", torch_probe)
    assert await devices.detect_full() == cpu_only(("docker",))

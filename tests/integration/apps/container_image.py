"""A container image with Python made on this machine, with no registry, for tests of apps in a custom image.

``build_python_image`` copies this machine's Python (its interpreter, standard library and the shared
libraries they load, as ``ldd`` lists them) and ``/bin/sh`` into a root filesystem and imports it
(``podman import``, ``docker import``): a few seconds and about 40 MB, nothing downloaded.
``runtime_settings`` finds how the runtime can run a container here: its defaults, or for podman a
``containers.conf`` (passed to podman as
``$CONTAINERS_CONF``) that asks for what a sandbox without ``CAP_SYS_RESOURCE`` can grant (file and
process limits no higher than the present ones) and runc instead of crun (crun refuses a host whose
cgroups are in hybrid v1/v2 mode). Both answer why not when they cannot: the test then skips with it.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import tarfile
from pathlib import Path

__all__ = ["build_python_image", "runtime_settings"]

# Parts of the standard library no test app needs (they double the image).
_SKIP = shutil.ignore_patterns(
    "__pycache__", "site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter",
    "turtledemo", "ensurepip", "lib2to3", "config-*", "pydoc_data",
)  # fmt: skip
_LDD_PATH = re.compile(r"(/\S+) \(0x[0-9a-f]+\)")
CLI_TIMEOUT_S = 120.0


def build_python_image(cli: str, tag: str, workdir: Path) -> str | None:
    """Import an image `tag` with python3 and sh; None, or why it could not be made."""
    python = Path("/usr/bin/python3").resolve()
    if not python.is_file():
        python = Path(shutil.which("python3") or "/nonexistent").resolve()
    if not python.is_file() or shutil.which("ldd") is None:
        return "no python3 and ldd on this machine to copy into an image"
    found = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
    )  # fmt: skip
    stdlib = Path(found.stdout.strip())
    if found.returncode != 0 or not stdlib.is_dir():
        return f"cannot find {python}'s standard library: {found.stderr.strip()}"
    root = workdir / "rootfs"
    shell = Path("/bin/sh").resolve()
    binaries = [python, shell, *sorted((stdlib / "lib-dynload").glob("*.so"))]
    for path in [python, shell, *_libraries(binaries)]:
        _copy(path, root / path.relative_to("/"))
    _copy(shell, root / "bin" / "sh")
    shutil.copytree(stdlib, root / stdlib.relative_to("/"), ignore=_SKIP, symlinks=True, dirs_exist_ok=True)
    (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    if not (root / "usr/bin/python3").exists():
        (root / "usr/bin/python3").symlink_to(python)
    for folder in ("tmp", "app", "etc", "proc", "sys", "dev"):
        (root / folder).mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)
    archive = workdir / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".")
    done = subprocess.run(
        [cli, "import", str(archive), tag], capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )
    if done.returncode != 0:
        return f"`{Path(cli).name} import` failed ({done.returncode}): {done.stderr.strip()}"
    return None


def runtime_settings(cli: str, runtime: str, image: str, workdir: Path) -> tuple[dict[str, str], str | None]:
    """The environment under which the runtime runs `image` here ({} or a CONTAINERS_CONF), and why not."""
    soft_files, hard_files = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft_procs, hard_procs = resource.getrlimit(resource.RLIMIT_NPROC)
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    procs = min(hard_procs if hard_procs > 0 else pid_max, pid_max)
    limits = (
        "[containers]\n"
        f'default_ulimits = ["nofile={soft_files}:{hard_files}", "nproc={min(soft_procs, procs)}:{procs}"]\n'
    )
    candidates = {f"{runtime}'s defaults": ""}
    if runtime == "podman":  # containers.conf is podman's; docker's daemon is configured by its owner
        candidates["present limits"] = limits
        candidates["present limits and runc"] = limits + '[engine]\nruntime = "runc"\n'
    failures = []
    for index, (what, conf) in enumerate(candidates.items()):
        env: dict[str, str] = {}
        if conf:
            path = workdir / f"containers-{index}.conf"
            path.write_text(conf)
            env = {"CONTAINERS_CONF": str(path)}
        command = [cli, "run", "--rm", "--pull=never", image, "/bin/sh", "-c", "echo ok"]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env={**os.environ, **env}
        )
        if done.returncode == 0 and done.stdout.strip() == "ok":
            return env, None
        failures.append(f"{what}: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return {}, f"{runtime} cannot run a container here (" + "; ".join(failures) + ")"


def _libraries(binaries: list[Path]) -> set[Path]:
    done = subprocess.run(
        ["ldd", *map(str, binaries)], capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )  # exits 1 when one file is not dynamic (a static sh): the others are listed all the same
    return {Path(match) for match in _LDD_PATH.findall(done.stdout) if Path(match).is_file()}


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copy2(source, target)  # follows symlinks: the library itself, under the name ldd gave

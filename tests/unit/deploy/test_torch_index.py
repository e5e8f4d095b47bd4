"""scripts/torch_index.sh picks the torch index by what the machine has, and the variables override it.

Each case runs the script with a fake ``nvidia-smi`` first on PATH (one that sees a GPU, or one that
fails as it does with no driver, so a real one on the tester's machine never decides), a fake driver
folder, and a fake ``python3`` standing in for the probe of the PyTorch CPU index (answers, or not):
no network, no GPU needed.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "torch_index.sh"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
BASH = shutil.which("bash") or "/bin/bash"


@dataclass(frozen=True)
class Choice:
    """What the script printed: the index URL ("" for pip's default), its explanation, its exit code."""

    index: str
    said: str
    code: int


def _fake(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _choose(
    tmp_path: Path,
    *,
    gpu: bool = False,
    driver: bool = False,
    cpu_index_answers: bool = True,
    uname: str = "Linux",
    env: dict[str, str] | None = None,
) -> Choice:
    """Run the script on a machine made of fakes."""
    fakes = tmp_path / "bin"
    fakes.mkdir(exist_ok=True)
    # nvidia-smi exits 9 when it cannot talk to a driver ("NVIDIA-SMI has failed ...").
    _fake(fakes, "nvidia-smi", 'echo "GPU 0: NVIDIA H100 (UUID: GPU-0)"' if gpu else "exit 9")
    # The probe reads its program from stdin; the fake records that it ran and answers or not.
    _fake(
        fakes,
        "python3",
        f'cat >/dev/null; echo "$@" >> "{tmp_path}/probed"; exit {0 if cpu_index_answers else 1}',
    )
    _fake(fakes, "uname", f"echo {uname}")
    driver_dir = tmp_path / "proc-driver-nvidia"
    if driver:
        driver_dir.mkdir(exist_ok=True)
    full_env = {"PATH": f"{fakes}:/usr/bin:/bin", "MESHNODE_NVIDIA_PROC_DIR": str(driver_dir), **(env or {})}
    done = subprocess.run(
        [BASH, str(SCRIPT)], env=full_env, capture_output=True, text=True, timeout=30, check=False
    )
    return Choice(done.stdout.strip(), done.stderr.strip(), done.returncode)


def _probed(tmp_path: Path) -> list[str]:
    probed = tmp_path / "probed"
    return probed.read_text().split() if probed.exists() else []


def test_no_gpu_takes_the_cpu_index(tmp_path: Path) -> None:
    choice = _choose(tmp_path)
    assert choice == Choice(CPU_INDEX, choice.said, 0)
    assert "CPU build" in choice.said and "no NVIDIA GPU" in choice.said
    assert _probed(tmp_path) == ["-", f"{CPU_INDEX}/torch/"]


def test_no_gpu_and_no_cpu_index_falls_back_to_pips_own_configuration_and_says_so(tmp_path: Path) -> None:
    choice = _choose(tmp_path, cpu_index_answers=False)
    assert (choice.index, choice.code) == ("", 0)
    assert "does not answer" in choice.said and "CUDA build" in choice.said
    assert "MESHNODE_TORCH_INDEX_URL" in choice.said


def test_a_gpu_seen_by_nvidia_smi_takes_the_default_cuda_index(tmp_path: Path) -> None:
    choice = _choose(tmp_path, gpu=True)
    assert (choice.index, choice.code) == ("", 0)
    assert "CUDA build" in choice.said and "nvidia-smi" in choice.said
    assert _probed(tmp_path) == []


def test_a_loaded_driver_without_nvidia_smi_counts_as_a_gpu(tmp_path: Path) -> None:
    choice = _choose(tmp_path, driver=True)
    assert (choice.index, choice.code) == ("", 0)
    assert "CUDA build" in choice.said and "proc-driver-nvidia" in choice.said


@pytest.mark.parametrize(("gpu", "forced", "index"), [(True, "cpu", CPU_INDEX), (False, "cuda", "")])
def test_meshnode_torch_forces_the_build(tmp_path: Path, gpu: bool, forced: str, index: str) -> None:
    choice = _choose(tmp_path, gpu=gpu, env={"MESHNODE_TORCH": forced})
    assert (choice.index, choice.code) == (index, 0)
    assert f"MESHNODE_TORCH={forced}" in choice.said


def test_the_index_url_variable_wins_over_everything_and_is_not_probed(tmp_path: Path) -> None:
    url = "https://mirror.example/torch-cu126"
    choice = _choose(
        tmp_path,
        gpu=False,
        cpu_index_answers=False,
        env={"MESHNODE_TORCH_INDEX_URL": url, "MESHNODE_TORCH": "cpu"},
    )
    assert (choice.index, choice.code) == (url, 0)
    assert "MESHNODE_TORCH_INDEX_URL" in choice.said
    assert _probed(tmp_path) == []


def test_an_unknown_build_is_refused(tmp_path: Path) -> None:
    choice = _choose(tmp_path, env={"MESHNODE_TORCH": "rocm"})
    assert (choice.index, choice.code) == ("", 2)
    assert "cpu or cuda" in choice.said


def test_macos_takes_pypi_whose_wheels_are_the_cpu_build(tmp_path: Path) -> None:
    choice = _choose(tmp_path, uname="Darwin")
    assert (choice.index, choice.code) == ("", 0)
    assert "macOS" in choice.said
    assert _probed(tmp_path) == []


def test_setup_installs_the_pinned_torch_from_the_chosen_index() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "torch_index=$(bash scripts/torch_index.sh)" in setup
    assert 'torch_args+=(--index-url "$torch_index")' in setup
    assert setup.index("torch_args[@]") < setup.index('-e ".[test,torch]"'), "torch first, on its own"

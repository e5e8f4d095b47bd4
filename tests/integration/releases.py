"""Another commit of meshnode, installed apart from this checkout: agents of an earlier release.

An agent started with the returned folder first on ``PYTHONPATH`` imports that commit's meshnode,
and its workers, which inherit the environment, do too. Used by the upgrade tests and by the
benchmarks' before-and-after runs (``bench/baseline.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["REPOSITORY", "install_commit", "pythonpath_first"]

REPOSITORY = Path(__file__).resolve().parents[2]


def install_commit(commit: str, root: Path, name: str) -> Path:
    """The meshnode of `commit` in ``root/<name>-site`` (about 10 s: an archive of this repository,
    a wheel build, no dependencies, no downloads)."""
    source, site = root / f"{name}-source", root / f"{name}-site"
    source.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPOSITORY), "archive", "--format=tar", commit], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(source)],
        check=True, timeout=300,
    )  # fmt: skip
    return site


def pythonpath_first(site: Path) -> str:
    """A ``PYTHONPATH`` with `site` before what this process's environment has."""
    return os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
